"""Pages of memory-mapped model files handed back to the page cache once a runtime has copied
what it needs out of them, so that they stop counting in a server's resident memory."""

from __future__ import annotations

import ctypes
from pathlib import Path

MADV_DONTNEED = 4


def release_mapped_weights(folder: Path) -> int:
    """Hands back to the page cache the pages of this folder's files that this process has
    mapped (an IR's weights, which OpenVINO's CPU plugin has packed into its own memory by the
    end of the first inference and no longer reads in full). The mapping stays valid: a page read
    again is read from the file. Returns the bytes of mappings advised; 0 where /proc or
    madvise is missing."""
    try:
        maps = Path("/proc/self/maps").read_text().splitlines()
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return 0
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    prefix, released = str(folder.resolve()) + "/", 0
    for line in maps:
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].startswith(prefix) and "w" not in fields[1]:
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if madvise(start, end - start, MADV_DONTNEED) == 0:
                released += end - start
    return released
