"""FAISS, imported once with what rag needs of it process-wide: OpenMP's team size and C-level
prints kept out of stdout."""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Iterator
from typing import Any

from rag.errors import RagError

# A search of fewer queries than this runs on its own thread alone. An OpenMP team gains nothing
# on one query, and beside a busy process its barrier waits out a descheduled thread: a SciFact
# search took 21 ms instead of 0.9 next to one CPU-bound process. OpenMP keeps the thread count
# per thread, so this touches neither concurrent batch searches nor index builds; it is restored
# after the search, because torch reads the same setting (the generator that answered after a
# search on the same thread ran on one core, at half the speed).
SMALL_SEARCH = 16
_TEAM_THREADS = 0  # OpenMP's own default, read when faiss is first imported


def load_faiss() -> Any:
    global _TEAM_THREADS
    try:
        import faiss
    except ImportError:
        raise RagError("FAISS is not installed: pip install 'rag[cpu]' (or 'rag[gpu]' on a CUDA machine)") from None
    if _TEAM_THREADS == 0:
        _TEAM_THREADS = faiss.omp_get_max_threads()
    return faiss


def team_threads() -> int:
    """OpenMP's default thread count, as it was when faiss was first imported."""
    load_faiss()
    return _TEAM_THREADS


@contextlib.contextmanager
def prints_to_stderr() -> Iterator[None]:
    """FAISS's on-disk lists printf a line to C stdout each time their file grows; sent to
    stderr instead, so they never mix into what rag prints there (`--json` output). Process-wide
    while it lasts: a server's other threads printing meanwhile go to stderr too."""
    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    libc.fflush(None)
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        libc.fflush(None)
        os.dup2(saved, 1)
        os.close(saved)


def gpu_count() -> int:
    """GPUs faiss can use: 0 with faiss-cpu, whose module has no GPU functions at all."""
    faiss = load_faiss()
    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get else 0
