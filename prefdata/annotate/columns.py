"""Columnar helpers for candidates inside pools and for per-scorer scores on pairs.

Pools hold candidates as ``list<struct>``; the helpers here flatten them once (values plus
the parent row of each value), let a stage compute on flat NumPy/Arrow arrays, and rebuild
the lists with the original offsets, so no stage loops over rows in Python.

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
>>> flat = flatten_candidates(t)
>>> flat.parents.tolist(), score_array(flat.values, "rm").tolist()
([0, 0], [1.0, 3.0])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

CHOSEN_SCORES = "chosen_scores"
REJECTED_SCORES = "rejected_scores"


class FlatCandidates(NamedTuple):
    """Candidates of a pool table, flattened.

    ``values`` is the struct array of every candidate, ``parents[i]`` the pool row of
    candidate ``i``, ``offsets`` the list offsets (rebased to start at 0) and ``mask`` the
    null mask of the candidate lists (``None`` when no list is null).
    """

    values: pa.StructArray
    parents: np.ndarray
    offsets: np.ndarray
    mask: pa.Array | None


def one_chunk(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """``column`` as one array; a single chunk is returned as is (``combine_chunks``
    copies even then).

    >>> one_chunk(pa.chunked_array([[1, 2], [3]])).to_pylist()
    [1, 2, 3]
    """
    if isinstance(column, pa.Array):
        return column
    if column.num_chunks == 0:
        return pa.array([], type=column.type)
    return column.combine_chunks() if column.num_chunks > 1 else column.chunk(0)


def plain_list(column: pa.ChunkedArray | pa.Array) -> pa.ListArray:
    """A list column as one ``list`` array (a ``large_list`` is cast down)."""
    arr = one_chunk(column)
    return arr.cast(pa.list_(arr.type.value_type)) if pa.types.is_large_list(arr.type) else arr


def starts_of(lengths: np.ndarray) -> np.ndarray:
    """Start of each row in the flat values, from per-row lengths (empty input: empty).

    >>> starts_of(np.array([2, 0, 3])).tolist(), starts_of(np.array([], dtype=np.int64)).tolist()
    ([0, 2, 2], [])
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    return np.cumsum(lengths) - lengths


def offsets_of(lengths: np.ndarray, dtype: type = np.int32) -> np.ndarray:
    """List offsets (one more than rows) from per-row lengths: int32 for Arrow's
    ``ListArray.from_arrays``, int64 for indexing.

    >>> offsets_of(np.array([2, 0, 3])).tolist()
    [0, 2, 2, 5]
    """
    return np.concatenate([[0], np.cumsum(lengths)]).astype(dtype)


def parents_of(lengths: np.ndarray) -> np.ndarray:
    """The row of each flat value, from per-row lengths.

    >>> parents_of(np.array([2, 0, 1])).tolist()
    [0, 0, 2]
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    return np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)


def list_lengths(lists: pa.Array) -> np.ndarray:
    """Each list's length as int64, 0 for a null list."""
    return (
        pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    )


def list_offsets(lists: pa.Array) -> np.ndarray:
    """List offsets (int64, from 0, one more than rows) into ``lists.flatten()``, which
    leaves out what a null list still spans (see :func:`list_parents`)."""
    return offsets_of(list_lengths(lists), np.int64)


def list_parents(lists: pa.Array) -> np.ndarray:
    """The row of each value of ``lists.flatten()``. Unlike ``pc.list_parent_indices`` it
    has no entry for the values a null list may still span (valid Arrow, which polars and
    masked structs produce), which ``flatten()`` leaves out.

    >>> null = pa.array([False, True, False])
    >>> lists = pa.ListArray.from_arrays([0, 2, 3, 4], [1, 2, 3, 4], mask=null)
    >>> lists.flatten().to_pylist(), list_parents(lists).tolist()
    ([1, 2, 4], [0, 0, 2])
    """
    return parents_of(list_lengths(lists))


def flatten_candidates(table: pa.Table, column: str = "candidates") -> FlatCandidates:
    """Flatten the candidate lists of ``table`` (one pass, no Python per row)."""
    lists = plain_list(table[column])
    lengths = list_lengths(lists)  # not lists.offsets: a null list may span hidden values
    offsets = offsets_of(lengths, np.int64)
    values = lists.flatten()
    parents = parents_of(lengths)
    mask = lists.is_null() if lists.null_count else None
    return FlatCandidates(values, parents, offsets, mask)


def rebuild_candidates(
    table: pa.Table,
    flat: FlatCandidates,
    values: pa.StructArray,
    keep: np.ndarray | None = None,
    column: str = "candidates",
) -> pa.Table:
    """Put (new) candidate ``values`` back into ``table``; ``keep`` drops candidates."""
    offsets = flat.offsets
    if keep is not None:
        keep = np.asarray(keep, dtype=bool)
        values = values.filter(pa.array(keep))
        counts = np.bincount(flat.parents[keep], minlength=table.num_rows)
        offsets = offsets_of(counts)
    lists = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values, mask=flat.mask)
    i = table.schema.get_field_index(column)
    return table.set_column(i, pa.field(column, lists.type), lists)


def struct_with(struct: pa.StructArray, **children: pa.Array) -> pa.StructArray:
    """``struct`` with fields replaced (or appended, in the given order) by ``children``."""
    names = [f.name for f in struct.type]
    arrays = [struct.field(i) for i in range(len(names))]
    for name, child in children.items():
        if name in names:
            arrays[names.index(name)] = child
        else:
            names.append(name)
            arrays.append(child)
    mask = struct.is_null() if struct.null_count else None
    return pa.StructArray.from_arrays(arrays, names=names, mask=mask)


def score_array(values: pa.StructArray, name: str) -> np.ndarray:
    """One scorer's scores of flat candidates as float64 with NaN for null."""
    return to_float(pc.struct_field(pc.struct_field(values, "scores"), name))


def to_float(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A float column as float64 NumPy with NaN for null (a null struct parent counts)."""
    if isinstance(array, pa.ChunkedArray):
        array = one_chunk(array)
    return np.asarray(
        pc.fill_null(array.cast(pa.float64()), np.nan).to_numpy(zero_copy_only=False),
        dtype=np.float64,
    )


def struct_field_floats(column: pa.ChunkedArray | pa.Array, name: str) -> np.ndarray:
    """Field ``name`` of a struct column as float64 NumPy (NaN for null parent or value)."""
    arr = one_chunk(column)
    child = pc.struct_field(arr, name)
    return to_float(child)


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


def set_column(table: pa.Table, name: str, array: pa.Array, type: pa.DataType | None = None):
    """Replace column ``name`` (keeping its position) or append it."""
    if type is not None:
        array = pa.array(array, type=type) if not isinstance(array, pa.Array) else array
        array = array.cast(type)
    elif not isinstance(array, pa.Array | pa.ChunkedArray):
        array = pa.array(array)
    i = table.schema.get_field_index(name)
    field = pa.field(name, array.type)
    return table.set_column(i, field, array) if i >= 0 else table.append_column(field, array)


def float_array(values: np.ndarray) -> pa.Array:
    """float64 Arrow array with null where ``values`` is NaN."""
    values = np.asarray(values, dtype=np.float64)
    nan = np.isnan(values)
    return pa.array(values, type=pa.float64(), mask=nan if nan.any() else None)  # no-NaN: no copy


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
    "first_per_pool",
    "CHOSEN_SCORES",
    "REJECTED_SCORES",
    "FlatCandidates",
    "flatten_candidates",
    "float_array",
    "pair_differences",
    "pair_keys",
    "pair_scorers",
    "rebuild_candidates",
    "score_array",
    "set_column",
    "sigmoid",
    "struct_field_floats",
    "struct_with",
    "to_float",
]
