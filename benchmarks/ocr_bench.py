#!/usr/bin/env python3
"""OCR accuracy and speed: RapidOCR (what rag uses) against Debian's tesseract, side by side.

A set made here from known text: English and Chinese pages rendered at 150 dpi (12 pt type)
and 300 dpi, clean, slightly rotated (1.5 degrees) and noisy (Gaussian noise and a blur, as a
scan or a fax), each page read as an image and, for the clean and noisy English pages, as a
scanned PDF through rag's own PDF path (PDFium renders the page, then OCR). The character error
rate is the edit distance between the known text and what was read, over the known text's
length, after runs of whitespace are made one space (and, in Chinese, removed).

With --pages N it also indexes an N-page scanned PDF with `rag index --json` (its progress on
standard error), and reports pages/s and the process's peak memory.

    python3 benchmarks/ocr_bench.py                 # the set, appended to docs/benchmarks.md
    python3 benchmarks/ocr_bench.py --pages 200     # and the 200-page scan
Needs fonts-dejavu (English) and fonts-wqy-microhei (Chinese); tesseract rows need
tesseract-ocr, tesseract-ocr-eng and tesseract-ocr-chi-sim (all Debian packages).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmark_record import PEAK_MEMORY, append_section, machine

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "tests"))

LATIN_FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
CJK_FONT = "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"

ENGLISH = [
    "Approval certificate QA-20417 was issued to the Lisbon office on 12 March 2024.",
    "The certificate covers fire safety, first aid and the evacuation plan of floors 1 to 6.",
    "Total contract value: EUR 1,284,500.00, payable in four instalments of EUR 321,125.00.",
    "Signed by Maria O'Neill, Head of Compliance, and by the landlord, Tagus Estates Lda.",
    "Notice period: 90 days. Renewal: automatic for 5 years unless cancelled in writing.",
    "Parking: 12 spaces on level -2; badges are issued by facilities (extension 4410).",
    "Invoices go to ap@example.com with the purchase order number, e.g. PO-2024-00815.",
    "The building was inspected on 3 April 2024; the next inspection is due in April 2025.",
]
CHINESE = [
    "上海办公室的消防验收证书编号为 SH-88231，于2024年3月12日签发。",
    "证书覆盖一至六楼的消防安全、急救设备和疏散方案。",
    "合同总金额为人民币一百二十八万元，分四期支付。",
    "通知期为九十天，合同到期后自动续签五年，除非书面取消。",
    "停车位共十二个，位于地下二层，门禁卡由行政部发放。",
    "发票请寄至财务部，并注明采购订单号。",
]


def render(lines: list[str], font: str, dpi: int, variant: str, seed: int) -> Any:
    """A letter-size page of `lines` at `dpi` (12 pt type), as it would come off a scanner."""
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    scale = dpi / 150
    size = (int(1275 * scale), int(1650 * scale))
    page = Image.new("L", size, 255)
    draw = ImageDraw.Draw(page)
    face = ImageFont.truetype(font, int(25 * scale))
    for number, line in enumerate(lines):
        draw.text((int(100 * scale), int((120 + number * 48) * scale)), line, font=face, fill=0)
    if variant == "rotated":
        page = page.rotate(1.5, resample=Image.Resampling.BICUBIC, expand=False, fillcolor=255)
    elif variant == "noisy":
        rng = np.random.default_rng(seed)
        pixels = np.asarray(page.filter(ImageFilter.GaussianBlur(0.8)), dtype=np.float32)
        pixels += rng.normal(0, 28, pixels.shape)
        speckles = rng.random(pixels.shape) < 0.002
        pixels[speckles] = 0
        page = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    return page


def normalized(text: str, chinese: bool) -> str:
    text = " ".join(text.split())
    return text.replace(" ", "") if chinese else text


def edit_distance(a: str, b: str) -> int:
    previous = np.arange(len(b) + 1)
    for i, ca in enumerate(a, start=1):
        current = np.empty_like(previous)
        current[0] = i
        same = np.array([ca == cb for cb in b], dtype=bool)
        substitution = previous[:-1] + ~same
        deletion = previous[1:] + 1
        best = np.minimum(substitution, deletion)
        for j in range(1, len(b) + 1):  # insertions depend on the cell to the left
            current[j] = min(best[j - 1], current[j - 1] + 1)
        previous = current
    return int(previous[-1])


def rapidocr_reader() -> Any:
    from rag.config import Settings
    from rag.ingest.ocr import OcrReader

    reader = OcrReader(Settings.load(environ={}).ingest)
    return lambda image, chinese: reader.read(np.asarray(image)).text


def tesseract_reader() -> Any:
    if shutil.which("tesseract") is None:
        return None

    def read(image: Any, chinese: bool) -> str:
        with tempfile.NamedTemporaryFile(suffix=".png") as f:
            image.save(f.name)
            out = subprocess.run(["tesseract", f.name, "stdout", "-l", "chi_sim" if chinese else "eng", "--psm", "6"],
                                 capture_output=True, text=True, check=True)
        return out.stdout
    return read


def through_pdf(image: Any, workdir: Path) -> str:
    """The page as a scanned PDF, read the way `rag index` reads one."""
    from rag.config import Settings
    from rag.ingest import SourceFile, load_source

    path = workdir / "page.pdf"
    image.save(path, resolution=150)
    (doc,) = load_source(SourceFile(path, "page.pdf"), Settings.load(environ={}).ingest)
    return doc.text


def accuracy_rows(engines: dict[str, Any], workdir: Path) -> list[dict[str, Any]]:
    cases = [("English", ENGLISH, LATIN_FONT, False)]
    if Path(CJK_FONT).exists():
        cases.append(("Chinese", CHINESE, CJK_FONT, True))
    else:
        print(f"no {CJK_FONT}: Chinese pages skipped (apt install fonts-wqy-microhei)", file=sys.stderr)
    rows = []
    for language, lines, font, chinese in cases:
        for dpi, variant in ((150, "clean"), (150, "rotated"), (150, "noisy"), (300, "clean")):
            image = render(lines, font, dpi, variant, seed=dpi)
            reference = normalized("\n".join(lines), chinese)
            for name, read in engines.items():
                started = time.perf_counter()
                text = read(image, chinese)
                seconds = time.perf_counter() - started
                cer = edit_distance(reference, normalized(text, chinese)) / len(reference)
                rows.append({"language": language, "page": f"{dpi} dpi, {variant}", "engine": name, "input": "image",
                             "cer": cer, "seconds": seconds})
                print(f"{language:8} {dpi} dpi {variant:8} {name:10} image  CER {cer:6.2%}  {seconds:5.2f} s", file=sys.stderr)
            if not chinese and dpi == 150 and variant in ("clean", "noisy"):
                started = time.perf_counter()
                text = through_pdf(image, workdir)
                seconds = time.perf_counter() - started
                cer = edit_distance(reference, normalized(text, chinese)) / len(reference)
                rows.append({"language": language, "page": f"{dpi} dpi, {variant}", "engine": "RapidOCR (rag)",
                             "input": "scanned PDF", "cer": cer, "seconds": seconds})
                print(f"{language:8} {dpi} dpi {variant:8} rag PDF    CER {cer:6.2%}  {seconds:5.2f} s", file=sys.stderr)
    return rows


def scan_throughput(pages: int, workdir: Path) -> dict[str, Any]:
    """`rag index --json` over an N-page scanned PDF, in a process of its own."""
    from PIL import Image

    rng = random.Random(7)
    folder = workdir / "scans"
    folder.mkdir()
    images = []
    for number in range(pages):
        lines = rng.sample(ENGLISH, 6)
        images.append(render([f"Page {number + 1} of the scanned binder."] + lines, LATIN_FONT, 150, "clean", number))
    path = folder / "binder.pdf"
    images[0].save(path, save_all=True, append_images=images[1:], resolution=150)
    del images
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("RAG_")}, "RAG_INDEX_PATH": str(workdir / "index")}
    peak_file = workdir / "peak-kb"
    # `rag index` as the command line runs it, its own peak memory written down as it exits.
    launcher = PEAK_MEMORY + (
        "import atexit, runpy, sys\npeak = sys.argv[2]\n"
        "atexit.register(lambda: open(peak, 'w').write(str(peak_kb())))\n"
        "sys.argv = ['rag', 'index', sys.argv[1], '--json']\nrunpy.run_module('rag', run_name='__main__')\n")
    started = time.perf_counter()
    process = subprocess.run([sys.executable, "-c", launcher, str(folder), str(peak_file)], capture_output=True,
                             text=True, env=env, cwd=REPO_ROOT)
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"rag index failed: {process.stderr[-2000:]}")
    report = json.loads(process.stdout)
    peak_mb = int(peak_file.read_text()) / 1024
    progress_lines = [line for line in process.stderr.splitlines() if "OCR'd" in line]
    return {"pages": report["ocr"]["pages"], "seconds": seconds, "ocr_seconds": report["ocr"]["seconds"],
            "pages_per_s": report["ocr"]["pages"] / seconds, "peak_mb": peak_mb, "chunks": report["chunks"],
            "pdf_mb": path.stat().st_size / 2**20, "progress_lines": len(progress_lines),
            "last_progress": progress_lines[-1].strip() if progress_lines else ""}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=0, help="also index a scanned PDF of this many pages")
    parser.add_argument("--no-record", action="store_true", help="do not append to docs/benchmarks.md")
    args = parser.parse_args()
    started = dt.datetime.now(dt.timezone.utc)
    engines = {"RapidOCR": rapidocr_reader()}
    tesseract = tesseract_reader()
    if tesseract is not None:
        engines["tesseract"] = tesseract
    else:
        print("no tesseract on PATH: its rows are skipped (apt install tesseract-ocr tesseract-ocr-chi-sim)",
              file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="ocr-bench-") as tmp:
        rows = accuracy_rows(engines, Path(tmp))
        scan = scan_throughput(args.pages, Path(tmp)) if args.pages else None
    lines = ["| language | page | engine | read as | CER | seconds/page |", "|---|---|---|---|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['language']} | {row['page']} | {row['engine']} | {row['input']} | "
                     f"{row['cer']:.2%} | {row['seconds']:.2f} |")
    summary = []
    for name in [*engines, "RapidOCR (rag)"]:
        mine = [r for r in rows if r["engine"] == name]
        if mine:
            summary.append(f"{name}: {len(mine)} pages, {sum(r['seconds'] for r in mine) / len(mine):.2f} s a page "
                           f"({len(mine) / sum(r['seconds'] for r in mine):.2f} pages/s)")
    body = "\n".join(lines) + "\n\n" + "\n".join(f"- {s}" for s in summary)
    if scan:
        body += (f"\n- `rag index --json` over a {scan['pages']}-page scanned PDF ({scan['pdf_mb']:.1f} MB): "
                 f"{scan['seconds']:.0f} s, {scan['pages_per_s']:.2f} pages/s, OCR {scan['ocr_seconds']:.0f} s over "
                 f"its threads, {scan['chunks']} chunks, peak memory {scan['peak_mb']:.0f} MB; progress lines "
                 f"naming OCR'd pages: {scan['progress_lines']} (last: `{scan['last_progress']}`)")
    print(body)
    if not args.no_record:
        versions = subprocess.run(["tesseract", "--version"], capture_output=True, text=True).stdout.split("\n")[0] \
            if tesseract else "no tesseract"
        append_section("OCR: accuracy and speed", started, [
            f"Machine: {machine()}; RapidOCR {_version('rapidocr-onnxruntime')} (PP-OCRv4, ONNX Runtime "
            f"{_version('onnxruntime')}) as rag runs it; {versions} (--psm 6); pages made from known text "
            "(DejaVu Sans, WenQuanYi Micro Hei), letter size, 12 pt",
            "Reproduce: `python3 benchmarks/ocr_bench.py" + (f" --pages {args.pages}`" if args.pages else "`")], body)
    return 0


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


if __name__ == "__main__":
    sys.exit(main())
