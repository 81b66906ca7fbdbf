"""The ``pool`` layout: tables already nested as pools; missing ids, sources, flags,
sample indices and scores are filled in and every row is validated."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prefdata import ids
from prefdata.io.layouts.columns import (
    Rejects,
    is_string_type,
    message_problem,
    messages,
    optional_strings,
)
from prefdata.io.layouts.options import LayoutOptions
from prefdata.schema import candidate_type, conform, conform_types, empty_scores, pool_schema
from prefdata.validate import validate


def _with_child(col: pa.ListArray, name: str, child: pa.Array) -> pa.ListArray:
    """A list<struct> column with one more struct field (``child`` aligned with
    ``col.values``); offsets and null masks are kept."""
    values = col.values
    children = values.flatten() + [child]
    names = [f.name for f in values.type] + [name]
    mask = values.is_null() if values.null_count else None
    new_values = pa.StructArray.from_arrays(children, names=names, mask=mask)
    lmask = col.is_null() if col.null_count else None
    return pa.ListArray.from_arrays(col.offsets, new_values, mask=lmask)


def _fill_candidates(table: pa.Table) -> pa.Table:
    """Fill what a pool table may leave out: candidate ids, sample indices, flags, scores."""
    col = table["candidates"].combine_chunks() if table.num_rows else None
    if col is None or not (pa.types.is_list(col.type) and pa.types.is_struct(col.type.value_type)):
        return table
    ctype = col.type.value_type
    have = {f.name for f in ctype}
    if "scores" not in have:
        # Pools written before any scorer (Parquet cannot store an empty struct): columnar.
        col = _with_child(col, "scores", empty_scores(len(col.values)))
        table = table.set_column(table.schema.get_field_index("candidates"), "candidates", col)
        ctype, have = col.type.value_type, have | {"scores"}
    if not pa.types.is_struct(ctype.field("scores").type):
        return table  # validate() reports it
    names = [f.name for f in ctype.field("scores").type] if "scores" in have else []
    target = candidate_type(names)
    flat = col.flatten()
    needs_python = (
        not {"candidate_id", "flags", "sample_index"} <= have
        or ("candidate_id" in have and pc.struct_field(flat, "candidate_id").null_count)
        or ("flags" in have and pc.struct_field(flat, "flags").null_count)
    )
    if not needs_python:
        return table
    pids = table["prompt_id"].to_pylist()
    pools = col.to_pylist()
    for pid, cands in zip(pids, pools, strict=True):
        if not cands or pid is None:
            continue
        seen: dict[Any, int] = {}
        for c in cands:
            if not isinstance(c, dict):
                continue
            g = c.get("generator")
            if "sample_index" not in have:
                c["sample_index"] = seen.get(g, 0)
            seen[g] = seen.get(g, 0) + 1
            if c.get("flags") is None:
                c["flags"] = []
            if c.get("scores") is None and "scores" not in have:
                c["scores"] = {}
            if not c.get("candidate_id") and isinstance(c.get("response"), str):
                c["candidate_id"] = ids.candidate_id(pid, g, c.get("sample_index"), c["response"])
    extra = [f for f in ctype if f.name not in target.names]
    full = pa.struct(list(target) + extra)
    # Fields of the wrong type are left for validate() to report.
    for f in target:
        if f.name in have and ctype.field(f.name).type != f.type:
            full = pa.struct([ctype.field(x.name) if x.name == f.name else x for x in full])
    arr = pa.array(pools, pa.list_(full))
    return table.set_column(table.schema.get_field_index("candidates"), "candidates", arr)


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
        prompts = t["prompt"].to_pylist()
        given = t["prompt_id"].to_pylist() if "prompt_id" in t.column_names else [None] * n
        filled = []
        for g, p in zip(given, prompts, strict=True):
            if g is None and isinstance(p, list) and message_problem(p) is None:
                g = ids.prompt_id(p)
            filled.append(g)
        col = pa.array(filled, pa.string())
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
