"""Reading the files both BM25 formats store: JSON, one-dimensional .npy arrays, and the checks of
the term-by-chunk (CSC) arrays they have in common. A bad array would give wrong hits silently, so
every read is checked and refused with `IndexCorruptError`, naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from rag.errors import IndexCorruptError


def read_json(path: Path, kind: type) -> Any:
    """The JSON value in `path`, which must be a `kind` (dict or list)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IndexCorruptError(f"{path} is missing; rebuild the index") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IndexCorruptError(f"{path} cannot be read ({exc}); rebuild the index") from None
    if not isinstance(value, kind):
        raise IndexCorruptError(f"{path} does not hold a JSON {kind.__name__}; rebuild the index")
    return value


def read_array(path: Path, dtype: type, mmap_mode: str | None) -> np.ndarray:
    """The `dtype` vector in `path`; mapped with `mmap_mode` "r", read whole with None."""
    try:
        values = np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except FileNotFoundError:
        raise IndexCorruptError(f"{path} is missing; rebuild the index") from None
    except (OSError, ValueError, EOFError) as exc:
        raise IndexCorruptError(f"{path} cannot be read ({exc}); rebuild the index") from None
    if values.dtype != dtype or values.ndim != 1:
        raise IndexCorruptError(
            f"{path} holds {values.dtype} of shape {values.shape}, not a {np.dtype(dtype)} vector; rebuild the index"
        )
    return values


def check_columns(meta: dict[str, Any], terms: list[Any], vocab: dict[str, int], ids: np.ndarray,
                  values: np.ndarray, rows: np.ndarray, indptr: np.ndarray, value_name: str) -> str | None:
    """What is inconsistent between the files of one term-by-chunk matrix, or None.

    `values[indptr[t]:indptr[t + 1]]` are term t's entries at chunk rows `rows[...]`; `meta` records
    the sizes; `value_name` names one entry in the message ("a score", "a term count").
    """
    if (meta.get("chunks"), meta.get("terms"), meta.get("postings")) != (len(ids), len(terms), len(values)):
        return "the array sizes differ from the ones recorded"
    if len(vocab) != len(terms) or not all(isinstance(t, str) for t in terms):
        return "the vocabulary has repeated or non-text terms"
    if len(rows) != len(values) or len(indptr) != len(terms) + 1:
        return "the score arrays disagree in length"
    if indptr[0] != 0 or indptr[-1] != len(values) or np.any(np.diff(indptr) < 0):
        return "the term offsets are out of order"
    if len(rows) and (rows.min() < 0 or rows.max() >= len(ids)):
        return "a posting points past the last chunk"
    if not np.all(values >= 0):
        return f"{value_name} is negative or not a number"
    if len(np.unique(ids)) != len(ids):
        return "a chunk id appears twice"
    return None
