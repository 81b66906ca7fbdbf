"""Generic Arrow kernels: list offsets, parents and lengths, a list column flattened and
rebuilt, struct and column edits, floats with NaN for null. Nothing here knows about
pools or pairs beyond the name of the column it is given.

>>> import pyarrow as pa
>>> lists = pa.array([[1, 2], None, [3]])
>>> list_lengths(lists).tolist(), list_parents(lists).tolist()
([2, 0, 1], [0, 0, 2])
>>> flat = flatten_list(lists)
>>> flat.values.to_pylist(), flat.pos.tolist(), flat.lengths.tolist()
([1, 2, 3], [0, 1, 0], [2, 0, 1])
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


class FlatCandidates(NamedTuple):
    """A list column flattened (the candidates of a pool table, the messages of a prompt
    column): the one flat type every stage and check uses.

    ``values`` holds every list's values, ``parents[i]`` the row of value ``i``,
    ``offsets`` the list offsets (rebased to start at 0) and ``mask`` the null mask of
    the lists (``None`` when no list is null).
    """

    values: pa.Array
    parents: np.ndarray
    offsets: np.ndarray
    mask: pa.Array | None

    @property
    def lengths(self) -> np.ndarray:
        """Each row's number of values (0 for a null list)."""
        return np.diff(self.offsets)

    @property
    def pos(self) -> np.ndarray:
        """Each value's position within its list."""
        return np.arange(len(self.parents), dtype=np.int64) - self.offsets[self.parents]


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
    return flatten_list(table[column])


def flatten_list(column: pa.ChunkedArray | pa.Array) -> FlatCandidates:
    """Flatten a list column: values, the row of each and its offsets; the values a null
    list may still span are left out (see :func:`list_parents`)."""
    lists = plain_list(column)
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
    rows: np.ndarray | None = None,
) -> pa.Table:
    """Put (new) candidate ``values`` back into ``table``; ``keep`` drops candidates and
    ``rows`` (a mask) drops rows with theirs, so the nested values are copied once.

    >>> t = pa.table({"id": [1, 2], "candidates": [[{"x": 1}, {"x": 2}], [{"x": 3}]]})
    >>> flat = flatten_candidates(t)
    >>> out = rebuild_candidates(t, flat, flat.values, keep=np.array([True, False, True]),
    ...                          rows=np.array([True, False]))
    >>> out.to_pylist()
    [{'id': 1, 'candidates': [{'x': 1}]}]
    """
    offsets, mask = flat.offsets, flat.mask
    i = table.schema.get_field_index(column)
    if keep is not None or rows is not None:
        keep = np.ones(len(flat.parents), bool) if keep is None else np.asarray(keep, bool)
        if rows is not None:
            rows = np.asarray(rows, dtype=bool)
            keep = keep & rows[flat.parents]
        values = values.filter(pa.array(keep))
        counts = np.bincount(flat.parents[keep], minlength=table.num_rows)
        if rows is not None:
            counts = counts[rows]
            mask = None if mask is None else mask.filter(pa.array(rows))
            table = table.remove_column(i).filter(pa.array(rows))  # its values: filtered above
        offsets = offsets_of(counts)
    lists = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values, mask=mask)
    field = pa.field(column, lists.type)
    return table.set_column(i, field, lists) if rows is None else table.add_column(i, field, lists)


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


def np_bool(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A boolean array as numpy, null as False."""
    return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), dtype=bool)


def _under_lists(t: pa.DataType) -> pa.DataType:
    while pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        t = t.value_type
    return t


def nested_fields(fields: pa.Schema | pa.StructType) -> Iterator[pa.Field]:
    """Every field of a schema or struct type, at every level (through lists).

    >>> t = pa.struct([("a", pa.list_(pa.struct([("b", pa.int64())]))), ("c", pa.bool_())])
    >>> [f.name for f in nested_fields(t)]
    ['a', 'b', 'c']
    """
    for f in fields:
        yield f
        t = _under_lists(f.type)
        if pa.types.is_struct(t):
            yield from nested_fields(t)


def leaf_types(t: pa.DataType) -> Iterator[pa.DataType]:
    """The types under lists and structs (``t`` itself when it is neither).

    >>> list(leaf_types(pa.list_(pa.struct([("a", pa.int64()), ("b", pa.string())]))))
    [DataType(int64), DataType(string)]
    """
    t = _under_lists(t)
    if pa.types.is_struct(t):
        for f in t:
            yield from leaf_types(f.type)
    else:
        yield t


__all__ = [
    "FlatCandidates",
    "flatten_candidates",
    "flatten_list",
    "float_array",
    "leaf_types",
    "list_lengths",
    "list_offsets",
    "list_parents",
    "nested_fields",
    "np_bool",
    "offsets_of",
    "one_chunk",
    "parents_of",
    "plain_list",
    "rebuild_candidates",
    "set_column",
    "starts_of",
    "struct_field_floats",
    "struct_with",
    "to_float",
]
