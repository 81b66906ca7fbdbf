"""Candidate-level edits inside pools: adding flags and dropping candidates with a record.

Candidate drops are not row rejects (the pool row survives), so they are recorded in the
pool column ``dropped_candidates``: ``list<struct{candidate_id: string, reason: string}>``,
appended to by every stage that removes candidates (``CollapseIdenticalCandidates``,
``DropFlagged``). Pool rows themselves still go to the rejects table.

>>> import pyarrow as pa
>>> from prefdata.schema import pool_schema
>>> from prefdata.arrow import flatten_candidates
>>> t = pa.Table.from_pylist(
...     [{"prompt_id": "p", "prompt": [{"role": "user", "content": "q"}],
...       "candidates": [{"candidate_id": "a", "response": "", "flags": []},
...                      {"candidate_id": "b", "response": "ok", "flags": ["x"]}]}],
...     schema=pool_schema())
>>> flat = flatten_candidates(t)
>>> t = add_flags(t, flat, {"empty": np.array([True, False])})
>>> [c["flags"] for c in t["candidates"][0].as_py()]
[['empty'], ['x']]
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from prefdata.arrow import (
    FlatCandidates,
    flatten_candidates,
    offsets_of,
    rebuild_candidates,
    set_column,
    struct_with,
)

DROPPED = "dropped_candidates"
DROPPED_TYPE = pa.list_(pa.struct([("candidate_id", pa.string()), ("reason", pa.string())]))
FLAGS_TYPE = pa.list_(pa.string())


def add_flags(table: pa.Table, flat: FlatCandidates, flags: Mapping[str, np.ndarray]) -> pa.Table:
    """Add each flag name to the candidates where its mask is true (no duplicates; the
    existing flags keep their order, new ones follow in ``flags`` order). Only the
    candidates that gain a flag (or had null flags) are rebuilt."""
    old = pc.struct_field(flat.values, "flags").cast(FLAGS_TYPE)
    masks = {name: np.asarray(mask, dtype=bool) for name, mask in flags.items()}
    touched = np.zeros(len(old), bool)
    for mask in masks.values():
        touched |= mask
    if old.null_count:
        touched |= ~np.asarray(old.is_valid())
    idx = np.flatnonzero(touched)
    if not len(idx):
        return table
    sub = pc.fill_null(old.take(pa.array(idx)), pa.scalar([], FLAGS_TYPE))
    df = pl.DataFrame({"old": pl.Series(sub).cast(pl.List(pl.String))})
    parts = [pl.col("old")]
    for name, mask in masks.items():
        df = df.with_columns(pl.Series(f"__{name}", mask[idx]))
        parts.append(
            pl.when(pl.col(f"__{name}"))
            .then(pl.lit([name]))
            .otherwise(pl.lit([], pl.List(pl.String)))
        )
    changed = (
        df.select(pl.concat_list(parts).list.unique(maintain_order=True).alias("flags"))["flags"]
        .to_arrow()
        .cast(FLAGS_TYPE)
    )
    at = np.arange(len(old))
    at[idx] = len(old) + np.arange(len(idx))
    new = pa.concat_arrays([old, changed]).take(pa.array(at))
    values = struct_with(flat.values, flags=new)
    return rebuild_candidates(table, flat, values)


def candidate_flags(table: pa.Table) -> tuple[FlatCandidates, pl.Series]:
    """Flattened candidates and their flags as a polars list column."""
    flat = flatten_candidates(table)
    flags = pc.struct_field(flat.values, "flags")
    flags = pc.fill_null(flags, pa.scalar([], FLAGS_TYPE)) if len(flags) else flags
    return flat, pl.Series(flags.cast(FLAGS_TYPE)).cast(pl.List(pl.String))


def drop_candidates(
    table: pa.Table, flat: FlatCandidates, drop: np.ndarray, reasons: np.ndarray
) -> pa.Table:
    """Remove candidates where ``drop`` is true, appending (candidate_id, reason) to the
    ``dropped_candidates`` column of their pool."""
    drop = np.asarray(drop, dtype=bool)
    table = record_dropped(table, flat, drop, reasons)
    return rebuild_candidates(table, flat, flat.values, keep=~drop)


def record_dropped(
    table: pa.Table, flat: FlatCandidates, drop: np.ndarray, reasons: np.ndarray
) -> pa.Table:
    n = table.num_rows
    idx = np.flatnonzero(drop)
    ids = pc.struct_field(flat.values, "candidate_id").take(pa.array(idx, type=pa.int64()))
    new = pa.StructArray.from_arrays(
        [
            ids.cast(pa.string()),
            pa.array(np.asarray(reasons, dtype=object)[idx].tolist(), type=pa.string()),
        ],
        names=["candidate_id", "reason"],
    )
    counts = np.bincount(flat.parents[idx], minlength=n)  # parents are sorted
    offsets = offsets_of(counts)
    added = pa.ListArray.from_arrays(pa.array(offsets), new)
    prev = (
        table[DROPPED].combine_chunks().cast(DROPPED_TYPE)
        if DROPPED in table.column_names
        else None
    )
    if prev is not None and (prev.null_count or pc.sum(pc.list_value_length(prev)).as_py()):
        prev = pc.fill_null(prev, pa.scalar([], DROPPED_TYPE))
        merged = (
            pl.DataFrame({"a": pl.Series(prev), "b": pl.Series(added)})
            .select(pl.concat_list("a", "b").alias("d"))["d"]
            .to_arrow()
            .cast(DROPPED_TYPE)
        )
    else:  # nothing recorded before (the common case): the new records alone
        merged = added.cast(DROPPED_TYPE)
    return set_column(table, DROPPED, merged)


def ensure_dropped(table: pa.Table) -> pa.Table:
    """Add an empty ``dropped_candidates`` column when absent."""
    if DROPPED in table.column_names:
        return table
    empty = pa.array([[]] * table.num_rows, type=DROPPED_TYPE)
    return set_column(table, DROPPED, empty)


__all__ = [
    "DROPPED",
    "DROPPED_TYPE",
    "FLAGS_TYPE",
    "add_flags",
    "candidate_flags",
    "drop_candidates",
    "ensure_dropped",
    "record_dropped",
]
