"""Inverted lists of IVF indexes, moved as stored: codes another process encoded, lists moved to
a file that is mapped rather than read (FAISS OnDiskInvertedLists), merges and shards that copy
codes instead of decoding and encoding every vector again.

Functions of FAISS CPU indexes; rag.index.vectors.VectorIndex offers them as its methods.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from rag.idsets import held_in
from rag.index.faisslib import load_faiss, prints_to_stderr


def _claim_written_space(on_disk: Any) -> None:
    """Mark the space FAISS just laid lists out in as used. Growing the file from empty records
    all of it as one free slot, even where merge_from_multiple (or set_all_lists_sizes) placed
    lists: the next list to grow would be given offset 0 and overwrite the first lists."""
    if on_disk.totsize:
        on_disk.allocate_slot(on_disk.totsize)


def on_disk(index: Any) -> bool:
    """Whether the IVF index's inverted lists live in a mapped file."""
    faiss = load_faiss()
    ivf = faiss.try_extract_index_ivf(index)
    return ivf is not None and isinstance(faiss.downcast_InvertedLists(ivf.invlists), faiss.OnDiskInvertedLists)


def list_bytes_per_vector(index: Any) -> int:
    """What a vector takes in an IVF index's inverted lists (its code and id); 0 for other types."""
    ivf = load_faiss().try_extract_index_ivf(index)
    return int(ivf.code_size) + 8 if ivf is not None else 0


def rebuild_id_map(index: Any, ivf: Any) -> None:
    """After codes were moved into the IVF lists directly: the id map rebuilt from them, and the
    count of a pre-transform (OPQ) around the IVF, which keeps its own."""
    ivf.set_direct_map_type(load_faiss().DirectMap.Hashtable)
    if index is not ivf:
        index.ntotal = ivf.ntotal


def add_codes(index: Any, codes: np.ndarray, ids: np.ndarray) -> None:
    """Store codes `sa_encode` made with this index's training: exactly what adding the vectors
    would store, without assigning lists and encoding (the costly part of an IVF add)."""
    ivf = load_faiss().extract_index_ivf(index)
    with prints_to_stderr() if on_disk(index) else _nothing():
        ivf.add_sa_codes(np.ascontiguousarray(codes, dtype=np.uint8), np.ascontiguousarray(ids, dtype=np.int64))
    if index is not ivf:
        index.ntotal = ivf.ntotal  # a pre-transform (OPQ) around the IVF keeps its own count


def move_lists_to_disk(index: Any, path: Path) -> None:
    """Move the IVF index's inverted lists into the file `path`, mapped from then on: later adds
    grow the file, not memory."""
    faiss = load_faiss()
    ivf = faiss.extract_index_ivf(index)
    ivf.set_direct_map_type(faiss.DirectMap.NoMap)
    disk = faiss.OnDiskInvertedLists(ivf.nlist, ivf.code_size, str(path))
    lists = faiss.InvertedListsPtrVector()
    lists.push_back(ivf.invlists)
    with prints_to_stderr():
        disk.merge_from_multiple(lists.data(), lists.size(), False, False)
    _claim_written_space(disk)
    ivf.replace_invlists(disk, True)
    disk.this.disown()  # the index owns it now
    rebuild_id_map(index, ivf)


def _live_ids(invlists: Any, list_no: int, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A list's ids, and which of them are kept."""
    faiss = load_faiss()
    pointer = invlists.get_ids(list_no)
    ids = faiss.rev_swig_ptr(pointer, invlists.list_size(list_no)).copy()
    invlists.release_ids(list_no, pointer)
    return ids, held_in(ids, keep)


def _live_entries(invlists: Any, list_no: int, keep: np.ndarray, code_size: int) -> tuple[np.ndarray, np.ndarray]:
    faiss = load_faiss()
    ids, live = _live_ids(invlists, list_no, keep)
    if not live.any():
        return ids[:0], np.zeros(0, np.uint8)
    pointer = invlists.get_codes(list_no)
    codes = faiss.rev_swig_ptr(pointer, len(ids) * code_size).reshape(len(ids), code_size)[live].ravel()
    invlists.release_codes(list_no, pointer)
    return ids[live], codes


def _laid_out_file(sources: list[Any], keep: np.ndarray, nlist: int, code_size: int, path: Path) -> Any:
    """On-disk lists with each list's place reserved for what it will hold; None when nothing
    is live (no file, an empty index)."""
    faiss = load_faiss()
    sizes = np.array([sum(int(_live_ids(source, list_no, keep)[1].sum()) for source in sources)
                      for list_no in range(nlist)], dtype=np.uint64)
    if not sizes.any():
        return None
    disk = faiss.OnDiskInvertedLists(nlist, code_size, str(path))
    disk.set_all_lists_sizes(faiss.swig_ptr(sizes))
    with prints_to_stderr():
        disk.update_totsize(int(sizes.sum()) * (code_size + 8))  # creates and maps the file
    _claim_written_space(disk)
    return disk


def absorb(index: Any, others: list[Any], keep: np.ndarray, path: Path | None = None) -> None:
    """Move the vectors of `keep` (ids, ascending) from `others` (IVF indexes trained like this
    empty one) into it as they are stored, list by list, into memory or into inverted lists in
    the file `path`. Reads its sources (mapped, where they are on disk) without changing them,
    so a merge to disk needs the memory of one list."""
    faiss = load_faiss()
    target = faiss.extract_index_ivf(index)
    target.set_direct_map_type(faiss.DirectMap.NoMap)  # rebuilt once, at the end
    nlist, code_size = int(target.nlist), int(target.code_size)
    sources = [faiss.extract_index_ivf(other).invlists for other in others]
    disk = _laid_out_file(sources, keep, nlist, code_size, path) if path is not None else None
    for list_no in range(nlist):
        offset = 0
        for source in sources:
            ids, codes = _live_entries(source, list_no, keep, code_size)
            if not len(ids):
                continue
            if disk is not None:
                disk.update_entries(list_no, offset, len(ids), faiss.swig_ptr(ids), faiss.swig_ptr(codes))
                offset += len(ids)
            else:
                target.invlists.add_entries(list_no, len(ids), faiss.swig_ptr(ids), faiss.swig_ptr(codes))
    if disk is not None:
        target.replace_invlists(disk, True)
        disk.this.disown()  # the index owns it now
    target.ntotal = int(sum(target.invlists.list_size(n) for n in range(nlist)))
    rebuild_id_map(index, target)


def shard(index: Any, count: int, number: int) -> Any:
    """A copy of the IVF index holding the vectors whose id % count == number, their codes
    copied as stored under the same quantizer."""
    faiss = load_faiss()
    copy = faiss.clone_index(index)
    copy.reset()
    target = faiss.extract_index_ivf(copy)
    target.set_direct_map_type(faiss.DirectMap.NoMap)
    faiss.extract_index_ivf(index).copy_subset_to(target, faiss.InvertedLists.SUBSET_TYPE_ID_MOD, count, number)
    rebuild_id_map(copy, target)
    return copy


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
