"""JSON Lines and JSON arrays parsed column-wise by Arrow's JSON reader, wherever that
gives exactly the table the record-by-record reader (:mod:`prefdata.io.readers`:
``json.loads`` per line or of the whole array, then ``pa.array`` per column) gives;
``None`` where it might not, and the caller reads those records one by one, naming each
bad line or item in the rejects.

Arrow's reader is about ten times faster; it refuses (an error, hence ``None``) what the
line reader rejects row by row: invalid JSON, a line that is not an object, a key given
twice, a field whose type changes between rows, a lone surrogate escape; invalid UTF-8,
which it lets into strings, and the malformed arrays it builds for lists of nulls (pyarrow
26) are found by validating the table.
What it would read differently is checked for and handed back too: a line that does not
start with ``{`` (a ``null`` line is a row of nulls to Arrow), blank lines (the rows are
numbered by line), a byte-order mark, an integer too large for int64 (Arrow reads a
double), a type other than null, boolean, int64, double, string, list and struct. ISO
dates, which Arrow reads as timestamps, are read again as the strings they are.

>>> columnar_lines([b'{"a": 1, "b": "x"}\\n', b'{"a": 2.5}\\n']).to_pylist()
[{'a': 1.0, 'b': 'x'}, {'a': 2.5, 'b': None}]
>>> columnar_lines([b'{"a": 1}\\n', b'\\n', b'{"a": 2}\\n']) is None  # rows numbered by line
True
>>> columnar_array(b'[{"a": 1},\\n {"b": "x"}]').to_pylist()
[{'a': 1, 'b': None}, {'a': None, 'b': 'x'}]
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.json as pajson

from prefdata.arrow import leaf_types, nested_fields
from prefdata.io.json_arrays import BOM

_INT64_LIMIT = 2.0**63  # an integer this large is a double in Arrow, an error in pa.array
_MIN_BLOCK = 1 << 20
_MAX_BLOCK = (1 << 31) - 1  # Arrow's block size is an int32


def columnar_lines(lines: list[bytes]) -> pa.Table | None:
    """The table of these JSON lines (one object per line), or None where Arrow's reader
    might differ from reading them one by one (module docstring)."""
    if not lines:
        return None
    data = b"".join(lines)
    if BOM in data or not _objects_only(data, len(lines)):
        return None
    # a line must fit in one block of the parallel parser
    block = max(_MIN_BLOCK, 2 * max(map(len, lines)))
    table = _read(data, block, None)
    if table is None or table.num_rows != len(lines) or not table.num_columns:
        return None
    return _as_records_read(table, lambda schema: _read(data, block, schema))


def columnar_array(data: bytes) -> pa.Table | None:
    """The table of a JSON array of objects (one row per item, the whole text in memory),
    or None where Arrow's reader might differ from reading the items one by one: the
    checks of :func:`columnar_lines`, and an item that is not an object, or none at all.
    Arrow reads the array as the one field of one object, in one block (one thread)."""
    if BOM in data:
        return None
    wrapped = b'{"items":' + data + b"}"
    if len(wrapped) >= _MAX_BLOCK:
        return None

    def items(schema: pa.Schema | None) -> pa.Table | None:
        if schema is not None:
            schema = pa.schema([pa.field("items", pa.list_(pa.struct(list(schema))))])
        table = _read(wrapped, len(wrapped) + 1, schema, newlines_in_values=True)
        if table is None or table.num_rows != 1 or table.schema.names != ["items"]:
            return None
        lists = table.column(0).combine_chunks()
        if not pa.types.is_list(lists.type) or not pa.types.is_struct(lists.type.value_type):
            return None  # not objects, or no item
        values = lists.flatten()
        if values.null_count or not values.type.num_fields:  # a null item; only {}
            return None
        return pa.Table.from_struct_array(values)

    table = items(None)
    return None if table is None else _as_records_read(table, items)


def _as_records_read(
    table: pa.Table, reread: Callable[[pa.Schema], pa.Table | None]
) -> pa.Table | None:
    """``table`` as the record reader would build it, or None: every key valid UTF-8
    (Arrow takes a key's bytes as they are), top-level dates read again (``reread`` with
    them as strings), only types ``pa.array`` infers, no huge integers."""
    if not _keys_decode(table.schema):
        return None
    if any(_has_timestamp(f.type) for f in table.schema):
        schema = _dates_as_strings(table.schema)
        table = None if schema is None else reread(schema)
        if table is None:
            return None
    if not all(_as_python_reads(c.type) for c in table.schema) or _huge_integers(table):
        return None
    return table.combine_chunks()


def _objects_only(data: bytes, lines: int) -> bool:
    """Whether every line starts with ``{``: Arrow reads a ``null`` line as a row of
    nulls (and crashes on a file of just ``null``), where the line reader rejects it."""
    at = np.frombuffer(data, np.uint8)
    starts = np.flatnonzero(at[:-1] == ord("\n")) + 1
    if len(starts) + 1 != lines:  # a line with no newline but the last
        return False
    return bool(at[0] == ord("{") and np.all(at[starts] == ord("{")))


def _read(
    data: bytes, block: int, schema: pa.Schema | None, newlines_in_values: bool = False
) -> pa.Table | None:
    options = pajson.ParseOptions(explicit_schema=schema, newlines_in_values=newlines_in_values)
    try:
        table = pajson.read_json(
            pa.BufferReader(data),
            read_options=pajson.ReadOptions(block_size=block),
            parse_options=options,
        )
        # it lets invalid UTF-8 into strings, and builds a list of nulls wrongly
        table.validate(full=True)
    except (pa.ArrowException, ValueError):  # UnicodeDecodeError is a ValueError
        return None
    return table


def _keys_decode(schema: pa.Schema) -> bool:
    """Whether every field name, at every level, is valid UTF-8 (where the record reader
    rejects the record)."""
    try:
        for f in nested_fields(schema):
            f.name  # noqa: B018 - reading the name decodes it
    except UnicodeDecodeError:
        return False
    return True


def _has_timestamp(t: pa.DataType) -> bool:
    return any(pa.types.is_timestamp(leaf) for leaf in leaf_types(t))


def _dates_as_strings(schema: pa.Schema) -> pa.Schema | None:
    """The schema with its top-level timestamp columns as strings (None: a nested one)."""
    fields = []
    for f in schema:
        if pa.types.is_timestamp(f.type):
            f = f.with_type(pa.string())
        elif _has_timestamp(f.type):
            return None
        fields.append(f)
    return pa.schema(fields)


_PYTHON_READS = (pa.null(), pa.bool_(), pa.int64(), pa.float64(), pa.string())


def _as_python_reads(t: pa.DataType) -> bool:
    """Only types ``pa.array`` also infers from the parsed Python values, at every level."""
    return all(leaf in _PYTHON_READS for leaf in leaf_types(t))


def _huge_integers(table: pa.Table) -> bool:
    """Whether a double column holds an integer beyond int64 (JSON ``1e19`` or
    ``10000000000000000000``; the line reader reads the first, rejects the second)."""
    return any(_huge(c.combine_chunks()) for c in table.columns)


def _huge(arr: pa.Array) -> bool:
    t = arr.type
    if pa.types.is_list(t):
        return _huge(arr.flatten())
    if pa.types.is_struct(t):
        return any(_huge(arr.field(i)) for i in range(t.num_fields))
    if t != pa.float64():
        return False
    v = arr.to_numpy(zero_copy_only=False)
    return bool(np.any((np.abs(v) >= _INT64_LIMIT) & (v == np.floor(v))))


__all__ = ["columnar_array", "columnar_lines"]
