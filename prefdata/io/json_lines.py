"""JSON Lines parsed column-wise by Arrow's JSON reader, wherever that gives exactly the
table the line-by-line reader (:mod:`prefdata.io.readers`: ``json.loads`` per line, then
``pa.array`` per column) gives; ``None`` where it might not, and the caller reads those
lines one by one, naming each bad line in the rejects.

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
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.json as pajson

_BOM = b"\xef\xbb\xbf"
_INT64_LIMIT = 2.0**63  # an integer this large is a double in Arrow, an error in pa.array
_MIN_BLOCK = 1 << 20


def columnar_lines(lines: list[bytes]) -> pa.Table | None:
    """The table of these JSON lines (one object per line), or None where Arrow's reader
    might differ from reading them one by one (module docstring)."""
    if not lines:
        return None
    data = b"".join(lines)
    if _BOM in data or not _objects_only(data, len(lines)):
        return None
    # a line must fit in one block of the parallel parser
    block = max(_MIN_BLOCK, 2 * max(map(len, lines)))
    table = _read(data, block, None)
    if table is None or table.num_rows != len(lines) or not table.num_columns:
        return None
    if any(_has_timestamp(f.type) for f in table.schema):
        schema = _dates_as_strings(table.schema)
        table = None if schema is None else _read(data, block, schema)
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


def _read(data: bytes, block: int, schema: pa.Schema | None) -> pa.Table | None:
    options = pajson.ParseOptions(explicit_schema=schema) if schema is not None else None
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


def _leaves(t: pa.DataType) -> Iterator[pa.DataType]:
    """The types under lists and structs."""
    if pa.types.is_list(t):
        yield from _leaves(t.value_type)
    elif pa.types.is_struct(t):
        for f in t:
            yield from _leaves(f.type)
    else:
        yield t


def _has_timestamp(t: pa.DataType) -> bool:
    return any(pa.types.is_timestamp(leaf) for leaf in _leaves(t))


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
    return all(leaf in _PYTHON_READS for leaf in _leaves(t))


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


__all__ = ["columnar_lines"]
