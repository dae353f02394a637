"""The layout docs/architecture.md describes is the code's: each room imports only what its row
allows (lazy imports included), no module imports itself through others, and the import graph
drawn there is the one the code makes."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"


def _script():
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["import_graph"] = module
    spec.loader.exec_module(module)
    return module


graph = _script()


def _allowed() -> dict[str, set[str]]:
    text = DOC.read_text(encoding="utf-8")
    table = text[text.index("<!-- rooms: begin -->"):text.index("<!-- rooms: end -->")]
    rows = [line.split("|")[1:-1] for line in table.splitlines() if line.startswith("| `")]
    return {re.sub(r"`", "", room).strip(): set(re.findall(r"`(\w+)`", may)) for room, _, may in rows}


def test_each_room_imports_only_what_docs_architecture_allows():
    allowed = _allowed()
    edges = graph.room_edges()
    assert set(edges) - graph.FOUNDATION <= set(allowed), f"rooms missing from docs/architecture.md: " \
                                                          f"{set(edges) - graph.FOUNDATION - set(allowed)}"
    for room, targets in edges.items():
        if room in graph.FOUNDATION:
            assert targets <= graph.FOUNDATION, f"the foundation room {room} imports {targets - graph.FOUNDATION}"
            continue
        extra = targets - graph.FOUNDATION - allowed[room]
        assert not extra, f"{room} imports {sorted(extra)}, which docs/architecture.md does not allow it"


def test_no_module_of_rag_imports_itself_through_others():
    known = graph.module_names()
    modules: dict[str, set[str]] = {}
    for path in sorted(graph.PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = graph.imports(path, known)
    # An import of a package is an import of its __init__ (which a module of it may not import).
    edges = {m: {t for t in targets if t in modules and t != m} for m, targets in modules.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for target in sorted(edges[module]):
            if state.get(target) == 1:
                cycle = stack[stack.index(target):] + [target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        stack.pop()
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module)


def test_the_import_graph_in_the_docs_is_the_codes():
    text = DOC.read_text(encoding="utf-8")
    drawn = text[text.index(graph.BEGIN) + len(graph.BEGIN):text.index(graph.END)].strip()
    assert drawn == graph.mermaid(graph.room_edges()), "run python3 scripts/import_graph.py --write"
