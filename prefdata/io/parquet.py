"""Parquet in and out for pool tables.

Parquet cannot store a struct with no fields, so a pool table with no scorer yet is written
with the ``scores`` field left out of the candidate struct; :func:`read_parquet` restores it.
Writes are atomic: a temp file in the same folder, then a rename.

Dictionary encoding is off: pool and pair columns are mostly unique strings (ids,
responses), where the writer would build a dictionary, overflow it and fall back to plain
anyway. Without it writes are 2-2.5x faster and zstd files smaller (a 10,000-pool shard of
8 candidates: 127 -> 50 ms, 5.5 -> 4.3 MB); repeated values (roles, generators,
provenance) still compress well under zstd.

Column statistics (min/max per page and row group) are off for the executor's own shard
files, which nothing filters on: computing them on string columns was 40% of the write
time (a 10,000-pair shard: 21 -> 12 ms). Files for people (``convert``, ``Pools.write``)
keep them, so DuckDB and polars can skip row groups.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from prefdata.io.atomic import atomic_path
from prefdata.schema import conform, conform_types, empty_scores, pool_schema

WRITE_OPTIONS = {"compression": "zstd", "row_group_size": 64 * 1024, "use_dictionary": False}


def _is_pools(schema: pa.Schema) -> bool:
    return {"prompt_id", "prompt", "candidates"} <= set(schema.names)


def _for_parquet(table: pa.Table) -> pa.Table:
    """Drop an empty ``scores`` struct from the candidates (Parquet cannot hold it)."""
    if not _is_pools(table.schema):
        return table
    cand = table.schema.field("candidates").type.value_type
    if cand.get_field_index("scores") < 0 or cand.field("scores").type.num_fields:
        return table
    slim = pa.struct([f for f in cand if f.name != "scores"])
    i = table.schema.get_field_index("candidates")
    return table.set_column(i, "candidates", table["candidates"].cast(pa.list_(slim)))


def from_parquet_layout(table: pa.Table) -> pa.Table:
    """Undo :func:`_for_parquet` and conform a pool table; other tables get plain types."""
    table = conform_types(table)
    if not _is_pools(table.schema):
        return table
    cand = table.schema.field("candidates").type.value_type
    if cand.get_field_index("scores") < 0:
        i = table.schema.get_field_index("candidates")
        table = table.set_column(i, "candidates", _with_empty_scores(table["candidates"]))
    return conform(table)


def _with_empty_scores(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Add a valid (not null) empty ``scores`` struct to every candidate."""
    chunks = []
    for lst in column.chunks:
        structs = lst.values
        children = [structs.field(j) for j in range(structs.type.num_fields)]
        names = [f.name for f in structs.type]
        empty = empty_scores(len(structs))
        rebuilt = pa.StructArray.from_arrays(
            children + [empty], names=names + ["scores"], mask=structs.is_null()
        )
        chunks.append(pa.ListArray.from_arrays(lst.offsets, rebuilt, mask=lst.is_null()))
    target = pool_schema().field("candidates").type
    return pa.chunked_array(chunks, type=pa.list_(rebuilt.type) if chunks else target).cast(target)


def write_parquet(table: pa.Table, path: str | os.PathLike, *, statistics: bool = True) -> Path:
    """Write ``table`` to ``path`` atomically (temp file, fsync, rename); ``statistics``:
    write column min/max (off for the executor's shard files)."""
    return atomic_path(
        path,
        lambda tmp: pq.write_table(
            _for_parquet(table), str(tmp), write_statistics=statistics, **WRITE_OPTIONS
        ),
    )


def read_parquet(path: str | os.PathLike | list) -> pa.Table:
    """Read one Parquet file (or a list of them) and conform pool tables."""
    paths = path if isinstance(path, list) else [path]
    tables = [from_parquet_layout(pq.read_table(p)) for p in paths]
    if not tables:
        raise FileNotFoundError("no Parquet files given")
    return pa.concat_tables(tables, promote_options="default")


__all__ = ["from_parquet_layout", "read_parquet", "write_parquet"]
