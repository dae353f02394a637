#!/usr/bin/env python3
"""The import graph of `rag/`, made from the code: which room (package, or top-level module)
imports which, lazy imports included, as a Mermaid diagram.

    python3 scripts/import_graph.py            # print the diagram
    python3 scripts/import_graph.py --write    # put it into docs/architecture.md, between its markers

tests/test_architecture.py checks that the diagram in docs/architecture.md is this one, and that
every room imports only the rooms docs/architecture.md allows it.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "rag"
DOC = ROOT / "docs" / "architecture.md"
BEGIN, END = "<!-- import graph: begin -->", "<!-- import graph: end -->"
# What every room may import; left out of the picture, which it would only clutter.
FOUNDATION = {"errors", "names", "records", "config", "timing", "idsets", "filters", "mapped_files"}


def room(module: str) -> str:
    """rag.index.store -> index; rag.engine -> engine."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "rag"


def module_names() -> set[str]:
    return {".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            for path in PACKAGE.rglob("*.py")}


def imports(path: Path, known: set[str] | None = None) -> set[str]:
    """The rag modules a file imports, at its top or inside functions; `from package import
    module` counts as importing that module (given the `known` module names)."""
    known = known if known is not None else module_names()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("rag"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against this module's package
                base = package.split(".")[: -node.level]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            if not name.startswith("rag"):
                continue
            for alias in node.names:
                found.add(f"{name}.{alias.name}" if f"{name}.{alias.name}" in known else name)
    return found


def room_edges() -> dict[str, set[str]]:
    """room -> the other rooms it imports."""
    edges: dict[str, set[str]] = {}
    known = module_names()
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        source = room(module.removesuffix(".__init__"))
        targets = {room(name) for name in imports(path, known)} - {source, "rag"}
        edges.setdefault(source, set()).update(targets)
    edges.pop("__main__", None)
    edges.pop("rag", None)  # rag/__init__.py: the package's public names, re-exported
    return edges


def mermaid(edges: dict[str, set[str]]) -> str:
    """The rooms and their imports, the foundation and the package's own __init__ left out."""
    lines = ["```mermaid", "flowchart TD"]
    for source in sorted(set(edges) - FOUNDATION):
        for target in sorted(edges[source] - FOUNDATION):
            lines.append(f"    {source} --> {target}")
    lines.append("```")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"update {DOC.relative_to(ROOT)}")
    args = parser.parse_args()
    diagram = mermaid(room_edges())
    if not args.write:
        print(diagram)
        return 0
    text = DOC.read_text(encoding="utf-8")
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    DOC.write_text(text[:start] + "\n" + diagram + "\n" + text[end:], encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
