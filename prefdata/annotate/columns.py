"""Columnar helpers for per-scorer scores, on flat candidates and on pairs (the generic
list kernels, flattening and rebuilding candidates, live in :mod:`prefdata.arrow`).

Pairs carry per-scorer scores in two extra columns, ``chosen_scores`` and
``rejected_scores``: each a ``struct<name: float64, ...>`` with the same fields as the pool's
candidate ``scores`` struct (see :func:`prefdata.annotate.pair_scores.attach_scores`).

>>> import pyarrow as pa
>>> from prefdata.schema import pool_schema
>>> t = pa.Table.from_pylist(
...     [{"prompt_id": "p", "prompt": [{"role": "user", "content": "q"}],
...       "candidates": [{"candidate_id": "a", "response": "x", "scores": {"rm": 1.0}},
...                      {"candidate_id": "b", "response": "y", "scores": {"rm": 3.0}}]}],
...     schema=pool_schema(["rm"]))
>>> from prefdata.arrow import flatten_candidates
>>> flat = flatten_candidates(t)
>>> flat.parents.tolist(), score_array(flat.values, "rm").tolist()
([0, 0], [1.0, 3.0])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prefdata.arrow import one_chunk, struct_field_floats, to_float

CHOSEN_SCORES = "chosen_scores"
REJECTED_SCORES = "rejected_scores"


def score_array(values: pa.StructArray, name: str) -> np.ndarray:
    """One scorer's scores of flat candidates as float64 with NaN for null."""
    return to_float(pc.struct_field(pc.struct_field(values, "scores"), name))


def struct_names(column_type: pa.DataType) -> list[str]:
    return [f.name for f in column_type]


def pair_scorers(pairs: pa.Table, scorers: Sequence[str] = ()) -> list[str]:
    """The scorers to use on a pair table: ``scorers`` or every field of ``chosen_scores``.

    Raises a ``KeyError`` naming the scorer when one is missing.
    """
    for col in (CHOSEN_SCORES, REJECTED_SCORES):
        if col not in pairs.column_names:
            raise KeyError(
                f"pair table lacks column {col!r}; attach per-scorer scores with "
                "prefdata.annotate.attach_scores(pairs, pools)"
            )
    available = struct_names(pairs.schema.field(CHOSEN_SCORES).type)
    names = list(scorers) or available
    missing = [n for n in names if n not in available]
    if missing:
        raise KeyError(f"scorers {missing} not in {CHOSEN_SCORES} (has {available})")
    return names


def pair_differences(pairs: pa.Table, scorers: Sequence[str]) -> np.ndarray:
    """Matrix (rows x scorers) of ``score(chosen) - score(rejected)``, NaN where unscored."""
    cols = [
        struct_field_floats(pairs[CHOSEN_SCORES], n)
        - struct_field_floats(pairs[REJECTED_SCORES], n)
        for n in scorers
    ]
    if not cols:
        return np.zeros((pairs.num_rows, 0))
    return np.column_stack(cols)


def first_per_pool(idx: np.ndarray, values: np.ndarray, pool: np.ndarray, n: int) -> np.ndarray:
    """For candidates ``idx``, the one of each pool with the lowest ``values``, the earliest
    in the pool on ties (NaN counts as +inf); -1 for pools with none.

    Flat candidates are pool-major and in pool order, so ascending ``idx`` are already
    grouped: segment minima (``np.minimum.reduceat``) and the first hit per segment give the
    answer in O(len(idx)), where a lexsort by (pool, value, position) took 2-3x longer.
    When every pool has the same number of candidates it is one row-wise argmin.

    >>> pool = np.array([0, 0, 0, 1, 1])
    >>> first_per_pool(np.arange(5), np.array([3.0, 1.0, 1.0, 2.0, np.nan]), pool, 3).tolist()
    [1, 3, -1]
    >>> values = np.array([2.0, 2.0, 0.0, np.nan, 1.0])
    >>> first_per_pool(np.array([0, 1, 3, 4]), values, pool, 3).tolist()
    [0, 4, -1]
    """
    out = np.full(n, -1, dtype=np.int64)
    if idx.size == 0:
        return out
    if idx.size > 1 and (idx[1:] <= idx[:-1]).any():
        idx = np.unique(idx)
    if idx.size == values.size:  # every candidate (idx is then 0..n-1): no gathers
        p, v = pool, np.asarray(values, dtype=np.float64)
    else:
        p, v = pool[idx], np.asarray(values[idx], dtype=np.float64)
    nan = np.isnan(v)
    if nan.any():  # a copy only then: v may be the caller's array
        v = np.where(nan, np.inf, v)
    sizes = np.bincount(p, minlength=n)
    present = np.flatnonzero(sizes)
    width = int(sizes[present[0]])
    if (sizes[present] == width).all():
        # every pool has the same count (a fixed K): a row-wise argmin, which takes the
        # first of equal minima, in one pass
        at = v.reshape(-1, width).argmin(axis=1)
        out[present] = idx[np.arange(present.size) * width + at]
        return out
    start = np.ones(idx.size, dtype=bool)
    start[1:] = p[1:] != p[:-1]
    seg = np.cumsum(start) - 1
    low = np.minimum.reduceat(v, np.flatnonzero(start))
    hit = np.flatnonzero(v == low[seg])
    first = np.ones(hit.size, dtype=bool)
    first[1:] = seg[hit[1:]] != seg[hit[:-1]]
    out[p[hit[first]]] = idx[hit[first]]
    return out


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function.

    >>> sigmoid(np.array([0.0, 1e4, -1e4])).tolist()
    [0.5, 1.0, 0.0]
    """
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def pair_keys(pairs: pa.Table) -> pa.Array:
    """A key per pair: prompt_id, chosen id (or text) and rejected id (or text), joined."""
    chosen = (
        pc.coalesce(pairs["chosen_id"], pairs["chosen"])
        if "chosen_id" in pairs.column_names
        else pairs["chosen"]
    )
    rejected = (
        pc.coalesce(pairs["rejected_id"], pairs["rejected"])
        if "rejected_id" in pairs.column_names
        else pairs["rejected"]
    )
    key = pc.binary_join_element_wise(pairs["prompt_id"], chosen, rejected, "\x1f")
    return one_chunk(key)


__all__ = [
    "CHOSEN_SCORES",
    "REJECTED_SCORES",
    "first_per_pool",
    "pair_differences",
    "pair_keys",
    "pair_scorers",
    "score_array",
    "sigmoid",
    "struct_names",
]
