"""CSV files, streamed in blocks: each ragged row, row that is not UTF-8 or value that does
not fit its column rejected by itself, by its line (:class:`_CsvRead`), the rest read by
Arrow's CSV reader.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "in.csv"
>>> _ = path.write_bytes(b"prompt,response\\nq1,hi\\nq2,yes,extra\\nq3,caf\\xe9\\n")
>>> [batch] = csv_batches(path, 1 << 20)
>>> batch.table.to_pylist()
[{'prompt': 'q1', 'response': 'hi'}]
>>> batch.rejects["reason"].to_pylist()
['line 3: 3 fields where the header has 2', "field 'response' is not valid UTF-8 at byte 3"]
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prefdata.io.json_arrays import BOM
from prefdata.io.raw import NameNotUTF8, RawBatch, ReadRejects, plain_table, record_text

# Arrow's CSV conversion error: the column (0-based), the type and the value
_CONVERSION = re.compile(
    r"In CSV column #(\d+): Row #\d+: CSV conversion error to (\S+): invalid value '(.*)'\Z",
    re.S,
)


@dataclass
class _CsvRead:
    """How a CSV file is read. Arrow types each column from the first block; a column it
    typed null (empty there) is read as text, and where a later value does not convert
    (``CSV conversion error``), the read starts again with that column retyped: whole
    numbers meeting a decimal become ``double`` (``wider``); other numbers are read as
    text and converted here, a row whose value does not convert rejected by itself
    (``checked``); any other type is read as text. Text read so has Arrow's null values
    (``""``, ``NA``, ``null``...) as nulls, as the typed column had them. A read that
    starts again keeps the first read's types (``types``), so that its blocks, which may
    fall elsewhere, type nothing otherwise. ``latin1``: a rejected row was not UTF-8
    (:func:`_from_latin1`). Names are kept as read as UTF-8 (``bom``: the file starts
    with a UTF-8 byte-order mark, which a Latin-1 read keeps in the first name)."""

    block_size: int = 64 << 20
    bom: bool = False
    latin1: bool = False
    types: dict[str, pa.DataType] = field(default_factory=dict)
    text: list[str] = field(default_factory=list)
    wider: list[str] = field(default_factory=list)
    checked: dict[str, pa.DataType] = field(default_factory=dict)
    retypes: int = 0  # columns retyped after a first block

    @classmethod
    def of(cls, path: Path, block_size: int) -> _CsvRead:
        """A first read of ``path``."""
        with open(path, "rb") as fh:
            return cls(block_size, bom=fh.read(len(BOM)) == BOM)

    def convert(self) -> Any:
        """Arrow's conversion, without its UTF-8 check (checked per row: :func:`_utf8_rows`)."""
        import pyarrow.csv as pcsv

        types = dict(self.types) | dict.fromkeys([*self.text, *self.checked], pa.string())
        types |= dict.fromkeys(self.wider, pa.float64())
        first = next(iter(self.types), None)
        types = {self._as_read(n, n == first): t for n, t in types.items()}
        return pcsv.ConvertOptions(check_utf8=False, column_types=types)

    def _as_read(self, name: str, first: bool) -> str:
        """``name`` as Arrow reads it in this read."""
        if not self.latin1:
            return name
        return (BOM if first and self.bom else b"").decode("latin-1") + name.encode().decode(
            "latin-1"
        )

    def names(self, schema: pa.Schema) -> list[str] | None:
        """The schema's names as read as UTF-8 (None when they are not UTF-8)."""
        try:
            return _latin1_names(schema.names, self.bom) if self.latin1 else schema.names
        except (UnicodeError, NameNotUTF8):  # a name that is not UTF-8: plain_table names it
            return None

    def first_read(self, schema: pa.Schema) -> bool:
        """Keep the types of a first read (a read after it keeps them) and read the
        columns it typed null as text; True when there were any."""
        names = self.names(schema)
        if names is None or self.types:
            return False
        self.types = dict(zip(names, schema.types, strict=True))
        nulls = [n for n, t in self.types.items() if pa.types.is_null(t)]
        self.text += [n for n in nulls if n not in self.text]
        return bool(nulls)

    def retype(self, error: pa.ArrowInvalid, schema: pa.Schema) -> bool:
        """Retype the column of a conversion ``error``; False when it is not one.

        >>> how, schema = _CsvRead(), pa.schema([("rm", pa.int64())])
        >>> msg = "In CSV column #0: Row #9: CSV conversion error to int64: invalid value "
        >>> how.retype(pa.ArrowInvalid(msg + "'1.5'"), schema), how.wider
        (True, ['rm'])
        >>> how.retype(pa.ArrowInvalid(msg.replace("int64", "double") + "'x'"), schema)
        True
        >>> how.checked
        {'rm': DataType(double)}
        """
        found, names = _CONVERSION.search(str(error)), self.names(schema)
        if found is None or names is None or int(found[1]) >= len(names):
            return False
        name, now = names[int(found[1])], schema.field(int(found[1])).type
        self.retypes += 1
        if name in self.wider:  # read as double already
            now = pa.float64()
        if pa.types.is_integer(now) and _is_number(found[3]):
            self.wider.append(name)
        elif pa.types.is_integer(now) or pa.types.is_floating(now):
            self.checked[name] = now
            self.wider = [n for n in self.wider if n != name]
        else:
            self.text.append(name)
        return True


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class _ReadAgain(Exception):
    """A CSV read to start again, as its :class:`_CsvRead` now says."""


def csv_batches(path: Path, block_size: int, how: _CsvRead | None = None) -> Iterator[RawBatch]:
    """A CSV file in blocks of about ``block_size`` bytes, each bad row rejected by its
    line. Column types come from the first block; where a later block needs a column
    retyped or a rejected row is not UTF-8 (:class:`_CsvRead`), the read starts again
    and goes on after the rows already given."""
    how = how or _CsvRead.of(path, block_size)
    done = 0
    while True:
        try:
            for batch in _csv_batches_as(path, how):
                if (rest := _rows_from(batch, done)) is not None:
                    done += rest.rows_in
                    yield rest
            return
        except _ReadAgain:  # ``how`` says what changed
            continue


def _rows_from(batch: RawBatch, start: int) -> RawBatch | None:
    """The part of ``batch`` from input row ``start`` on (None when nothing is left)."""
    assert batch.rows is not None
    keep, bad = batch.rows >= start, batch.rejects["row"].to_numpy() >= start
    if keep.all() and bad.all():
        return batch
    if not keep.any() and not bad.any():
        return None
    table, rejects = batch.table.filter(pa.array(keep)), batch.rejects.filter(pa.array(bad))
    return RawBatch(table, rejects, table.num_rows + rejects.num_rows, batch.rows[keep])


def _csv_batches_as(path: Path, how: _CsvRead) -> Iterator[RawBatch]:
    """The batches of one read, as ``how`` says; a conversion error retypes its column
    (in ``how``) and raises :class:`_ReadAgain` to start again."""
    import pyarrow.csv as pcsv

    def open_csv() -> tuple[Any, ReadRejects]:
        bad = ReadRejects()
        reader = pcsv.open_csv(
            path,
            read_options=_csv_read_options(how.latin1, block_size=how.block_size),
            parse_options=pcsv.ParseOptions(
                invalid_row_handler=_csv_row_handler(bad, latin1=how.latin1)
            ),
            convert_options=how.convert(),
        )
        return reader, bad

    with _undecodable_rows(how):
        reader, bad = open_csv()
        if how.first_read(reader.schema):
            reader, bad = open_csv()
        as_text = [*how.text, *how.checked]
        # the reader parses ahead: a bad row may be reported before the batch it falls in,
        # never after; good rows take the next numbers that are not bad ones
        next_row, reported, seen = 0, 0, 0
        for batch in _retyping(reader, how):
            rows = _next_rows(next_row, batch.num_rows, [r for r, *_ in bad])
            next_row = int(rows[-1]) + 1 if len(rows) else next_row
            mine = ReadRejects(x for x in bad[reported:] if x[0] < next_row)
            later = [x for x in bad[reported:] if x[0] >= next_row]
            bad[reported:] = sorted(later)
            del bad[:reported]
            reported = 0
            rows_in = batch.num_rows + len(mine)
            table = _nulls_as_null(_csv_table(pa.Table.from_batches([batch]), how), as_text)
            table, kept = _utf8_rows(table, rows, mine)
            table, kept = _checked_numbers(table, kept, mine, how.checked)
            yield RawBatch(table, mine.table(), rows_in, kept)
            seen += rows_in
        if not seen or len(bad):  # bad rows after the last batch, or no batch at all
            empty = _csv_table(pa.Table.from_batches([], schema=reader.schema), how)
            empty, _ = _checked_numbers(empty, np.zeros(0, np.int64), ReadRejects(), how.checked)
            rest = ReadRejects(bad)
            yield RawBatch(empty, rest.table(), len(rest), np.zeros(0, np.int64))


def _retyping(reader: Any, how: _CsvRead) -> Iterator[Any]:
    """``reader``'s batches; a conversion error retypes its column and starts again."""
    try:
        yield from reader
    except pa.ArrowInvalid as e:
        if how.retype(e, reader.schema):
            raise _ReadAgain from None
        raise


def _csv_read_options(latin1: bool, **options: Any) -> Any:
    import pyarrow.csv as pcsv

    # one thread: the row handler is told each bad row's line number only then
    return pcsv.ReadOptions(use_threads=False, encoding="latin-1" if latin1 else "utf8", **options)


def _nulls_as_null(table: pa.Table, names: Sequence[str]) -> pa.Table:
    """``table`` with the values of text columns ``names`` that Arrow's CSV reader takes
    for null (``""``, ``NA``, ``null``...) null, as a typed column has them.

    >>> _nulls_as_null(pa.table({"g": ["", "m", "NA"]}), ["g"])["g"].to_pylist()
    [None, 'm', None]
    """
    import pyarrow.csv as pcsv

    nulls = pa.array(pcsv.ConvertOptions().null_values, pa.string())
    for name in names:
        i = table.schema.get_field_index(name)
        if i >= 0:
            col = table[name]
            table = table.set_column(i, name, pc.if_else(pc.is_in(col, nulls), None, col))
    return table


def _checked_numbers(
    table: pa.Table, rows: np.ndarray, bad: ReadRejects, checked: dict[str, pa.DataType]
) -> tuple[pa.Table, np.ndarray]:
    """``table`` with the text columns ``checked`` converted to their numeric types, a
    row whose value does not convert rejected by itself (:class:`_CsvRead`).

    >>> bad = ReadRejects()
    >>> t, rows = _checked_numbers(pa.table({"rm": ["1.5", None, "x"]}), np.arange(3), bad,
    ...                            {"rm": pa.float64()})
    >>> t["rm"].to_pylist(), rows.tolist(), [b[2] for b in bad]
    ([1.5, None], [0, 1], ["field 'rm' is 'x', not a number (double) as in the first rows"])
    """
    import polars as pl

    drop: dict[int, tuple[str, str]] = {}
    for name, type_ in checked.items():
        if name not in table.column_names:
            continue
        text = table[name].combine_chunks()
        numbers = pl.Series(text).cast(pl.Series(pa.array([], type_)).dtype, strict=False)
        failed = (numbers.is_null() & pl.Series(text).is_not_null()).to_numpy()
        for i in np.flatnonzero(failed):
            value = text[int(i)].as_py()
            reason = f"field {name!r} is {value!r}, not a number ({type_}) as in the first rows"
            drop.setdefault(int(i), (name, reason))
        table = table.set_column(
            table.schema.get_field_index(name), name, numbers.to_arrow().cast(type_)
        )
    return _drop_rows(table, rows, bad, drop)


def _csv_table(table: pa.Table, how: _CsvRead) -> pa.Table:
    return plain_table(_from_latin1(table, how.bom) if how.latin1 else table)


def _from_latin1(table: pa.Table, bom: bool) -> pa.Table:
    """The file's own bytes in ``table``, read as Latin-1 (each byte one character, so
    every row decodes): the names and the text columns as they were, which may again be
    invalid UTF-8 for :func:`_utf8_rows` to judge."""
    columns = [
        pa.chunked_array([_latin1_back(a) for a in c.chunks], pa.string())
        if pa.types.is_string(c.type)
        else c
        for c in table.columns
    ]
    return pa.table(columns, names=_latin1_names(table.column_names, bom))


def _latin1_names(names: list[str], bom: bool) -> list[str]:
    """Column names read as Latin-1, as UTF-8 again; the file's UTF-8 byte-order mark
    (``bom``), which a Latin-1 read keeps, is taken off the first, as the UTF-8 read skips
    it.

    >>> _latin1_names(["\u00ef\u00bb\u00bfr\u00c3\u00a9ponse", "rm"], bom=True)
    ['réponse', 'rm']
    """
    raw = [n.encode("latin-1") for n in names]
    if raw and bom:
        raw[0] = raw[0].removeprefix(BOM)
    for n in raw:
        try:
            n.decode("utf-8")
        except UnicodeDecodeError:
            raise NameNotUTF8(f"a column name is not valid UTF-8: {n!r}") from None
    return [n.decode("utf-8") for n in raw]


def _latin1_back(a: pa.Array) -> pa.Array:
    """The bytes of a string array read as Latin-1: U+0080 to U+00FF are two bytes in
    UTF-8 (C2 or C3, then a continuation byte), one byte before.

    >>> back = _latin1_back(pa.array(["caf\u00c3\u00a9", None, "\u00e9!"]))
    >>> back.cast(pa.binary()).to_pylist()
    [b'caf\xc3\xa9', None, b'\xe9!']
    """
    validity, offsets, data = a.buffers()
    n = a.offset + len(a)
    offs = np.frombuffer(offsets, np.int32)[: n + 1]
    raw = np.frombuffer(data, np.uint8)[: offs[-1]] if data is not None else np.zeros(0, np.uint8)
    lead = raw >= 0xC0
    if not lead.any():
        return a
    cont = (raw >= 0x80) & ~lead
    out = raw.copy()
    at = np.flatnonzero(lead)
    out[at] = ((raw[at] & 0x03) << 6) | (raw[at + 1] & 0x3F)
    gone = np.concatenate([[0], np.cumsum(cont)])  # continuation bytes before each byte
    new_offs = (offs - gone[offs]).astype(np.int32)
    return pa.Array.from_buffers(
        pa.string(), len(a),
        [validity, pa.py_buffer(new_offs.tobytes()), pa.py_buffer(out[~cont].tobytes())],
        null_count=a.null_count, offset=a.offset,
    )  # fmt: skip


def _next_rows(start: int, n: int, taken: list[int]) -> np.ndarray:
    """The first ``n`` row numbers from ``start`` on that are not ``taken``.

    >>> _next_rows(3, 4, [4, 6, 1]).tolist()
    [3, 5, 7, 8]
    """
    taken_after = np.asarray([r for r in taken if r >= start], np.int64)
    span = np.arange(start, start + n + len(taken_after), dtype=np.int64)
    return span[~np.isin(span, taken_after)][:n]


@contextmanager
def _undecodable_rows(how: _CsvRead) -> Iterator[None]:
    """pyarrow decodes a bad CSV row's text before it calls the row handler; for a row
    that is not UTF-8 that fails inside the callback, Python prints the error with a
    traceback ("Exception ignored in ..."), and the read stops with Arrow's parse error.
    Keep that quiet, and make the parse error :class:`_ReadAgain`, the read to be done
    again as Latin-1 (``how.latin1``)."""
    previous, undecodable = sys.unraisablehook, []

    def hook(unraisable: Any) -> None:
        handler = getattr(unraisable.object, "__qualname__", "")
        if isinstance(unraisable.exc_value, UnicodeDecodeError) and handler.startswith(
            "_csv_row_handler."
        ):
            undecodable.append(unraisable.exc_value)
        else:
            previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield
    except pa.ArrowInvalid:
        if undecodable and not how.latin1:
            how.latin1 = True
            raise _ReadAgain from None
        raise
    finally:
        sys.unraisablehook = previous


def _csv_row_handler(bad: ReadRejects, *, latin1: bool = False) -> Callable[[Any], str]:
    """Reject a CSV row with the wrong number of fields by its line (rows are numbered
    from 0 after the header); a row whose line is unknown stops the read. ``latin1``: the
    file is read as Latin-1 (:func:`_from_latin1`), the text shown as UTF-8 again."""

    def skip(row: Any) -> str:
        line = row.number
        if line is None:  # not known: the read cannot number its rejects
            return "error"
        text = row.text.encode("latin-1").decode("utf-8", "replace") if latin1 else row.text
        bad.append(
            (
                line - 2,
                None,
                f"line {line}: {row.actual_columns} fields where the header has "
                f"{row.expected_columns}",
                json.dumps({"line": text}, ensure_ascii=False),
            )
        )
        return "skip"

    return skip


def read_csv(path: Path, bad: ReadRejects, block_size: int) -> tuple[pa.Table, int]:
    """A CSV file: the batches of :func:`csv_batches` joined, so that its column types
    and rejects are those of a streamed read (a row with the wrong number of fields is
    rejected; rows are numbered from 0 after the header line, the reason names the
    file's line). Where a column was retyped on the way, the file is read again whole
    with the types found, so every row has them."""
    batches = list(csv_batches(path, block_size, how := _CsvRead.of(path, block_size)))
    if how.retypes:
        batches = list(csv_batches(path, block_size, how))
    for b in batches:
        bad.extend((r["row"], r["field"], r["reason"], r["record"]) for r in b.rejects.to_pylist())
    return pa.concat_tables([b.table for b in batches]), sum(b.rows_in for b in batches)


def _utf8_rows(table: pa.Table, rows: np.ndarray, bad: ReadRejects) -> tuple[pa.Table, np.ndarray]:
    """``table`` without its rows holding text that is not UTF-8, each rejected naming its
    field, and the input row of each row kept (``rows``: of each table row). CSV is read
    without Arrow's UTF-8 check, which would make the whole column binary (or stop the
    read at a later block): one Latin-1 byte rejects its row, not the file."""
    drop: dict[int, tuple[str, str]] = {}
    for name in table.column_names:
        col = table[name]
        if not pa.types.is_string(col.type):
            continue
        try:
            col.validate(full=True)
            continue
        except pa.ArrowInvalid:
            pass
        for i, v in enumerate(col.cast(pa.binary()).to_pylist()):
            if v is not None and i not in drop:
                try:
                    v.decode("utf-8")
                except UnicodeDecodeError as e:
                    drop[i] = (name, f"field {name!r} is not valid UTF-8 at byte {e.start}")
    return _drop_rows(table, rows, bad, drop)


def _drop_rows(
    table: pa.Table, rows: np.ndarray, bad: ReadRejects, drop: dict[int, tuple[str, str]]
) -> tuple[pa.Table, np.ndarray]:
    """``table`` and ``rows`` without the rows of ``drop`` (table row: field, reason), each
    rejected with its record (text that is not UTF-8 shown with U+FFFD)."""
    if not drop:
        return table, rows
    at = sorted(drop)
    as_bytes = table.take(pa.array(at, pa.int64())).cast(
        pa.schema(
            [f.with_type(pa.binary()) if pa.types.is_string(f.type) else f for f in table.schema]
        )
    )
    for i, row in zip(at, as_bytes.to_pylist(), strict=True):
        record = {
            k: v.decode("utf-8", errors="replace") if isinstance(v, bytes) else v
            for k, v in row.items()
        }
        bad.append((int(rows[i]), *drop[i], record_text(record)))
    keep = np.ones(table.num_rows, bool)
    keep[at] = False
    return table.filter(pa.array(keep)), rows[keep]
