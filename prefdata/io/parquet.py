"""Parquet in and out for pool tables.

Parquet cannot store a struct with no fields, so a pool table with no scorer yet is written
with the ``scores`` field left out of the candidate struct; :func:`read_parquet` restores it.
Writes are atomic: a temp file in the same folder, then a rename.

Dictionary encoding is off: pool and pair columns are mostly unique strings (ids,
responses), where the writer would build a dictionary, overflow it and fall back to plain
anyway. Without it writes are 2-2.5x faster and zstd files smaller (a 10,000-pool shard of
8 candidates: 127 -> 50 ms, 5.5 -> 4.3 MB); repeated values (roles, generators,
provenance) still compress well under zstd.

The executor's own shard files are Arrow IPC files (:mod:`prefdata.io.shards`). Files for
people (``convert``, ``Pools.write``) are Parquet with zstd and their statistics, so DuckDB
and polars can skip row groups.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from prefdata.io.atomic import atomic_path
from prefdata.schema import conform, conform_types, empty_scores, pool_schema

WRITE_OPTIONS = {"row_group_size": 64 * 1024, "use_dictionary": False}


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


def write_parquet(
    table: pa.Table,
    path: str | os.PathLike,
    *,
    statistics: bool = True,
    compression: str = "zstd",
) -> Path:
    """Write ``table`` to ``path`` atomically (temp file, fsync, rename); ``statistics``:
    write column min/max."""
    return atomic_path(
        path,
        lambda tmp: pq.write_table(
            _for_parquet(table),
            str(tmp),
            write_statistics=statistics,
            compression=compression,
            **WRITE_OPTIONS,
        ),
    )


def write_parquet_files(
    paths: Sequence[str | os.PathLike], path: str | os.PathLike, *, compression: str = "zstd"
) -> Path:
    """Table files of one schema (Parquet, or a run's Arrow IPC shards) copied into one
    Parquet file, group by group, atomically: memory stays one group, whatever the size.
    The same layout and options as :func:`write_parquet`."""
    from prefdata.io.shards import TableFile

    def write(tmp: Path) -> None:
        writer = None
        try:
            for src in paths:
                file = TableFile(src)
                for g in range(file.num_groups):
                    table = _for_parquet(from_parquet_layout(file.read_group(g)))
                    if writer is None:
                        writer = pq.ParquetWriter(
                            str(tmp), table.schema, compression=compression,
                            write_statistics=True, use_dictionary=False,
                        )  # fmt: skip
                    writer.write_table(table, row_group_size=WRITE_OPTIONS["row_group_size"])
        finally:
            if writer is not None:
                writer.close()

    return atomic_path(path, write)


def read_parquet(path: str | os.PathLike | list) -> pa.Table:
    """Read one Parquet file (or a list of them) and conform pool tables."""
    paths = path if isinstance(path, list) else [path]
    tables = [from_parquet_layout(pq.read_table(p)) for p in paths]
    if not tables:
        raise FileNotFoundError("no Parquet files given")
    return pa.concat_tables(tables, promote_options="default")


def parquet_files(source: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """The table files of a path, a folder (its ``*.parquet``, or else the ``*.arrow``
    shards the executor writes, sorted) or a list of them.

    >>> parquet_files("missing.parquet")
    Traceback (most recent call last):
    ...
    FileNotFoundError: input not found: missing.parquet
    """
    items = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    paths: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(p.glob("*.parquet")) or sorted(p.glob("*.arrow"))
            if not found:
                raise FileNotFoundError(f"no *.parquet or *.arrow files in {p}")
            paths.extend(found)
        elif p.exists():
            paths.append(p)
        else:
            raise FileNotFoundError(f"input not found: {p}")
    if not paths:
        raise FileNotFoundError("no input files given")
    return paths


# --------------------------------------------------------------------------- parallel read

# Below this many decoded bytes a row group is read on one thread (threads cost more).
PARALLEL_MIN_BYTES = 4 << 20


def read_row_group(
    path: str | os.PathLike,
    group: int,
    *,
    columns: Sequence[str] | None = None,
    threads: int | None = None,
    metadata=None,
) -> pa.Table:
    """Row group ``group`` of a Parquet file, its leaf columns decoded on ``threads``
    threads (default: the CPU count, at most 4; 1: on the calling thread alone), then put
    back together. ``columns`` selects columns or nested fields by dotted path
    (``"candidates.list.element.scores"``), as pyarrow does; None reads every column.

    pyarrow decodes a row group one top-level column per thread, so a pool table, whose
    bytes are almost all in the one ``candidates`` column, decodes on one core. Here the
    leaves (``candidates.list.element.response``, ``...scores.a``, ...) are split into
    groups of about equal decoded size, each read by its own reader, and the partial
    nested columns are merged (the list offsets and null masks of every part are the same).
    The result equals ``pq.ParquetFile(path).read_row_group(group)``.

    >>> read_row_group("pools.parquet", 0).num_rows  # doctest: +SKIP
    65536
    """
    pf = pq.ParquetFile(path, metadata=metadata)
    meta = pf.metadata.row_group(group)
    threads = threads or min(os.cpu_count() or 1, 4)
    whole = pf.schema_arrow
    chosen = list(range(meta.num_columns))
    in_order = True
    if columns is not None:  # pyarrow's rule: a name is a dotted prefix of a leaf's path
        paths = pf.reader.column_paths
        prefixes = [{".".join(p[:k]) for k in range(1, len(p) + 1)} for p in paths]
        chosen = [j for j, pre in enumerate(prefixes) if pre & set(columns)]
        # pyarrow returns columns in the order asked; merged parts come in file order
        owners = list(zip(paths, prefixes, strict=True))
        asked = [next((p[0] for p, pre in owners if c in pre), c) for c in columns]
        asked = list(dict.fromkeys(asked))
        in_order = asked == [f.name for f in whole if f.name in asked]
    size = sum(meta.column(j).total_uncompressed_size for j in chosen)
    if (
        threads < 2
        or len(chosen) < 2
        or size < PARALLEL_MIN_BYTES
        or not in_order
        or len(set(whole.names)) != len(whole.names)
        or not all(_mergeable(f.type) for f in whole)
    ):  # pyarrow's own threads (a top-level column each) unless one thread was asked for
        return pf.read_row_group(group, columns=columns, use_threads=threads > 1)
    parts = [
        [chosen[k] for k in part]
        for part in _balanced([meta.column(j).total_uncompressed_size for j in chosen], threads)
    ]

    # repetitive strings (generators, finish reasons, roles) decode far faster as a
    # dictionary and are made plain again after (22 -> 10 ms per 65k rows of one here)
    repeated = [pf.schema.column(j).path for j in chosen if _repetitive(meta.column(j))]

    def read(indices: list[int]) -> pa.Table:
        # a reader per thread (one is not safe to share); leaves by index, since a dotted
        # name such as "scores.a" would also select a leaf "scores.a.z"
        reader = pq.ParquetFile(path, metadata=pf.metadata, read_dictionary=repeated).reader
        part = reader.read_row_group(group, column_indices=indices, use_threads=False)
        if not repeated:
            return part
        fields = [f.with_type(_restore(f.type, whole.field(f.name).type)) for f in part.schema]
        return part.cast(pa.schema(fields, metadata=part.schema.metadata))

    with ThreadPoolExecutor(len(parts)) as pool:
        tables = list(pool.map(read, parts))
    if any(c.num_chunks != 1 for t in tables for c in t.columns):
        del tables  # a column over 2 GB comes in chunks: no merging
        return pf.read_row_group(group, columns=columns)
    fields, arrays = [], []
    for field in whole:  # the fields some part read, in schema order
        have = [t.column(field.name).chunk(0) for t in tables if field.name in t.column_names]
        if have:
            arrays.append(_merge(have, field.type))
            fields.append(pa.field(field.name, arrays[-1].type, field.nullable, field.metadata))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields, metadata=whole.metadata))


def _repetitive(column) -> bool:
    """A dictionary-encoded string leaf of under 4 decoded bytes a value (the dictionary
    held: the values repeat)."""
    return (
        column.has_dictionary_page
        and column.physical_type == "BYTE_ARRAY"
        and column.total_uncompressed_size < 4 * max(column.num_values, 1)
    )


def _restore(t: pa.DataType, like: pa.DataType) -> pa.DataType:
    """``t`` (a partial read) with each leaf read as a dictionary for speed given back its
    type in the file schema, ``like``, at the same place.

    >>> _restore(pa.struct([("g", pa.dictionary(pa.int32(), pa.string()))]),
    ...          pa.struct([("g", pa.large_string()), ("n", pa.int64())]))
    StructType(struct<g: large_string>)
    """
    if pa.types.is_dictionary(t):
        return t if pa.types.is_dictionary(like) else like
    if pa.types.is_struct(t):
        return pa.struct([f.with_type(_restore(f.type, like.field(f.name).type)) for f in t])
    if pa.types.is_list(t):
        return pa.list_(t.value_field.with_type(_restore(t.value_type, like.value_type)))
    if pa.types.is_large_list(t):
        return pa.large_list(t.value_field.with_type(_restore(t.value_type, like.value_type)))
    return t


def _balanced(sizes: list[int], bins: int) -> list[list[int]]:
    """Indices of ``sizes`` split into at most ``bins`` groups of about equal total (the
    largest first, each into the lightest group), each group in ascending order.

    >>> _balanced([5, 1, 4, 2], 2)
    [[0, 1], [2, 3]]
    """
    load = [0] * bins
    groups: list[list[int]] = [[] for _ in range(bins)]
    for j in sorted(range(len(sizes)), key=lambda j: -sizes[j]):
        b = load.index(min(load))
        load[b] += sizes[j]
        groups[b].append(j)
    return [sorted(g) for g in groups if g]


def _mergeable(type: pa.DataType) -> bool:
    """Whether :func:`_merge` can join partial reads of a column of this type."""
    if pa.types.is_struct(type):
        return all(_mergeable(f.type) for f in type)
    if pa.types.is_list(type) or pa.types.is_large_list(type):
        return _mergeable(type.value_type)
    return not pa.types.is_nested(type) and not isinstance(type, pa.ExtensionType)


def _merge(parts: list[pa.Array], type: pa.DataType) -> pa.Array:
    """One column from partial reads that each hold some of its leaves (``type`` is the
    whole column's; fields no part read are left out, as pyarrow prunes them)."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    mask = first.is_null() if first.null_count else None
    if pa.types.is_struct(type):
        fields, children = [], []
        for f in type:
            have = [p.field(f.name) for p in parts if p.type.get_field_index(f.name) >= 0]
            if have:
                children.append(_merge(have, f.type))
                fields.append(pa.field(f.name, children[-1].type, f.nullable, f.metadata))
        return pa.StructArray.from_arrays(children, fields=fields, mask=mask)
    if pa.types.is_list(type) or pa.types.is_large_list(type):
        values = _merge([p.values for p in parts], type.value_type)
        item = type.value_field.with_type(values.type)  # named as in the file schema
        kind = pa.large_list(item) if pa.types.is_large_list(type) else pa.list_(item)
        cls = pa.LargeListArray if pa.types.is_large_list(type) else pa.ListArray
        return cls.from_arrays(first.offsets, values, type=kind, mask=mask)
    raise TypeError(f"leaf column of type {type} read twice")


__all__ = [
    "from_parquet_layout",
    "parquet_files",
    "read_parquet",
    "read_row_group",
    "write_parquet",
]
