#!/usr/bin/env python3
"""Reading slide decks and spreadsheets: rag's loaders on large files, and calamine against
openpyxl (the other common .xlsx reader) on the same workbook, side by side.

- a 100,000-row workbook (5 columns: ids, names, amounts, dates, flags): rag's loader (python-
  calamine) whole, and the bare readers: calamine's rows, and openpyxl's in read-only mode;
- a 500-slide deck (a title, three lines and a 6-row table each) through rag's loader.
Each read runs in a fresh process, which reports its seconds and how much its peak memory grew.

    python3 benchmarks/formats_bench.py          # appended to docs/benchmarks.md
    pip install openpyxl                          # for its row (skipped without it)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmark_record import PEAK_MEMORY, append_section, machine

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "tests"))

READERS = {
    "rag loader (calamine)": """
from rag.config import Settings
from rag.ingest import SourceFile, load_source
(doc,) = load_source(SourceFile(PATH, PATH.name), Settings.load(environ={}).ingest)
count = sum(len(s.table_rows) or 1 for s in doc.sections)
""",
    "calamine rows": """
from python_calamine import CalamineWorkbook
book = CalamineWorkbook.from_path(str(PATH))
count = sum(1 for name in book.sheet_names for _ in book.get_sheet_by_name(name).iter_rows())
""",
    "openpyxl rows (read-only)": """
import openpyxl
book = openpyxl.load_workbook(PATH, read_only=True, data_only=True)
count = sum(1 for sheet in book.worksheets for _ in sheet.iter_rows(values_only=True))
""",
}
# Each read in a child of its own, its peak memory measured from the start of the read.
TIMED = PEAK_MEMORY + """
import sys, time, json
from pathlib import Path
PATH = Path(sys.argv[1])
before = peak_kb()
started = time.perf_counter()
{code}
print(json.dumps({{"seconds": time.perf_counter() - started, "count": count, "grown_mb": (peak_kb() - before) / 1024}}))
"""


def timed(code: str, path: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", TIMED.format(code=code), str(path)], capture_output=True, text=True,
                         cwd=REPO_ROOT)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1]}
    return json.loads(out.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--slides", type=int, default=500)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    started = dt.datetime.now(dt.timezone.utc)
    from office_files import make_pptx, make_xlsx

    rows = []
    with tempfile.TemporaryDirectory(prefix="formats-bench-") as tmp:
        book = make_xlsx(Path(tmp) / "ledger.xlsx", {"Ledger": [["Id", "Customer", "Amount", "Date", "Paid"]] + [
            [i, f"customer {i % 977}", round(i * 1.37, 2), dt.date(2024, 1, 1) + dt.timedelta(days=i % 365), i % 3 == 0]
            for i in range(args.rows)]})
        for name, code in READERS.items():
            result = timed(code, book)
            rows.append((f"{args.rows:,}-row .xlsx ({book.stat().st_size / 2**20:.1f} MB)", name, result))
            print(name, result, file=sys.stderr)
        deck = make_pptx(Path(tmp) / "deck.pptx", [
            {"title": f"Slide {n}", "body": [f"Point {n}.1", f"Point {n}.2", f"Point {n}.3"],
             "table": [["Item", "Value"]] + [[f"item {n}-{r}", str(r * n)] for r in range(5)]}
            for n in range(1, args.slides + 1)])
        result = timed(READERS["rag loader (calamine)"], deck)
        rows.append((f"{args.slides}-slide .pptx ({deck.stat().st_size / 2**20:.1f} MB)", "rag loader (python-pptx)", result))
        print("deck", result, file=sys.stderr)
    lines = ["| file | reader | seconds | rows or sections | peak memory grew by |", "|---|---|---:|---:|---:|"]
    for file, name, result in rows:
        if "error" in result:
            lines.append(f"| {file} | {name} | not run: {result['error']} | | |")
        else:
            lines.append(f"| {file} | {name} | {result['seconds']:.2f} | {result['count']:,} | {result['grown_mb']:.0f} MB |")
    body = "\n".join(lines)
    print(body)
    if not args.no_record:
        append_section("Slides and spreadsheets: reading large files", started, [
            f"Machine: {machine()}; each read in a fresh process (imports included in its seconds)",
            "Reproduce: `python3 benchmarks/formats_bench.py` (openpyxl's row: `pip install openpyxl`)"], body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
