"""Read records from files, folders, the Hub or in-memory objects, and turn them into pools.

:func:`read_records` gives the raw table (plain Arrow types: string, not large_string) and
the rows it could not read (``REJECTS_SCHEMA``, stage ``read``). :func:`read_pools` adds a
layout (:mod:`prefdata.io.layouts`) and returns a :class:`~prefdata.pipeline.PipelineResult`
with a funnel counted in input rows.

Sources:

- a Parquet file, or a folder of them (read recursively, in sorted path order);
- JSON Lines (``.jsonl``, ``.jsonl.gz``, ``.ndjson``), or a ``.json`` file holding an array of
  objects (after a byte-order mark or not; or JSON Lines under a ``.json`` name); a folder
  of such files;
- a ``.csv`` file (:mod:`prefdata.io.csv_files`: each ragged row, row that is not UTF-8 or
  value that does not fit its column rejected by itself);
- a Hugging Face ``save_to_disk`` folder (its Arrow files, read without ``datasets``; a
  ``DatasetDict``'s ``split``), or another folder of data files
  (``datasets.load_dataset(folder, split=...)``);
- a Hub dataset name (``datasets.load_dataset(name, split=...)``, once per process; the
  executor's ingest streams the Arrow files ``datasets`` keeps, :func:`dataset_files`):
  needs the network, and its error is raised as is when there is none;
- a ``pyarrow.Table``, polars or pandas ``DataFrame``, or ``datasets.Dataset`` /
  ``DatasetDict`` (pick ``split``; a dataset whose rows are its Arrow files streams them).

JSON is parsed column-wise by Arrow where that gives the same table
(:mod:`prefdata.io.json_lines`), else record by record, so that a bad line is a rejects
entry, not a crash: ``row`` is the 0-based line index and the reason starts with the
1-based line number, the way editors count (``"line 17: invalid JSON: ..."``). Blank lines
are not rows. A key whose values disagree in kind across rows (a number where other rows
hold strings) rejects the minority rows, naming the field. An array's rows are numbered by
item (``"item 3: ..."``); a file that is not valid JSON is an error that gives the place
(``"<file>: not valid JSON: Expecting ',' delimiter at line 2 column 19 (byte 35)"``).

>>> import pyarrow as pa
>>> raw, rejects = read_records(pa.table({"prompt": ["Hi"], "response": ["Hello"]}))
>>> raw.num_rows, rejects.num_rows
(1, 0)
>>> result = read_pools(pa.table({"prompt": ["Hi"], "response": ["Hello"]}), "long")
>>> result.funnel.summary()
'read: 1 in -> 1 out, 0 rejected; layout:long: 1 in -> 1 out, 0 rejected'
"""

from __future__ import annotations

import functools
import gzip
import json
import os
import re
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from prefdata.io.csv_files import csv_batches, read_csv
from prefdata.io.json_arrays import BOM, ArrayError, Piece, parsed_pieces
from prefdata.io.json_lines import columnar_array, columnar_lines
from prefdata.io.layouts import LayoutOptions, to_pools
from prefdata.io.raw import (
    STAGE,
    NameNotUTF8,
    RawBatch,
    ReadRejects,
    plain_table,
    record_text,
)
from prefdata.pipeline import Funnel, PipelineResult
from prefdata.schema import conform_types

_JSON_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz", ".json", ".json.gz")
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def is_hub_name(source: str | os.PathLike) -> bool:
    """Whether a path that does not exist reads as a Hub dataset name (``org/name``).

    >>> is_hub_name("HuggingFaceH4/ultrafeedback_binarized"), is_hub_name("data/x.jsonl")
    (True, False)
    """
    text = str(source)
    suffix = Path(text).suffix
    return not (suffix or text.startswith((".", "/", "~"))) and bool(_HUB_NAME.match(text))


@contextmanager
def naming(path: Path) -> Iterator[None]:
    """Errors reading ``path`` (a damaged, truncated or unreadable file) name it: the
    libraries' messages often do not ("Parquet magic bytes not found in footer")."""
    try:
        yield
    except NameNotUTF8 as e:
        raise ValueError(f"{path}: {e}") from None
    except (OSError, EOFError, pa.ArrowException) as e:
        if str(path) in str(e) or path.name in str(e):
            raise
        text = f"{path}: " + "; ".join(x.strip() for x in str(e).splitlines() if x.strip())
        try:
            renamed = type(e)(text)
        except Exception:  # noqa: BLE001 - an exception type that takes other arguments
            renamed = OSError(text)
        raise renamed from e


# --------------------------------------------------------------------------- JSON


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _lone_surrogate(value: Any, path: str = "") -> str | None:
    """The field (dotted, ``[i]`` for list items) of the first string holding a lone
    UTF-16 surrogate (an escape such as ``\\ud800`` without its pair: JSON allows it,
    UTF-8 and Arrow cannot hold it), or None.

    >>> _lone_surrogate({"a": "ok", "b": [{"c": "x" + chr(0xD800)}]})
    'b[0].c'
    >>> _lone_surrogate(json.loads('{"a": "\\\\ud83d\\\\ude00"}')) is None  # a pair: one emoji
    True
    """
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path or "(value)"
        return None
    if isinstance(value, dict):
        items = ((f"{path}.{k}" if path else str(k), v) for k, v in value.items())
    elif isinstance(value, list):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for sub, v in items:
        if (found := _lone_surrogate(v, sub)) is not None:
            return found
    return None


def _surrogate_reason(where: str, field: str) -> str:
    return (
        f"{where}: field {field!r} holds a lone UTF-16 surrogate escape (such as \\ud800), "
        "which is not valid Unicode"
    )


def _records_to_table(
    records: list[dict], rows: list[int], where: str, bad: ReadRejects
) -> pa.Table:
    """Column-wise Arrow table from dicts; rows whose values cannot share a column type
    with the other rows are rejected (the most common kind wins; ties: the first seen)."""
    keys: dict[str, None] = {}
    for r in records:
        keys.update(dict.fromkeys(r))
    drop: set[int] = set()
    for key in keys:
        kinds = [_kind(r.get(key)) for r in records]
        counts = Counter(k for k in kinds if k != "null")
        if len(counts) > 1:
            first_seen = {k: i for i, k in reversed(list(enumerate(kinds)))}
            major = max(counts, key=lambda k: (counts[k], -first_seen[k]))
            for i, k in enumerate(kinds):
                if k not in ("null", major) and i not in drop:
                    drop.add(i)
                    bad.append(
                        (
                            rows[i],
                            key,
                            f"{where} {rows[i] + (where == 'line')}: field "
                            f"{key!r} is a {k} where other rows hold a {major}",
                            record_text(records[i]),
                        )
                    )
    keep = [i for i in range(len(records)) if i not in drop]
    while True:
        columns = {}
        failed = None
        for key in keys:
            values = [records[i].get(key) for i in keep]
            try:
                columns[key] = pa.array(values)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as e:
                failed = (key, values, e)
                break
        if failed is None:
            break
        # Nested values that disagree in type: reject those unlike the most common type.
        key, values, err = failed
        types = []
        for v in values:
            try:
                types.append(pa.array([v]).type)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
                types.append(None)
        common = Counter(t for t in types if t is not None and not pa.types.is_null(t))
        target = common.most_common(1)[0][0] if common else None
        drop_now = []
        for j, v in enumerate(values):
            try:
                pa.array([v], type=target)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError):
                drop_now.append(j)
        if not drop_now:  # each fits alone (a string reads as a list of characters)
            drop_now = [
                j
                for j, t in enumerate(types)
                if t is None or (t != target and not t.equals(pa.null()))
            ]
        if not drop_now:
            raise ValueError(f"column {key!r} cannot be read: {err}") from err
        for j in drop_now:
            i = keep[j]
            bad.append(
                (
                    rows[i],
                    key,
                    f"{where} {rows[i] + (where == 'line')}: field {key!r} "
                    f"does not fit the type of other rows ({target})",
                    record_text(records[i]),
                )
            )
        dropped = {keep[j] for j in drop_now}
        keep = [i for i in keep if i not in dropped]
    if not keys:  # only empty objects: nothing to read (an Arrow table needs a column)
        for i in keep:
            bad.append(
                (
                    rows[i],
                    None,
                    f"{where} {rows[i] + (where == 'line')}: empty object",
                    record_text(records[i]),
                )
            )
        bad.keep([])
        return pa.table({})
    bad.keep(rows[i] for i in keep)
    return pa.table(columns)


class _Damaged(bytes):
    """Where a compressed file breaks off (truncated, corrupt): the lines before it are
    read; this stands for the rest, one rejected row with the reason."""

    reason: str = ""


def _lines(path: Path) -> Iterator[bytes]:
    """The file's lines; a gzip file that breaks off after some lines ends with a
    :class:`_Damaged` marker (one that breaks off before any raises: nothing is readable)."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as fh:
        lines, seen = iter(fh), False
        while True:
            try:
                line = next(lines)
            except StopIteration:
                return
            except (EOFError, OSError, zlib.error) as e:
                if not seen:
                    raise
                damaged = _Damaged()
                damaged.reason = f"{path.name} breaks off here ({e}); the rest cannot be read"
                yield damaged
                return
            seen = True
            yield line


def _first_char(path: Path) -> str:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as fh:
        head = fh.read(4096).removeprefix(BOM).lstrip(b" \t\r\n")
    return head[:1].decode("ascii", errors="replace")


def _read_json_lines(
    lines: Iterable[bytes], bad: ReadRejects, start: int = 0
) -> tuple[pa.Table, int, int]:
    """(table, records read, lines seen): rows are numbered by line from ``start``, blank
    ones included. Column-wise (:func:`~prefdata.io.json_lines.columnar_lines`) where
    that gives the same table, else line by line."""
    lines = lines if isinstance(lines, list) else list(lines)
    if lines and not isinstance(lines[-1], _Damaged):
        table = columnar_lines(lines)
        if table is not None:
            bad.keep(range(start, start + len(lines)))
            return table, len(lines), len(lines)
    records, rows, n, i = [], [], 0, start - 1
    for i, line in enumerate(lines, start):
        if isinstance(line, _Damaged):
            n += 1
            bad.append((i, None, f"line {i + 1}: {line.reason}", json.dumps({"line": None})))
            continue
        if i == 0 and line.startswith(BOM):
            line = line[3:]
        if not line.strip():
            continue
        n += 1
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            bad.append(
                (
                    i,
                    None,
                    f"line {i + 1}: invalid UTF-8 at byte {e.start}: {e.reason}",
                    json.dumps({"line": line.decode("utf-8", errors="replace")}),
                )
            )
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            bad.append((i, None, f"line {i + 1}: invalid JSON: {e}", json.dumps({"line": text})))
            continue
        if not isinstance(value, dict):
            bad.append(
                (
                    i,
                    None,
                    f"line {i + 1}: JSON {_kind(value)}, not an object",
                    json.dumps({"line": text}),
                )
            )
            continue
        if _SURROGATE_ESCAPE.search(text) and (where := _lone_surrogate(value)) is not None:
            bad.append(
                (
                    i,
                    where.split(".")[0].split("[")[0],
                    _surrogate_reason(f"line {i + 1}", where),
                    json.dumps({"line": text}),
                )
            )
            continue
        records.append(value)
        rows.append(i)
    return _records_to_table(records, rows, "line", bad), n, i + 1 - start


WHOLE_JSON_BYTES = 1 << 30  # a larger JSON array is read in pieces, even whole


def _read_json_array(path: Path, bad: ReadRejects) -> tuple[pa.Table, int, int]:
    """(table, items, items): rows are numbered by item (:func:`_json_items`). An array
    of more than :data:`WHOLE_JSON_BYTES` is read in its streamed pieces, their tables
    joined (Arrow cannot take 2 GiB in one block, and ``json.loads`` would hold every
    item as Python objects); where the pieces' column types do not join, as a whole."""
    with _open_text(path) as fh:
        text = fh.read(WHOLE_JSON_BYTES + 1)
        if len(text) > WHOLE_JSON_BYTES:
            if joined := _joined_pieces(_Ahead(text, fh), path, bad):
                return joined
            with _open_text(path) as again:
                text = again.read()
    return _json_array_text(text, bad, path)


def _json_array_text(text: bytes, bad: ReadRejects, path: Path) -> tuple[pa.Table, int, int]:
    """:func:`_json_items` of a whole file's text (after a byte-order mark, if any)."""
    skip = len(BOM) if text.startswith(BOM) else 0
    text = text[skip:]
    table, n = _json_items(text, bad, 0, Piece(text, skip, 1, 1 + skip).where, path)
    return table, n, n


def _open_text(path: Path) -> BinaryIO:
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


class _Ahead:
    """A file of which ``head`` was read already: ``read`` gives it, then the rest."""

    def __init__(self, head: bytes, fh: BinaryIO) -> None:
        self.head, self.fh = memoryview(head), fh

    def read(self, n: int) -> bytes:
        if not self.head:
            return self.fh.read(n)
        out, self.head = bytes(self.head[:n]), self.head[n:]
        return out


def _joined_pieces(fh: Any, path: Path, bad: ReadRejects) -> tuple[pa.Table, int, int] | None:
    """The pieces of a JSON array (:func:`_json_array_pieces`) as one table, or None where
    their column types do not join."""
    tables, got = [], ReadRejects()
    for table, _, piece_bad in _json_array_pieces(fh, path):
        tables.append(table)
        got += piece_bad
        got.keep(piece_bad.kept or [])
    try:
        table = pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None
    bad += got
    bad.keep(got.kept or [])
    return table.combine_chunks(), table.num_rows + len(got), table.num_rows + len(got)


def _json_items(
    text: bytes, bad: ReadRejects, first: int, where: Callable[[int], str], path: Path
) -> tuple[pa.Table, int]:
    """(table, items) of the JSON array ``text``, its items numbered from ``first``:
    column-wise (:func:`~prefdata.io.json_lines.columnar_array`) where that gives the
    same table, else item by item. ``where(k)``: the file position of ``text[k]``, for
    an error."""
    table = columnar_array(text)
    if table is not None:
        bad.keep(range(first, first + table.num_rows))
        return table, table.num_rows
    try:
        decoded, not_utf8 = text.decode("utf-8"), None
    except UnicodeDecodeError as e:  # the first error is reported, JSON or UTF-8
        decoded, not_utf8 = text.decode("utf-8", "surrogateescape"), e.start
    try:
        data = json.loads(decoded)
    except json.JSONDecodeError as e:
        at = len(e.doc[: e.pos].encode("utf-8", "surrogateescape"))  # a str index: in bytes
        if not_utf8 is None or at < not_utf8:
            raise ValueError(f"{path}: not valid JSON: {e.msg} at {where(at)}") from None
    if not_utf8 is not None:
        raise ValueError(f"{path}: not valid UTF-8 at {where(not_utf8)}") from None
    del text, decoded
    if not isinstance(data, list):
        raise ValueError(
            f"{path}: expected a JSON array of objects or JSON Lines, got a JSON {_kind(data)}"
        )
    records, rows = [], []
    for i, v in enumerate(data, first):
        if isinstance(v, dict) and (where_ := _lone_surrogate(v)) is not None:
            bad.append(
                (
                    i,
                    where_.split(".")[0].split("[")[0],
                    _surrogate_reason(f"item {i}", where_),
                    json.dumps({"item": repr(v)}),
                )
            )
        elif isinstance(v, dict):
            records.append(v)
            rows.append(i)
        else:
            bad.append((i, None, f"item {i}: JSON {_kind(v)}, not an object", record_text(v)))
    return _records_to_table(records, rows, "item", bad), len(data)


def _read_json_file(path: Path, bad: ReadRejects) -> tuple[pa.Table, int, int]:
    """(table, records, row numbers used): JSON Lines number rows by line, arrays by item."""
    if path.name.endswith((".json", ".json.gz")) and _first_char(path) == "[":
        return _read_json_array(path, bad)
    return _read_json_lines(_lines(path), bad)


# --------------------------------------------------------------------------- objects


def _one_split(ds: Any, split: str | None) -> Any:
    """The split of a ``DatasetDict`` (its only one when ``split`` is None)."""
    import datasets

    if isinstance(ds, datasets.DatasetDict | datasets.IterableDatasetDict):
        if split is None:
            if len(ds) != 1:
                raise ValueError(f"the dataset has splits {list(ds)}; pass split=")
            split = next(iter(ds))
        if split not in ds:
            raise KeyError(f"no split {split!r}; the dataset has {list(ds)}")
        ds = ds[split]
    return ds


@functools.lru_cache(maxsize=4)
def hub_dataset(name: str, split: str | None) -> Any:
    """``datasets.load_dataset(name, split=split)`` (one split), loaded once per process:
    an ingest asks for its files, its digest and its rows."""
    import datasets

    # without network this raises datasets' own error
    return _one_split(datasets.load_dataset(name, split=split), split)


def dataset_files(ds: Any) -> list[Path] | None:
    """The Arrow files a ``datasets.Dataset`` reads, in row order, when its rows are
    exactly theirs (no indices mapping from ``select``, ``shuffle`` or ``filter``, no
    column renamed, cast or added in memory, no slice), else None (read it whole).

    >>> import datasets
    >>> dataset_files(datasets.Dataset.from_dict({"a": [1]})) is None  # in memory
    True
    """
    import datasets

    # an indices mapping reorders or subsets the files' rows (absent attribute: unsure)
    if not isinstance(ds, datasets.Dataset) or getattr(ds, "_indices", True) is not None:
        return None
    files = [Path(f["filename"]) for f in ds.cache_files]
    if not files or not all(p.is_file() for p in files):
        return None
    rows = 0
    want = ds.data.schema.remove_metadata()
    for path in files:
        with pa.memory_map(str(path)) as source:
            reader = ipc.open_stream(source)
            if not reader.schema.remove_metadata().equals(want):
                return None
            rows += sum(batch.num_rows for batch in reader)
    return files if rows == ds.num_rows else None


def _from_dataset(ds: Any, split: str | None) -> pa.Table:
    import datasets

    ds = _one_split(ds, split)
    if isinstance(ds, datasets.IterableDataset):
        ds = datasets.Dataset.from_generator(lambda: (yield from ds), features=ds.features)
    return ds.with_format("arrow")[:]  # applies any indices mapping (select, shuffle)


def _from_pandas(df: Any, bad: ReadRejects) -> tuple[pa.Table, int]:
    try:
        return pa.Table.from_pandas(df, preserve_index=False), len(df)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        # Mixed-type object columns: read row by row, rejecting the rows that do not fit.
        records = df.to_dict("records")
        return _records_to_table(records, list(range(len(records))), "row", bad), len(records)


def _parquet_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.parquet") if p.is_file())


def _json_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name.endswith(_JSON_SUFFIXES))


def _concat(tables: Sequence[pa.Table]) -> pa.Table:
    return pa.concat_tables([conform_types(t) for t in tables], promote_options="permissive")


def _read_path(path: Path, split: str | None, bad: ReadRejects) -> tuple[pa.Table, int]:
    if path.is_file():
        with naming(path):
            t, n = _read_file(path, bad)
            return plain_table(t), n  # reads the column names (a bad one is named with the file)
    return _read_folder(path, split, bad)


def _read_file(path: Path, bad: ReadRejects) -> tuple[pa.Table, int]:
    name = path.name.lower()
    if name.endswith(".parquet"):
        t = pq.ParquetFile(path).read()  # read_table refuses duplicated names
        return t, t.num_rows
    if name.endswith(_JSON_SUFFIXES):
        t, n, _ = _read_json_file(path, bad)
        return t, n
    if name.endswith(".csv"):
        return read_csv(path, bad, BATCH_BYTES)
    raise ValueError(f"{path}: unknown file type (expected .parquet, .jsonl[.gz], .json, .csv)")


def _read_folder(path: Path, split: str | None, bad: ReadRejects) -> tuple[pa.Table, int]:
    if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
        files = saved_dataset_files(path, split)
        if files is not None:  # its Arrow files, as read_batches streams them
            t = _concat([b.table for b in _arrow_stream_batches(files)])
            return t, t.num_rows
        import datasets

        t = _from_dataset(datasets.load_from_disk(str(path)), split)
        return t, t.num_rows
    parquet, jsons = (_parquet_files(path), _json_files(path)) if split is None else ([], [])
    if parquet and not jsons:
        tables = []
        for f in parquet:
            with naming(f):
                tables.append(pq.ParquetFile(f).read())
        t = _concat(tables)
        return t, t.num_rows
    if jsons and not parquet:
        tables, total, offset = [], 0, 0
        for f in jsons:
            # Rows are numbered across the files in order (one running index).
            local = ReadRejects()
            with naming(f):
                t, n, span = _read_json_file(f, local)
            for row, field, reason, rec in local:
                bad.append((row + offset, field, f"{f.name}: {reason}", rec))
            bad.keep(r + offset for r in local.kept or [])
            tables.append(t)
            total += n
            offset += span
        return _concat(tables), total
    import datasets

    t = _from_dataset(datasets.load_dataset(str(path), split=split), split)
    return t, t.num_rows


def _read(source: Any, split: str | None, bad: ReadRejects) -> tuple[pa.Table, int]:
    if isinstance(source, pa.Table):
        return source, source.num_rows
    if isinstance(source, pa.RecordBatch):
        return pa.Table.from_batches([source]), source.num_rows
    mod = type(source).__module__.split(".")[0]
    if mod == "polars":
        import polars as pl

        if isinstance(source, pl.LazyFrame):
            source = source.collect()
        return source.to_arrow(), source.height
    if mod == "pandas":
        return _from_pandas(source, bad)
    if mod == "datasets":
        t = _from_dataset(source, split)
        return t, t.num_rows
    if isinstance(source, str | os.PathLike):
        path = Path(source).expanduser()
        if path.exists():
            return _read_path(path, split, bad)
        text = str(source)
        if not is_hub_name(text):
            raise FileNotFoundError(f"no such file or folder: {text}")
        t = _from_dataset(hub_dataset(text, split), split)  # a Hub dataset name
        return t, t.num_rows
    raise TypeError(
        f"cannot read {type(source).__name__}: expected a path, a Hub name, a pyarrow Table, "
        "a polars or pandas DataFrame or a datasets Dataset"
    )


def read_records(source: Any, *, split: str | None = None) -> tuple[pa.Table, pa.Table]:
    """The raw table of ``source`` and the rows that could not be read (stage ``read``).

    ``raw.num_rows + rejects.num_rows`` is the number of input rows (non-blank lines for
    JSON Lines).

    >>> import polars as pl
    >>> raw, rejects = read_records(pl.DataFrame({"a": ["x"]}))
    >>> raw.schema.field("a").type
    DataType(string)
    """
    read = _read_counted(source, split)
    return read.table, read.rejects


@dataclass
class _Read:
    """A whole source read: the table, its read rejects, the input row of each table row
    (the numbers rejects use), and the input rows (non-blank lines for JSON Lines)."""

    table: pa.Table
    rejects: pa.Table
    rows: np.ndarray
    rows_in: int


def _read_counted(source: Any, split: str | None) -> _Read:
    bad = ReadRejects()
    table, n = _read(source, split, bad)
    table = plain_table(table)
    rejects = bad.table()
    if table.num_rows + rejects.num_rows != n:
        raise AssertionError(
            f"read: {n} rows in, {table.num_rows} read, {rejects.num_rows} rejected"
        )
    return _Read(table, rejects, bad.rows(table.num_rows), n)


# --------------------------------------------------------------------------- streamed

BATCH_ROWS = 1 << 18  # rows of a streamed batch at most
BATCH_BYTES = 64 << 20  # and about this many bytes of text (JSON) or decoded data


def _json_line_batches(paths: Sequence[Path]) -> Iterator[RawBatch]:
    """JSON Lines files in batches of about :data:`BATCH_BYTES` of text; rows numbered by
    line across the files, as :func:`read_records` numbers them."""
    offset = 0
    for path in paths:
        with naming(path):
            offset = yield from _json_file_batches(path, offset, len(paths))


def _json_file_batches(path: Path, offset: int, files: int) -> Iterator[RawBatch]:
    """One JSON file's batches (rows numbered from ``offset``, file names in reasons when
    there are several ``files``); returns the offset for the next file."""
    if path.name.endswith((".json", ".json.gz")) and _first_char(path) == "[":
        with _open_text(path) as fh:
            text = fh.read(BATCH_BYTES + 1)
            if len(text) > BATCH_BYTES:
                return (yield from _json_array_batches(_Ahead(text, fh), path, offset, files))
        bad = ReadRejects()
        t, n, span = _json_array_text(text, bad, path)
        yield RawBatch(plain_table(t), _shifted(bad, offset, path, files), n, bad.rows(0) + offset)
        return offset + span
    start = 0
    for chunk in _line_chunks(path):
        yield _json_batch(chunk, start, offset, path, files)
        start += len(chunk)
    if start == 0:  # no lines: one empty batch
        yield _json_batch([], 0, offset, path, files)
    return offset + start


def _json_array_batches(fh: Any, path: Path, offset: int, files: int) -> Iterator[RawBatch]:
    """The JSON array of ``path`` read from ``fh`` in batches, one per piece
    (:func:`_json_array_pieces`); returns the offset for the next file."""
    items = 0
    for table, n, bad in _json_array_pieces(fh, path):
        yield RawBatch(
            plain_table(table), _shifted(bad, offset, path, files), n, bad.rows(0) + offset
        )
        items += n
    return offset + items


def _json_array_pieces(fh: Any, path: Path) -> Iterator[tuple[pa.Table, int, ReadRejects]]:
    """(table, items, rejects) of each piece of the JSON array read from ``fh``: whole
    items of about :data:`BATCH_BYTES` (:func:`~prefdata.io.json_arrays.parsed_pieces`),
    numbered across the pieces."""
    first = 0  # the item number of the next piece's first item

    def parse(piece: Piece) -> tuple[Piece, pa.Table, int, ReadRejects]:
        bad = ReadRejects()
        table, n = _json_items(b"[" + piece.text + b"]", bad, first, piece.within, path)
        return piece, table, n, bad

    empty: Piece | None = None  # a piece with no item is an error unless it is the array
    try:
        for piece, table, n, bad in parsed_pieces(fh, BATCH_BYTES, parse):
            if empty is not None or (first and not n):
                blank = empty or piece
                raise ArrayError(f"Expecting value at {blank.where(len(blank.text))}")
            empty = None if n else piece
            yield table, n, bad
            first += n
    except ArrayError as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from None


def _line_chunks(path: Path) -> Iterator[list[bytes]]:
    """The file's lines in chunks: each ends at the first line that brings it to
    :data:`BATCH_BYTES` of text or :data:`BATCH_ROWS` lines; the rest is the last chunk."""
    pending: list[bytes] = []
    for got in _line_blocks(path):
        lines = pending + got if pending else got
        done = 0
        for end in _chunk_ends(lines):
            yield lines[done:end]
            done = end
        pending = lines[done:]
    if pending:
        yield pending


def _line_blocks(path: Path) -> Iterator[list[bytes]]:
    """The file's lines in blocks of about :data:`BATCH_BYTES`: a plain file's by
    ``readlines`` (in C), a gzip file's line by line (a damaged one gives the lines
    before the damage, then its marker)."""
    if not path.name.endswith(".gz"):
        with open(path, "rb") as fh:
            while got := fh.readlines(BATCH_BYTES):
                yield got
        return
    block: list[bytes] = []
    size = 0
    for line in _lines(path):
        block.append(line)
        size += len(line)
        if size >= BATCH_BYTES:
            yield block
            block, size = [], 0
    if block:
        yield block


def _chunk_ends(lines: list[bytes]) -> list[int]:
    """Where each complete chunk of ``lines`` ends (:func:`_line_chunks`' rule), found
    on the running byte count."""
    csum = np.cumsum(np.fromiter(map(len, lines), np.int64, len(lines)))
    ends, base, start = [], 0, 0
    while start < len(lines):
        by_bytes = int(np.searchsorted(csum, base + BATCH_BYTES, side="left"))
        last = min(by_bytes, start + BATCH_ROWS - 1)
        if last >= len(lines):
            break
        ends.append(last + 1)
        base, start = int(csum[last]), last + 1
    return ends


def _json_batch(lines: list[bytes], start: int, offset: int, path: Path, files: int) -> RawBatch:
    bad = ReadRejects()
    t, n, _ = _read_json_lines(lines, bad, start)
    return RawBatch(plain_table(t), _shifted(bad, offset, path, files), n, bad.rows(0) + offset)


def _shifted(bad: ReadRejects, offset: int, path: Path, files: int) -> pa.Table:
    if files > 1:
        bad = ReadRejects(
            (row + offset, f, f"{path.name}: {reason}", rec) for row, f, reason, rec in bad
        )
    elif offset:
        bad = ReadRejects((row + offset, f, reason, rec) for row, f, reason, rec in bad)
    return bad.table()


def _parquet_batches(paths: Sequence[Path]) -> Iterator[RawBatch]:
    for path in paths:
        with naming(path):
            yield from _parquet_file_batches(path)


def _parquet_file_batches(path: Path) -> Iterator[RawBatch]:
    """A Parquet file's row groups, consecutive small ones read together up to
    :data:`BATCH_ROWS` rows and :data:`BATCH_BYTES` decoded (a prompt repeated across a
    shuffled file is then digested in fewer batches), a very large one cut."""
    file = pq.ParquetFile(path)
    groups: list[int] = []
    rows = size = 0

    def flush() -> RawBatch:
        t = plain_table(file.read_row_groups(groups))
        groups.clear()
        return RawBatch(t, ReadRejects().table(), t.num_rows)

    for g in range(file.num_row_groups):
        meta = file.metadata.row_group(g)
        if groups and (
            rows + meta.num_rows > BATCH_ROWS or size + meta.total_byte_size > BATCH_BYTES
        ):
            yield flush()
            rows = size = 0
        if meta.total_byte_size > 4 * BATCH_BYTES:
            step = max(1, int(meta.num_rows * BATCH_BYTES / meta.total_byte_size))
            for batch in file.iter_batches(batch_size=step, row_groups=[g]):
                yield RawBatch(
                    plain_table(pa.Table.from_batches([batch])),
                    ReadRejects().table(),
                    batch.num_rows,
                )
            continue
        groups.append(g)
        rows, size = rows + meta.num_rows, size + meta.total_byte_size
    if groups or not file.num_row_groups:
        yield flush()


def _table_batches(read: _Read) -> Iterator[RawBatch]:
    table, rejects, n = read.table, read.rejects, read.rows_in
    rows = BATCH_ROWS
    if table.num_rows and table.nbytes > BATCH_BYTES:
        rows = max(1, min(rows, int(table.num_rows * BATCH_BYTES / table.nbytes)))
    if not table.num_rows:
        yield RawBatch(table, rejects, n, read.rows)
        return
    for k, start in enumerate(range(0, table.num_rows, rows)):
        part = table.slice(start, rows)
        yield RawBatch(
            part,
            rejects if k == 0 else ReadRejects().table(),
            part.num_rows + (n - table.num_rows if k == 0 else 0),
            read.rows[start : start + rows],
        )


def saved_dataset_files(path: Path, split: str | None = None) -> list[Path] | None:
    """The Arrow stream files of a ``datasets`` ``save_to_disk`` folder, in row order (for a
    ``DatasetDict``, those of ``split``, or of its only split); None when ``path`` is not
    such a folder or its ``state.json`` lists no files (then ``datasets`` reads it).

    ``save_to_disk`` writes the rows themselves (an ``indices`` mapping from ``select`` or
    ``shuffle`` is applied first), so the files are the dataset, read without ``datasets``.
    """
    if (path / "dataset_dict.json").exists():
        splits = _json_file(path / "dataset_dict.json").get("splits") or []
        if not isinstance(splits, list) or not all(isinstance(x, str) for x in splits):
            raise ValueError(f"{path / 'dataset_dict.json'}: 'splits' is not a list of names")
        if split is None:
            if len(splits) != 1:
                raise ValueError(f"the dataset has splits {splits}; pass split=")
            split = splits[0]
        if split not in splits:
            raise KeyError(f"no split {split!r}; the dataset has {splits}")
        return saved_dataset_files(path / split)
    if split is not None or not (path / "state.json").exists():
        return None
    state = _json_file(path / "state.json")
    if state.get("_data_files") == []:  # what datasets writes for no rows, and cannot load
        raise ValueError(f"{path}: the saved dataset has no data files (no rows)")
    names = [f.get("filename") for f in state.get("_data_files") or () if isinstance(f, dict)]
    if not names or not all(isinstance(n, str) for n in names):
        return None  # not what save_to_disk writes: datasets reads it, or says why not
    files = [path / n for n in names]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"{path}: state.json lists {missing[0]}, which is not there")
    return files


def _json_file(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def stream_files(source: Any, split: str | None = None) -> list[Path] | None:
    """The files a source streams from (Parquet, JSON Lines, one CSV file, the Arrow files
    of a ``save_to_disk`` folder, or those a Hub dataset or a ``datasets.Dataset`` reads,
    :func:`dataset_files`), or None when it is read whole (in-memory objects, a ``split``
    of a local path other than a saved ``DatasetDict``)."""
    if type(source).__module__.split(".")[0] == "datasets":
        return dataset_files(_one_split(source, split))
    if not isinstance(source, str | os.PathLike):
        return None
    path = Path(source).expanduser()
    if not path.exists() and is_hub_name(source):
        return dataset_files(hub_dataset(str(source), split))
    if path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
        with naming(path):
            return saved_dataset_files(path, split)
    if split is not None:
        return None
    if path.is_file():
        name = path.name.lower()
        return [path] if name.endswith((".parquet", ".csv", *_JSON_SUFFIXES)) else None
    if path.is_dir():
        parquet, jsons = _parquet_files(path), _json_files(path)
        if bool(parquet) != bool(jsons):
            return parquet or jsons
    return None


def _arrow_stream_batches(paths: Sequence[Path]) -> Iterator[RawBatch]:
    """A ``save_to_disk`` folder's Arrow stream files in batches of at most
    :data:`BATCH_ROWS` rows and about :data:`BATCH_BYTES` (``datasets`` writes record
    batches of 1,000 rows by default: they are gathered, and larger ones cut)."""
    pending: list[pa.RecordBatch] = []
    rows = size = 0
    schema, seen = None, False

    def flush() -> RawBatch:
        nonlocal rows, size, seen
        seen = True
        t = plain_table(pa.Table.from_batches(pending).combine_chunks())
        pending.clear()
        rows = size = 0
        return RawBatch(t, ReadRejects().table(), t.num_rows)

    for path in paths:
        # read, not memory-mapped: a batch must not change if the file is rewritten
        with naming(path), pa.OSFile(str(path)) as source:
            reader = ipc.open_stream(source)
            schema = schema or reader.schema
            for batch in reader:
                step = BATCH_ROWS
                if batch.num_rows and batch.nbytes > BATCH_BYTES:
                    step = max(1, min(step, int(batch.num_rows * BATCH_BYTES / batch.nbytes)))
                for start in range(0, batch.num_rows, step):
                    piece = batch.slice(start, step)
                    if pending and (
                        rows + piece.num_rows > BATCH_ROWS or size + piece.nbytes > BATCH_BYTES
                    ):
                        yield flush()
                    pending.append(piece)
                    rows, size = rows + piece.num_rows, size + piece.nbytes
            if pending:
                yield flush()
    if not seen and schema is not None:  # no rows: the columns still say what is missing
        yield RawBatch(plain_table(schema.empty_table()), ReadRejects().table(), 0)


def read_batches(source: Any, *, split: str | None = None) -> Iterator[RawBatch]:
    """:func:`read_records` in batches, in input order: Parquet a few row groups at a time
    (:data:`BATCH_ROWS` rows and :data:`BATCH_BYTES` decoded at most), JSON Lines and CSV
    about :data:`BATCH_BYTES` of text at a time, a JSON array larger than that in pieces
    of whole items (:mod:`prefdata.io.json_arrays`), the Arrow files of a
    ``save_to_disk`` folder, a Hub dataset or a ``datasets.Dataset``
    (:func:`stream_files`) record batch by record batch (memory stays a batch); other
    sources are read whole, then cut. The same rows and rejects as :func:`read_records`,
    except that a JSON field whose kind disagrees across rows is judged within its batch.

    >>> [b.table.num_rows for b in read_batches(pa.table({"a": [1, 2, 3]}))]
    [3]
    """
    files = stream_files(source, split)
    if files and files[0].name.lower().endswith(".parquet"):
        batches = _parquet_batches(files)
    elif files and files[0].name.lower().endswith(".arrow"):
        batches = _arrow_stream_batches(files)
    elif files and files[0].name.lower().endswith(".csv"):
        batches = _named(files[0], csv_batches(files[0], BATCH_BYTES))
    elif files:
        batches = _json_line_batches(files)
    else:
        batches = _table_batches(_read_counted(source, split))
    yield from _with_earlier_columns(batches)


def _named(path: Path, batches: Iterator[RawBatch]) -> Iterator[RawBatch]:
    with naming(path):
        yield from batches


def _with_earlier_columns(batches: Iterable[RawBatch]) -> Iterator[RawBatch]:
    """``batches``, each with the columns of the batches before it that it lacks, as
    nulls (first the columns seen before, in their order, then its own new ones), as a
    whole read gives them: JSON rows of a batch may all lack a key that earlier rows hold.

    >>> three = [RawBatch(pa.table({"a": [1], "b": ["x"]}), ReadRejects().table(), 1),
    ...          RawBatch(pa.table({"c": [2.0], "a": [3]}), ReadRejects().table(), 1),
    ...          RawBatch(pa.table({"a": [4]}), ReadRejects().table(), 1)]
    >>> [b.table.to_pylist() for b in _with_earlier_columns(three)]
    [[{'a': 1, 'b': 'x'}], [{'a': 3, 'b': None, 'c': 2.0}], [{'a': 4, 'b': None, 'c': None}]]
    """
    seen: dict[str, pa.DataType] = {}
    for batch in batches:
        table = batch.table
        if seen and table.column_names[: len(seen)] != list(seen):
            n, have = table.num_rows, set(table.column_names)
            known = [table[k] if k in have else pa.nulls(n, seen[k]) for k in seen]
            new = [k for k in table.column_names if k not in seen]
            table = pa.table([*known, *(table[k] for k in new)], names=[*seen, *new])
            batch = RawBatch(table, batch.rejects, batch.rows_in, batch.rows)
        seen.update((f.name, f.type) for f in table.schema if f.name not in seen)
        yield batch


def source_label(source: Any, split: str | None) -> str | None:
    """The pools' ``source`` for a path or Hub name (with ``:split``), else None."""
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        name = path.name if path.exists() else str(source)
        return f"{name}:{split}" if split else name
    return None


def read_pools(
    source: Any,
    layout: str = "pool",
    *,
    split: str | None = None,
    source_name: str | None = None,
    **options: Any,
) -> PipelineResult:
    """Read ``source`` and build pools in ``layout``. ``options`` are the columns the layout
    reads (:class:`prefdata.io.layouts.LayoutOptions`: prompt_col, response_col,
    generator_col, score_cols, id_col, chosen_col, rejected_col, margin_col,
    chosen_score_col, rejected_score_col, score_name); see :func:`prefdata.io.layouts.to_pools`.

    The funnel has two entries, counted in input rows: ``read`` (records in, rows read,
    rows rejected) and ``layout:<name>`` (rows read, rows that became part of a pool, rows
    rejected). The number of pools is ``result.table.num_rows``. ``source`` of each pool is
    ``source_name``, else the file or Hub name (with ``:split`` when a split is given).
    ``chosen_score_col`` / ``rejected_score_col`` (pairs and hh, both or neither) put a score
    recorded per side, such as ultrafeedback_binarized's ``score_chosen`` /
    ``score_rejected``, on each candidate as ``scores[score_name]``; the options are checked
    before anything is read.

    >>> import pyarrow as pa
    >>> r = read_pools(pa.table({"prompt": ["Q", "Q"], "chosen": ["A", "C"],
    ...                          "rejected": ["B", "D"]}), "pairs")
    >>> r.table.num_rows, r.funnel.entries[1].rows_out
    (1, 2)
    """
    # Bad options fail before a possibly long read.
    LayoutOptions(**options).check(layout)
    read = _read_counted(source, split)
    raw, read_rejects, n = read.table, read.rejects, read.rows_in
    name = source_name if source_name is not None else source_label(source, split)
    out = to_pools(raw, layout, source_name=name, rows=read.rows, **options)
    funnel = Funnel()
    funnel.add(STAGE, n, raw.num_rows, read_rejects.num_rows)
    stage = f"layout:{layout}"
    funnel.add(stage, raw.num_rows, raw.num_rows - out.rejects.num_rows, out.rejects.num_rows)
    return PipelineResult(out.table, pa.concat_tables([read_rejects, out.rejects]), funnel)


__all__ = [
    "RawBatch",
    "read_batches",
    "read_pools",
    "read_records",
    "source_label",
    "stream_files",
]
