"""The ``ultrafeedback`` layout: openbmb/UltraFeedback rows, an instruction and its rated
``completions`` (a response, a model, ``overall_score``, ``fine-grained_score`` and the
four aspect ratings under ``annotations``); a row without completions is a prompt-only
pool.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prefdata.arrow import list_lengths, list_parents, np_bool
from prefdata.io.layouts.columns import (
    Rejects,
    column,
    given_ids,
    is_string_type,
    messages,
    optional_strings,
    pick,
    scores,
    strings,
)
from prefdata.io.layouts.entries import Entries
from prefdata.io.layouts.options import LayoutOptions

ULTRAFEEDBACK_ASPECTS = ("helpfulness", "honesty", "instruction_following", "truthfulness")
ULTRAFEEDBACK_SCORES = ("overall_score", "fine_grained_score", *ULTRAFEEDBACK_ASPECTS)
_NUMBER = re.compile(r"^\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*$")


def _rating(
    arr: pa.Array, parent: np.ndarray, pos: np.ndarray, field: str, rej: Rejects
) -> pa.Array:
    """UltraFeedback ratings: numeric strings to float64, "N/A" (or null) to null."""
    if not is_string_type(arr.type):
        return _scores_at(arr, parent, pos, field, rej)
    text = pc.utf8_trim_whitespace(arr.cast(pa.string()))
    na = np_bool(pc.equal(pc.utf8_upper(text), "N/A")) | ~np_bool(text.is_valid())
    numeric = np_bool(pc.match_substring_regex(text, _NUMBER.pattern))
    values = text.to_pylist()
    for k in np.flatnonzero(~na & ~numeric):
        rej.add(
            parent[k],
            f"completions[{pos[k]}].{field}",
            f"rating {values[k]!r} is neither a number nor N/A",
        )
    clean = pc.if_else(pa.array(numeric & ~na), text, pa.nulls(len(text), pa.string()))
    out = pc.cast(clean, pa.float64())
    for k in np.flatnonzero(np_bool(pc.invert(pc.is_finite(out)))):
        rej.add(parent[k], f"completions[{pos[k]}].{field}", f"rating {values[k]!r} is not finite")
    return out


def _scores_at(
    arr: pa.Array, parent: np.ndarray, pos: np.ndarray, field: str, rej: Rejects
) -> pa.Array:
    local = Rejects()
    out = scores(arr, field, local)
    for k, (_, reason, _) in local.items.items():
        rej.add(parent[k], f"completions[{pos[k]}].{field}", reason)
    return out


def ultrafeedback_entries(raw: pa.Table, rej: Rejects, o: LayoutOptions) -> Entries:
    """One entry per completion, and a prompt-only entry per row without completions."""
    pcol = pick(raw, o.prompt_col, ("instruction", "prompt"), "prompt", "ultrafeedback")
    prompt = messages(column(raw, pcol, "prompt", "ultrafeedback"), pcol, rej)
    comps = column(raw, "completions", "completions", "ultrafeedback")
    if not (
        (pa.types.is_list(comps.type) or pa.types.is_large_list(comps.type))
        and pa.types.is_struct(comps.type.value_type)
    ):
        raise TypeError(
            f"layout 'ultrafeedback': completions has type {comps.type}; "
            "expected a list of completion objects"
        )
    ctype = comps.type.value_type
    rfield = o.response_col or "response"
    gfield = o.generator_col or "model"
    for r in np.flatnonzero(~np_bool(comps.is_valid())):
        rej.add(r, "completions", "missing (null)")
    flat = comps.flatten()
    parent = list_parents(comps)
    pos = np.arange(len(parent)) - np.searchsorted(parent, parent, side="left")
    m = len(flat)

    def sub(name: str) -> pa.Array | None:
        return pc.struct_field(flat, name) if ctype.get_field_index(name) >= 0 else None

    if (resp := sub(rfield)) is None:
        raise KeyError(
            f"layout 'ultrafeedback': completions have no {rfield!r} field "
            f"(fields: {[f.name for f in ctype]}); pass response_col="
        )
    local = Rejects()
    resp = strings(resp, rfield, local)
    for k, (_, reason, _) in local.items.items():
        rej.add(parent[k], f"completions[{pos[k]}].{rfield}", reason)
    gen = sub(gfield)
    gen = optional_strings(gen) if gen is not None else pa.nulls(m, pa.string())

    annotations = sub("annotations")
    ann_type = annotations.type if annotations is not None else pa.struct([])
    available = []
    for s in ULTRAFEEDBACK_SCORES:
        if s == "fine_grained_score":
            if ctype.get_field_index("fine-grained_score") >= 0 or ctype.get_field_index(s) >= 0:
                available.append(s)
        elif s in ULTRAFEEDBACK_ASPECTS:
            if pa.types.is_struct(ann_type) and ann_type.get_field_index(s) >= 0:
                available.append(s)
        elif ctype.get_field_index(s) >= 0:
            available.append(s)
    names = list(o.score_cols) or available
    found = {}
    for s in names:
        if s in ULTRAFEEDBACK_ASPECTS and s in available:
            aspect = pc.struct_field(annotations, s)
            if not (pa.types.is_struct(aspect.type) and aspect.type.get_field_index("Rating") >= 0):
                raise TypeError(
                    f"layout 'ultrafeedback': annotations.{s} has type {aspect.type}; "
                    "expected an object with a Rating"
                )
            found[s] = _rating(
                pc.struct_field(aspect, "Rating"), parent, pos, f"annotations.{s}.Rating", rej
            )
        elif s == "fine_grained_score" and s in available:
            name = "fine-grained_score" if ctype.get_field_index("fine-grained_score") >= 0 else s
            found[s] = _scores_at(sub(name), parent, pos, name, rej)
        elif (col := sub(s)) is not None:
            found[s] = (
                _scores_at(col, parent, pos, s, rej)
                if not is_string_type(col.type)
                else _rating(col, parent, pos, s, rej)
            )
        else:
            raise KeyError(
                f"layout 'ultrafeedback': no score {s!r} in the completions "
                f"(available: {available}, fields: {[f.name for f in ctype]})"
            )

    # Entries: the completions, plus one prompt-only entry per row with no completions.
    lengths = list_lengths(comps)
    empty_rows = np.flatnonzero(lengths == 0)
    rows = np.concatenate([parent, empty_rows])
    order = np.argsort(rows, kind="stable")
    oi = pa.array(order)
    idx = pa.array(rows[order])
    meta = None
    if "source" in raw.column_names:
        src = column(raw, "source", "source", "ultrafeedback").to_pylist()
        meta = pa.array(
            [None if v is None else json.dumps({"source": v}, ensure_ascii=False) for v in src],
            pa.string(),
        ).take(idx)
    pad = lambda a: pa.concat_arrays([a, pa.nulls(len(empty_rows), a.type)]).take(oi)  # noqa: E731
    return Entries(
        rows[order],
        np.concatenate([pos, np.zeros(len(empty_rows), np.int64)])[order].astype(np.int32),
        prompt.take(idx),
        pad(resp),
        pad(gen),
        {s: pad(v) for s, v in found.items()},
        np.concatenate([np.ones(m, bool), np.zeros(len(empty_rows), bool)])[order],
        None
        if not o.id_col
        else given_ids(column(raw, o.id_col, "id", "ultrafeedback"), o.id_col, rej).take(idx),
        meta,
    )
