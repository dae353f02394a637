"""The BM25 arithmetic both readers share: parameter checks, idf per method and posting weights.

Pure functions over arrays, no I/O. Only the methods whose score is a sum over the query terms a
chunk contains are offered (lucene, robertson, atire): a score above zero then means "shares a
term with the query", so a filtered-out or unrelated chunk is never returned. BM25L and BM25+
give every chunk a score.

The weights are computed in float32, in one fixed order of operations: a weight stored in a
format 2 score matrix and the weight `SegmentedBM25` computes at search time from the same N,
avgdl, df and tf are the same bits.
"""

from __future__ import annotations

import numpy as np

from rag.errors import ConfigError

METHODS = ("lucene", "robertson", "atire")


def check_parameters(method: str, k1: float, b: float) -> None:
    """Refuse a BM25 variant or parameter that would score wrongly, naming it."""
    if method not in METHODS:
        raise ConfigError(f"BM25 method must be one of {', '.join(METHODS)}, not {method!r}")
    if not k1 > 0:
        raise ConfigError(f"BM25 k1 must be above 0, not {k1}")
    if not 0 <= b <= 1:
        raise ConfigError(f"BM25 b must be between 0 and 1, not {b}")


def idf(method: str, n_docs: int, df: np.ndarray) -> np.ndarray:
    """The inverse document frequency (float64) of terms that `df` (float64) of `n_docs` chunks hold."""
    if method == "lucene":
        return np.log1p((n_docs - df + 0.5) / (df + 0.5))
    if method == "robertson":
        return np.log(np.maximum(1.0, (n_docs - df + 0.5) / (df + 0.5)))
    return np.log(n_docs / df)


def length_norm(lengths: np.ndarray, k1: float, b: float, avgdl: float) -> np.ndarray:
    """k1 * (1 - b + b * length / avgdl) per chunk: computed in float64, kept as float32."""
    return (k1 * (1 - b + b * lengths / avgdl)).astype(np.float32)


def weights(tf: np.ndarray, norm: np.ndarray, term_idf: np.ndarray | np.floating, method: str,
            k1: float) -> np.ndarray:
    """BM25 weight of each posting, in float32: idf * tf * (k1 + 1 for atire) / (tf + norm).

    `norm` is the float32 length norm at each posting's chunk, a new array that becomes the
    denominator; `term_idf` is float32, per posting or one for all. `tf` is never written: it may
    be a mapped file.
    """
    weight = tf.astype(np.float32, copy=True)
    norm += weight
    if method == "atire":
        weight *= k1 + 1
    np.divide(weight, norm, out=weight)
    weight *= term_idf
    return weight
