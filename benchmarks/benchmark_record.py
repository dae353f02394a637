"""What every benchmark appends to docs/benchmarks.md: a dated section naming the machine."""

from __future__ import annotations

import datetime as dt
import os
import platform
from pathlib import Path

RECORD_FILE = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
                platform.processor() or "unknown CPU")


# The CPU features the embedder's and the generator's speed depend on (bf16 and AVX-512 or not).
FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def cpu_flags() -> list[str]:
    """Which of FLAGS this CPU has (`grep -m1 flags /proc/cpuinfo`)."""
    try:
        line = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return []
    present = set(line.split(":", 1)[1].split())
    return [flag for flag in FLAGS if flag in present]


def machine() -> str:
    return f"{cpu_name()}, {os.cpu_count()} cores, flags: {' '.join(cpu_flags()) or 'none of ' + ' '.join(FLAGS)}"


def append_section(title: str, started: dt.datetime, bullets: list[str], body: str) -> None:
    """`## title (date UTC)`, the bullets (machine, settings, the command that reproduces it), the body."""
    RECORD_FILE.parent.mkdir(parents=True, exist_ok=True)
    lines = "".join(f"- {b}\n" for b in bullets)
    with RECORD_FILE.open("a", encoding="utf-8") as fh:
        fh.write(f"\n## {title} ({started:%Y-%m-%d %H:%M} UTC)\n\n{lines}\n{body}\n")
