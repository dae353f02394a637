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
    """The CPU, its cores and flags; under scripts/emulate_avx2.sh, which hides the AVX-512
    flags, also the flags it really has, so that an emulated record is never read as a real one."""
    described = f"{cpu_name()}, {os.cpu_count()} cores, flags: {' '.join(cpu_flags()) or 'none of ' + ' '.join(FLAGS)}"
    real = os.environ.get("RAG_EMULATED_AVX2_ON")
    if real is not None:
        kept = [flag for flag in FLAGS if flag in real.split()]
        described += f" (AVX2 EMULATED by scripts/emulate_avx2.sh on a CPU with flags: {' '.join(kept)})"
    return described


def append_section(title: str, started: dt.datetime, bullets: list[str], body: str) -> None:
    """`## title (date UTC)`, the bullets (machine, settings, the command that reproduces it), the body."""
    RECORD_FILE.parent.mkdir(parents=True, exist_ok=True)
    if "RAG_EMULATED_AVX2_ON" in os.environ:  # the command that reproduces it runs emulated too
        bullets = [b.replace("Reproduce: `", "Reproduce: `unshare -m scripts/emulate_avx2.sh ", 1) for b in bullets]
    lines = "".join(f"- {b}\n" for b in bullets)
    with RECORD_FILE.open("a", encoding="utf-8") as fh:
        fh.write(f"\n## {title} ({started:%Y-%m-%d %H:%M} UTC)\n\n{lines}\n{body}\n")


# Python a measured child runs first: Linux keeps a child's peak memory from its parent across
# exec, so it is reset here, and `peak_kb()` is the child's own peak since (VmHWM, in KB).
PEAK_MEMORY = """
def peak_kb():
    return int(next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1])
open("/proc/self/clear_refs", "w").write("5")
"""
