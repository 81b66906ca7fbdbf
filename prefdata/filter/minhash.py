"""MinHash signatures and LSH banding in NumPy, with verified clusters.

- Shingles: word n-grams of normalised text, hashed to 64 bits (word hashes from polars,
  n-gram hashes combined in NumPy); a text shorter than ``ngram`` words is one shingle.
- Signatures: ``num_perm`` multiply-shift hash functions ``h_i(x) = (a_i x + b_i) mod
  2^64 >> 32`` (``a_i`` odd), minimum over the shingles: a ``(rows, num_perm)`` uint32
  matrix computed in chunks (no Python per row). Rows with no shingle get all-ones.
- LSH: ``bands x rows_per_band`` chosen like datasketch's ``_optimal_param`` (minimising
  the weighted false-positive and false-negative areas for the threshold); each band's
  rows hash to a 64-bit key; in every bucket each member is linked to the bucket's first
  member (earliest row).
- Verification: a link is kept when the signatures agree on at least ``threshold`` of
  their slots (the MinHash Jaccard estimate). Clusters are the connected components of
  the kept links (min-label propagation with pointer jumping); the earliest row of a
  cluster is its keeper, as in BigCode's and text-dedup's near-dedup.

>>> import pyarrow as pa
>>> texts = pa.array(["the cat sat on the mat today", "the cat sat on the mat today ok",
...                   "a completely different sentence here"])
>>> h, off = shingle_hashes(texts, ngram=1)
>>> sig = signatures(h, off, num_perm=64, seed=1)
>>> roots, sim = clusters(sig, threshold=0.7)
>>> roots.tolist()
[0, 0, 2]
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pyarrow as pa

from prefdata.arrow import offsets_of
from prefdata.filter.text import word_lists

_MIX = np.uint64(0x9E3779B97F4A7C15)
_EMPTY = np.uint32(0xFFFFFFFF)


def shingle_hashes(texts: pa.Array, ngram: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Flat uint64 shingle hashes and int64 row offsets of normalised ``texts``."""
    if ngram < 1:
        raise ValueError(f"ngram must be >= 1, not {ngram}")
    words = word_lists(texts)
    offsets = words.offsets.to_numpy().astype(np.int64)
    offsets -= offsets[0]
    flat = words.flatten()
    h = pl.Series(flat).hash(seed=0).to_numpy().astype(np.uint64)
    if ngram == 1:
        return h, offsets
    lengths = np.diff(offsets)
    total = len(h)
    pos = np.arange(total, dtype=np.int64) - np.repeat(offsets[:-1], lengths)
    row_len = np.repeat(lengths, lengths)
    starts = (pos + ngram <= row_len) | ((pos == 0) & (row_len < ngram))
    idx = np.flatnonzero(starts)
    g = np.zeros(len(idx), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(ngram):
            inside = pos[idx] + k < row_len[idx]
            term = h[np.minimum(idx + k, total - 1)] if total else np.zeros(0, np.uint64)
            g = np.where(inside, (g * _MIX) ^ term, g)
    counts = np.maximum(lengths - ngram + 1, 0) + ((lengths > 0) & (lengths < ngram))
    g_offsets = offsets_of(counts, np.int64)
    return g, g_offsets


def _perm_params(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
    return a, b


def signatures(
    hashes: np.ndarray,
    offsets: np.ndarray,
    num_perm: int = 128,
    seed: int = 1,
    chunk_tokens: int = 1 << 14,
) -> np.ndarray:
    """``(rows, num_perm)`` uint32 MinHash signatures of the shingle sets."""
    a, b = _perm_params(num_perm, seed)
    n = len(offsets) - 1
    out = np.full((n, num_perm), _EMPTY, dtype=np.uint32)
    lengths = np.diff(offsets)
    nonempty = np.flatnonzero(lengths > 0)
    if not len(nonempty):
        return out
    # chunks of whole rows with about chunk_tokens shingles each
    bounds = np.searchsorted(offsets[nonempty], np.arange(0, offsets[-1], chunk_tokens))
    bounds = np.unique(np.concatenate([bounds, [len(nonempty)]]))
    with np.errstate(over="ignore"):
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            rows = nonempty[lo:hi]
            start, stop = offsets[rows[0]], offsets[rows[-1] + 1]
            x = hashes[start:stop]
            v = ((x[:, None] * a[None, :] + b[None, :]) >> np.uint64(32)).astype(np.uint32)
            out[rows] = np.minimum.reduceat(v, offsets[rows] - start, axis=0)
    return out


def optimal_bands(
    threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5
) -> tuple[int, int]:
    """(bands, rows per band) minimising the weighted false positive and negative areas.

    >>> optimal_bands(0.8, 128)
    (9, 13)
    """
    xs = np.linspace(0.0, 1.0, 1001)

    def area(f: np.ndarray) -> float:
        return float(np.sum((f[1:] + f[:-1]) / 2 * np.diff(xs[: len(f)])))

    best, best_err = (1, num_perm), math.inf
    lo, hi = xs <= threshold, xs >= threshold
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            p = 1 - (1 - xs**r) ** b
            err = fp_weight * area(p[lo]) + fn_weight * _area_hi(1 - p[hi], xs[hi])
            if err < best_err:
                best, best_err = (b, r), err
    return best


def _area_hi(f: np.ndarray, x: np.ndarray) -> float:
    return float(np.sum((f[1:] + f[:-1]) / 2 * np.diff(x)))


def _band_keys(sig: np.ndarray, band: int, rows: int) -> np.ndarray:
    cols = sig[:, band * rows : (band + 1) * rows].astype(np.uint64)
    key = np.full(len(sig), np.uint64(band) + np.uint64(0x51ED27), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(cols.shape[1]):
            key = (key ^ cols[:, j]) * _MIX
            key ^= key >> np.uint64(29)
    return key


def lsh_links(sig: np.ndarray, bands: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Candidate links (later row, earliest row of its bucket), deduplicated."""
    src, dst = [], []
    for band in range(bands):
        key = _band_keys(sig, band, rows)
        order = np.argsort(key, kind="stable")
        k = key[order]
        new = np.ones(len(k), dtype=bool)
        new[1:] = k[1:] != k[:-1]
        group = np.cumsum(new) - 1
        head = order[new][group]
        later = ~new
        src.append(order[later])
        dst.append(head[later])
    if not src:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    s, d = np.concatenate(src), np.concatenate(dst)
    pairs = np.unique(np.stack([s, d], axis=1), axis=0) if len(s) else np.zeros((0, 2), np.int64)
    return pairs[:, 0], pairs[:, 1]


def similarity(sig: np.ndarray, i: np.ndarray, j: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """Estimated Jaccard (share of equal slots) of rows ``i[k]`` and ``j[k]``."""
    out = np.empty(len(i), dtype=np.float64)
    for lo in range(0, len(i), chunk):
        a, b = sig[i[lo : lo + chunk]], sig[j[lo : lo + chunk]]
        out[lo : lo + chunk] = (a == b).mean(axis=1)
    return out


def components(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Connected components of the links: each row's label is its component's min row.

    >>> components(5, np.array([1, 4]), np.array([0, 1])).tolist()
    [0, 0, 2, 3, 0]
    """
    label = np.arange(n, dtype=np.int64)
    if not len(i):
        return label
    while True:
        m = np.minimum(label[i], label[j])
        before = label.copy()
        np.minimum.at(label, i, m)
        np.minimum.at(label, j, m)
        label = label[label]  # pointer jumping
        if np.array_equal(label, before):
            return label


def clusters(
    sig: np.ndarray,
    threshold: float = 0.8,
    bands: int | None = None,
    rows: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Cluster root (earliest row) of every row, and each row's estimated Jaccard with its
    root (1.0 for roots)."""
    n, num_perm = sig.shape
    if bands is None or rows is None:
        bands, rows = optimal_bands(threshold, num_perm)
    i, j = lsh_links(sig, bands, rows)
    ok = similarity(sig, i, j) >= threshold
    roots = components(n, i[ok], j[ok])
    sim = np.ones(n)
    dup = np.flatnonzero(roots != np.arange(n))
    sim[dup] = similarity(sig, dup, roots[dup])
    return roots, sim


__all__ = [
    "clusters",
    "components",
    "lsh_links",
    "optimal_bands",
    "shingle_hashes",
    "signatures",
    "similarity",
]
