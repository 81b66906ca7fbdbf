"""The ``pool`` layout: tables already nested as pools; missing ids, sources, flags,
sample indices and scores are filled in and every row is validated."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prefdata import ids
from prefdata.arrow import list_lengths, list_parents, np_bool, offsets_of
from prefdata.io.layouts.columns import (
    FLAGS_TYPE,
    Rejects,
    is_string_type,
    messages,
    messages_ok,
    optional_strings,
    plain_messages,
)
from prefdata.io.layouts.entries import rank_within
from prefdata.io.layouts.options import LayoutOptions
from prefdata.schema import candidate_type, conform, conform_types, empty_scores, pool_schema
from prefdata.validate import validate


def _with_child(
    col: pa.ListArray, name: str, child: pa.Array, replace: str | None = None
) -> pa.ListArray:
    """A list<struct> column with one more struct field (``child`` aligned with
    ``col.values``; a field named ``replace`` goes); offsets and null masks are kept."""
    values = col.values
    kept = [i for i, f in enumerate(values.type) if f.name != replace]
    children = [values.field(i) for i in kept] + [child]
    names = [values.type.field(i).name for i in kept] + [name]
    mask = values.is_null() if values.null_count else None
    new_values = pa.StructArray.from_arrays(children, names=names, mask=mask)
    lmask = col.is_null() if col.null_count else None
    return pa.ListArray.from_arrays(col.offsets, new_values, mask=lmask)


def _fill_candidates(table: pa.Table) -> pa.Table:
    """Fill what a pool table may leave out, column-wise: candidate ids (bulk digests),
    sample indices, flags, scores. Candidates that are null, or in a pool without a
    prompt id, are left as they are (validation reports them)."""
    col = table["candidates"].combine_chunks() if table.num_rows else None
    if col is None or not (pa.types.is_list(col.type) and pa.types.is_struct(col.type.value_type)):
        return table
    ctype = col.type.value_type
    have = {f.name for f in ctype if not pa.types.is_null(f.type)}  # all-null: as if absent
    if "scores" not in have:
        # Pools written before any scorer (Parquet cannot store an empty struct): columnar.
        col = _with_child(col, "scores", empty_scores(len(col.values)), replace="scores")
        table = table.set_column(table.schema.get_field_index("candidates"), "candidates", col)
        ctype, have = col.type.value_type, have | {"scores"}
    if not pa.types.is_struct(ctype.field("scores").type):
        return table  # validate() reports it
    flat = col.flatten()
    field = lambda name: pc.struct_field(flat, name) if name in have else None  # noqa: E731
    needs = (
        not {"candidate_id", "flags", "sample_index"} <= have
        or field("candidate_id").null_count
        or field("flags").null_count
    )
    if not needs:
        return table
    m = len(flat)
    parents = list_parents(col)
    pids = table["prompt_id"].combine_chunks().cast(pa.string())
    valid = np_bool(flat.is_valid()) & np_bool(pids.is_valid())[parents]
    rows = pa.array(np.flatnonzero(valid))
    gen = field("generator")
    gen = pa.nulls(m, pa.string()) if gen is None else optional_strings(gen)
    filled: dict[str, pa.Array] = {}
    index = field("sample_index")
    if index is None:
        rank = np.zeros(m, np.int64)
        rank[valid] = rank_within(parents[valid], gen.take(rows))
        index = filled["sample_index"] = pa.array(rank, pa.int32(), mask=~valid)
    flags = field("flags")
    flags = pa.nulls(m, FLAGS_TYPE) if flags is None else flags
    if pa.types.is_list(flags.type) and flags.null_count:
        empty = pc.fill_null(flags, pa.scalar([], flags.type))
        filled["flags"] = pc.if_else(pa.array(valid), empty, flags)
    cid = field("candidate_id")
    cid = pa.nulls(m, pa.string()) if cid is None else cid
    resp = field("response")
    if is_string_type(cid.type) and resp is not None and is_string_type(resp.type):
        need = valid & (~np_bool(cid.is_valid()) | np_bool(pc.equal(cid, "")))
        need &= np_bool(resp.is_valid())
        if need.any():
            at = pa.array(np.flatnonzero(need))
            made = ids.candidate_ids(
                pids.take(pa.array(parents[need])), gen.take(at), index.take(at), resp.take(at)
            )
            pos = np.full(m, 0, np.int64)
            pos[need] = np.arange(int(need.sum()))
            filled["candidate_id"] = pc.if_else(
                pa.array(need), made.take(pa.array(pos)), cid.cast(pa.string())
            )
    target = candidate_type([f.name for f in ctype.field("scores").type])
    # Fields of the wrong type are kept as they are, for validate() to report.
    fields = [ctype.field(f.name) if f.name in have else f for f in target]
    fields += [f for f in ctype if f.name not in target.names and f.name in have]
    children = []
    for f in fields:
        child = filled.get(f.name, field(f.name))
        children.append(pa.nulls(m, f.type) if child is None else child.cast(f.type))
    values = pa.StructArray.from_arrays(
        children, fields=fields, mask=flat.is_null() if flat.null_count else None
    )
    arr = pa.ListArray.from_arrays(
        pa.array(offsets_of(list_lengths(col))),
        values,
        mask=col.is_null() if col.null_count else None,
    )
    return table.set_column(table.schema.get_field_index("candidates"), "candidates", arr)


def _given_or_digests(t: pa.Table) -> pa.Array:
    """The prompt ids given, and the digest of every well-formed prompt that has none."""
    n = t.num_rows
    given = (
        t["prompt_id"].combine_chunks().cast(pa.string())
        if "prompt_id" in t.column_names
        else pa.nulls(n, pa.string())
    )
    prompt = t["prompt"].combine_chunks()
    ok = messages_ok(prompt) & ~np_bool(given.is_valid())
    if not ok.any():
        return given
    rows = pa.array(np.flatnonzero(ok))
    made = ids.prompt_ids(plain_messages(prompt.take(rows)))
    pos = np.zeros(n, np.int64)
    pos[ok] = np.arange(int(ok.sum()))
    return pc.if_else(pa.array(ok), made.take(pa.array(pos)), given)


def pool_table(raw: pa.Table, rej: Rejects, o: LayoutOptions, source: str | None) -> pa.Table:
    """The pools of a table in the pool layout; rows that are not valid pools go to ``rej``."""
    t = conform_types(raw)
    n = t.num_rows
    if "prompt" not in t.column_names:
        raise KeyError(f"layout 'pool': no prompt column; columns: {t.column_names}")
    if is_string_type(t.schema.field("prompt").type):
        msgs = messages(t["prompt"].combine_chunks(), "prompt", rej)
        t = t.set_column(t.schema.get_field_index("prompt"), "prompt", msgs)
    if o.id_col and o.id_col != "prompt_id":
        t = t.drop_columns([c for c in ("prompt_id",) if c in t.column_names])
        t = t.rename_columns(["prompt_id" if c == o.id_col else c for c in t.column_names])
    if "prompt_id" not in t.column_names or t["prompt_id"].null_count:
        col = _given_or_digests(t)
        if "prompt_id" in t.column_names:
            t = t.set_column(t.schema.get_field_index("prompt_id"), "prompt_id", col)
        else:
            t = t.append_column("prompt_id", col)
    elif not is_string_type(t.schema.field("prompt_id").type):
        t = t.set_column(
            t.schema.get_field_index("prompt_id"),
            "prompt_id",
            optional_strings(t["prompt_id"].combine_chunks()),
        )
    if "source" not in t.column_names:
        t = t.append_column("source", pa.array([source] * n, pa.string()))
    if "metadata" not in t.column_names:
        t = t.append_column("metadata", pa.nulls(n, pa.string()))
    if "candidates" not in t.column_names:
        # Prompts only (before sampling): every pool starts empty.
        t = t.append_column(
            "candidates", pa.array([[]] * n, pool_schema().field("candidates").type)
        )
    t = _fill_candidates(t)
    errors = validate(t)
    table_level = [str(e) for e in errors if e.row < 0]
    if table_level:
        raise TypeError("layout 'pool': the table cannot hold pools: " + "; ".join(table_level))
    by_row: dict[int, list] = {}
    for err in errors:
        by_row.setdefault(err.row, []).append(err)
    pids = t["prompt_id"].to_pylist() if by_row else []
    for r, errs in by_row.items():
        rej.add(r, errs[0].field, "; ".join(f"{x.field}: {x.reason}" for x in errs), pids[r])
    keep = np.ones(n, bool)
    keep[list(by_row)] = False
    return conform(t.filter(pa.array(keep)))
