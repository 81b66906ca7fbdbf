"""The executor's own shard files, and one reader for them and for Parquet inputs.

Internal shards (ingest pool shards, stage outputs and rejects, copied input shards) are
Arrow IPC *files* (``.arrow``): record batches of at most 64k rows in the role of row
groups, uncompressed, so a read is a memory map and costs almost nothing (a 65k-pool
shard of 74 MB: written in 0.023 s and read in ~0 s, against 0.28 s and 0.22 s as LZ4
Parquet; 0.10 s and 0.035 s as LZ4 IPC). On ``benchmarks/bench_construct.py --layout
long --prompts 200000`` (2 CPUs) the recipe took 10.3 s and 15.2 CPU s uncompressed, 10.6
and 16.5 with LZ4, 12.4 and 18.9 with LZ4 Parquet; the work folder is 2.2x the Parquet
one's (565 against 260 MB; LZ4 IPC 313 MB). Files for people and other tools (exports,
``convert``, ``Pools.write``, ``rejects.parquet``) stay Parquet.

:class:`TableFile` opens either kind by suffix and gives its schema, rows, groups (Parquet
row groups or IPC record batches) and reads them; :func:`read_files` reads whole files
conformed as :func:`~prefdata.io.parquet.read_parquet` does.

>>> import tempfile
>>> path = write_shard(pa.table({"x": [1, 2, 3]}), Path(tempfile.mkdtemp()) / "s.arrow")
>>> f = TableFile(path)
>>> (f.num_rows, f.num_groups, f.read_group(0)["x"].to_pylist())
(3, 1, [1, 2, 3])
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from prefdata.io.atomic import atomic_path
from prefdata.io.parquet import from_parquet_layout, read_row_group

SHARD_SUFFIX = ".arrow"
TABLE_SUFFIXES = (".parquet", SHARD_SUFFIX)
SHARD_BATCH_ROWS = 64 * 1024
SHARD_COMPRESSION: str | None = None  # see the module docstring


def write_shard(table: pa.Table, path: str | os.PathLike) -> Path:
    """Write an executor shard file atomically (temp file, rename; not synced to disk: a
    work-directory file, :mod:`prefdata.io.atomic`): Arrow IPC file format, record
    batches of at most 64k rows (an empty table: one empty batch, as Parquet writes one
    empty row group)."""

    def write(tmp: Path) -> None:
        options = ipc.IpcWriteOptions(compression=SHARD_COMPRESSION)
        with pa.OSFile(str(tmp), "wb") as sink:
            with ipc.new_file(sink, table.schema, options=options) as writer:
                if table.num_rows:
                    writer.write_table(table, max_chunksize=SHARD_BATCH_ROWS)
                else:
                    empty = [pa.array([], type=f.type) for f in table.schema]
                    writer.write_batch(pa.RecordBatch.from_arrays(empty, schema=table.schema))

    return atomic_path(path, write, durable=False)


def is_ipc(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an Arrow IPC file (by its suffix)."""
    return Path(path).suffix.lower() == SHARD_SUFFIX


class TableFile:
    """A Parquet file or an Arrow IPC file (by suffix), group by group: Parquet row groups
    or IPC record batches. Reads give the file's own layout (conform them with
    :func:`~prefdata.io.parquet.from_parquet_layout`). ``metadata``: a Parquet footer
    already parsed."""

    def __init__(self, path: str | os.PathLike, metadata: pq.FileMetaData | None = None) -> None:
        self.path = Path(path)
        if is_ipc(path):
            self._ipc = ipc.open_file(pa.memory_map(str(path)))
            self._parquet = None
        else:
            self._ipc = None
            self._parquet = pq.ParquetFile(path, metadata=metadata)

    @property
    def footer(self) -> pq.FileMetaData | None:
        """A Parquet file's parsed footer (to open it again without parsing); None for IPC."""
        return None if self._ipc else self._parquet.metadata

    @property
    def schema(self) -> pa.Schema:
        return self._ipc.schema if self._ipc else self._parquet.schema_arrow

    @property
    def num_groups(self) -> int:
        return self._ipc.num_record_batches if self._ipc else self._parquet.metadata.num_row_groups

    @property
    def num_rows(self) -> int:
        if self._ipc:
            return sum(self.group_rows(g) for g in range(self.num_groups))
        return self._parquet.metadata.num_rows

    def group_rows(self, group: int) -> int:
        if self._ipc:
            return self._ipc.get_batch(group).num_rows
        return self._parquet.metadata.row_group(group).num_rows

    def group_bytes(self, group: int) -> int:
        """The group's decoded size in bytes."""
        if self._ipc:
            return self._ipc.get_batch(group).nbytes
        return self._parquet.metadata.row_group(group).total_byte_size

    def columns_under(self, columns: Sequence[str]) -> list[str]:
        """What :meth:`read_group` needs to read the fields under the logical ``columns``
        (``"candidates.scores"``): Parquet leaf paths (the list levels' names vary by
        writer: ``list.element``, ``list.item``, ``bag.array_element``), or for IPC the
        top-level columns holding them."""
        wanted = [tuple(c.split(".")) for c in columns]
        if self._ipc:
            names = self.schema.names
            return list(dict.fromkeys(w[0] for w in wanted if w[0] in names))
        out = []
        for leaf in self._parquet.reader.column_paths:
            logical = tuple(p for p in leaf if p not in _LIST_LEVELS)
            if any(logical[: len(w)] == w for w in wanted):
                out.append(".".join(leaf))
        return out

    def read_group(
        self, group: int, columns: Sequence[str] | None = None, threads: int | None = None
    ) -> pa.Table:
        """Group ``group``; ``columns``: for Parquet, columns or nested fields by dotted
        path (see :func:`~prefdata.io.parquet.read_row_group`, which decodes on
        ``threads`` threads); for IPC, the top-level columns named (a dotted path selects
        its top-level column)."""
        if self._ipc:
            return self._select(pa.Table.from_batches([self._ipc.get_batch(group)]), columns)
        meta = self._parquet.metadata
        return read_row_group(self.path, group, columns=columns, threads=threads, metadata=meta)

    def read(self, columns: Sequence[str] | None = None) -> pa.Table:
        """The whole file (``columns`` as for :meth:`read_group`)."""
        if self._ipc:
            return self._select(self._ipc.read_all(), columns)
        return pq.read_table(self.path, columns=columns)

    def iter_batches(self, group: int, rows: int):
        """Group ``group`` in record batches of at most ``rows`` rows, streamed."""
        if self._ipc:
            yield from pa.Table.from_batches([self._ipc.get_batch(group)]).to_batches(rows)
            return
        yield from self._parquet.iter_batches(batch_size=rows, row_groups=[group])

    @staticmethod
    def _select(table: pa.Table, columns: Sequence[str] | None) -> pa.Table:
        if columns is None:
            return table
        return table.select(list(dict.fromkeys(c.split(".")[0] for c in columns)))


_LIST_LEVELS = {"list", "element", "item", "array_element", "bag", "array"}


def read_files(path: str | os.PathLike | Sequence[str | os.PathLike]) -> pa.Table:
    """Read one table file (Parquet or Arrow IPC) or a list of them, pool tables conformed
    (:func:`~prefdata.io.parquet.read_parquet`'s result for Parquet)."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    tables = [from_parquet_layout(TableFile(p).read()) for p in paths]
    if not tables:
        raise FileNotFoundError("no table files given")
    return pa.concat_tables(tables, promote_options="default")


def read_schema(path: str | os.PathLike) -> pa.Schema:
    """The schema stored in a Parquet or Arrow IPC file (no data read)."""
    return TableFile(path).schema


__all__ = [
    "SHARD_BATCH_ROWS",
    "SHARD_COMPRESSION",
    "SHARD_SUFFIX",
    "TABLE_SUFFIXES",
    "TableFile",
    "is_ipc",
    "read_files",
    "read_schema",
    "write_shard",
]
