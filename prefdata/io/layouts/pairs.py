"""The pairwise layouts: ``pairs`` (chosen / rejected strings or message lists, with an
optional prompt column) and ``hh`` (Anthropic HH-RLHF transcripts).

Each kept input row gives two entries, chosen then rejected (a row whose two responses are
the same text is rejected: it records no preference), with the recorded preference
as the score ``preference`` (1.0 / 0.0) and, when the dataset records one per side, the
score ``score_name``. Rows are read column-wise; a row that the column-wise checks cannot
vouch for (a null, a malformed message, a prompt that may be blank) is read on its own by
the per-row rules, which give the exact reason it is rejected.

>>> import pyarrow as pa
>>> from prefdata.io.layouts.columns import Rejects
>>> from prefdata.io.layouts.options import LayoutOptions
>>> raw = pa.table({"prompt": ["Q"], "chosen": ["A"], "rejected": ["B"]})
>>> e = pairs_entries(raw, Rejects(), LayoutOptions())
>>> e.response.to_pylist(), e.scores["preference"].to_pylist()
(['A', 'B'], [1.0, 0.0])
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prefdata.arrow import list_lengths, list_parents, np_bool, offsets_of
from prefdata.io.hh import split_pairs
from prefdata.io.layouts.columns import (
    Rejects,
    column,
    given_ids,
    is_message_list_type,
    is_string_type,
    message_problem,
    messages_ok,
    optional_strings,
    plain_messages,
    prompt_problem,
    scores,
    user_messages,
)
from prefdata.io.layouts.entries import Assembly, Entries
from prefdata.io.layouts.options import PREFERENCE, LayoutOptions
from prefdata.schema import MESSAGES_TYPE, PROMPT_END_ROLES

# Every character Python's str.strip() removes, and more: a text made only of these may
# be blank to Python, so its row is checked by the per-row rules.
_MAYBE_BLANK = (
    r"^[\s\x1c-\x1f\x85\xa0\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}]*$"
)


# --------------------------------------------------------------------------- columns


@dataclass
class _Kept:
    """The rows a pairwise layout keeps: prompts and both responses, aligned with rows."""

    rows: np.ndarray
    prompt: pa.Array  # MESSAGES_TYPE
    chosen: pa.Array  # string
    rejected: pa.Array  # string
    notes: dict[int, dict] = field(default_factory=dict)  # row -> metadata to record

    @classmethod
    def concat(cls, parts: list[_Kept]) -> _Kept:
        parts = [p for p in parts if len(p.rows)]
        if not parts:
            empty = pa.array([], pa.string())
            return cls(np.zeros(0, np.int64), pa.array([], MESSAGES_TYPE), empty, empty)
        rows = np.concatenate([p.rows for p in parts])
        order = pa.array(np.argsort(rows, kind="stable"))
        cat = lambda xs: pa.concat_arrays(xs).take(order)  # noqa: E731
        return cls(
            rows[order.to_numpy()],
            cat([p.prompt.cast(MESSAGES_TYPE) for p in parts]),
            cat([p.chosen.cast(pa.string()) for p in parts]),
            cat([p.rejected.cast(pa.string()) for p in parts]),
            {k: v for p in parts for k, v in p.notes.items()},
        )


def _split_last(lists: pa.Array) -> tuple[pa.Array, pa.Array, pa.Array]:
    """(every message but the last, the last role, the last content) of non-empty lists."""
    lengths = list_lengths(lists)
    starts = offsets_of(lengths, np.int64)[:-1]
    flat = lists.flatten()
    last = pa.array(starts + lengths - 1)
    keep = np.ones(len(flat), bool)
    keep[(starts + lengths - 1)] = False
    prefix = pa.ListArray.from_arrays(
        pa.array(offsets_of(lengths - 1)), flat.filter(pa.array(keep))
    )
    return (
        prefix,
        pc.struct_field(flat, "role").take(last),
        pc.struct_field(flat, "content").take(last),
    )


def _same_messages(a: pa.Array, b: pa.Array) -> np.ndarray:
    """Rows where two message-list arrays hold the same roles and contents."""
    la, lb = list_lengths(a), list_lengths(b)
    same = la == lb
    rows = np.flatnonzero(same & (la > 0))
    if len(rows):
        idx = pa.array(rows)
        fa, fb = a.take(idx).flatten(), b.take(idx).flatten()
        eq = np_bool(
            pc.and_(
                pc.equal(pc.struct_field(fa, "role"), pc.struct_field(fb, "role")),
                pc.equal(pc.struct_field(fa, "content"), pc.struct_field(fb, "content")),
            )
        )
        parents = np.repeat(np.arange(len(rows)), la[rows])
        bad = np.bincount(parents[~eq], minlength=len(rows))
        same[rows[bad > 0]] = False
    return same


def _prompt_ok(prompt: pa.Array) -> np.ndarray:
    """Rows whose (well-formed) prompt surely passes :func:`prompt_problem`: it ends with
    a user or tool turn and some message is surely not blank."""
    lengths = list_lengths(prompt)
    ok = lengths > 0
    if not ok.any():
        return ok
    flat = prompt.flatten()
    ends = offsets_of(lengths, np.int64)[1:] - 1
    roles = pc.struct_field(flat, "role").take(pa.array(np.maximum(ends, 0)))
    ok &= np_bool(pc.is_in(roles, pa.array(PROMPT_END_ROLES)))
    content = pc.struct_field(flat, "content")
    solid = ~np_bool(pc.match_substring_regex(content, _MAYBE_BLANK))
    ok &= np.bincount(list_parents(prompt)[solid], minlength=len(prompt)) > 0
    return ok


def _responses(col: pa.Array, prompt: pa.Array | None) -> tuple[np.ndarray, pa.Array]:
    """(rows read column-wise, their response texts) of a chosen or rejected column: a
    string, or one assistant message after the prompt (the prompt's messages may come
    first)."""
    n = len(col)
    if is_string_type(col.type):
        return np_bool(col.is_valid()), col.cast(pa.string())
    ok = messages_ok(col)
    if not ok.any():
        return ok, pa.nulls(n, pa.string())
    rows = np.flatnonzero(ok & (list_lengths(col) > 0))
    ok[:] = False
    if not len(rows):
        return ok, pa.nulls(n, pa.string())
    sub = plain_messages(col.take(pa.array(rows)))
    prefix, role, content = _split_last(sub)
    fine = np_bool(pc.equal(role, "assistant"))
    if prompt is None:
        fine &= list_lengths(prefix) == 0
    else:
        p = prompt.take(pa.array(rows))
        fine &= (list_lengths(prefix) == 0) | _same_messages(prefix, p)
    ok[rows[fine]] = True
    text = pa.nulls(n, pa.string())
    at = np.full(n, -1, np.int64)
    at[rows] = np.arange(len(rows))
    text = pc.if_else(pa.array(ok), content.take(pa.array(np.maximum(at, 0))), text)
    return ok, text


# --------------------------------------------------------------------------- per row


def _response_of(
    value: Any, prompt: list[dict] | None, field: str
) -> tuple[str | None, str | None]:
    """The response text of a pairs-layout chosen/rejected value: (text, problem)."""
    if isinstance(value, str):
        return value, None
    if value is None:
        return None, f"{field}: missing (null)"
    bad = message_problem(value)
    if bad:
        return None, f"{field}{bad[0]}: {bad[1]}"
    msgs = [{"role": m["role"], "content": m["content"]} for m in value]
    if prompt is not None and len(msgs) > len(prompt) and msgs[: len(prompt)] == prompt:
        msgs = msgs[len(prompt) :]  # the full conversation, starting with the prompt
    if len(msgs) != 1 or msgs[0]["role"] != "assistant":
        return None, (
            f"{field}: expected one assistant message after the prompt, got "
            f"{[m['role'] for m in msgs]}"
        )
    return msgs[0]["content"], None


def _row_with_prompt(p: Any, c: Any, r: Any, o: LayoutOptions, pcol: str) -> tuple:
    """One row of the pairs layout with a prompt column: (prompt, chosen, rejected) or
    (field, reason) when it is rejected."""
    ccol, rcol = o.chosen_col, o.rejected_col
    if p is None:
        return pcol, "missing prompt (null)"
    if isinstance(p, str):
        p = [{"role": "user", "content": p}]
    elif (bad := message_problem(p)) is not None:
        return pcol + bad[0], bad[1]
    p = [{"role": m["role"], "content": m["content"]} for m in p]
    if (bad := prompt_problem(p)) is not None:
        return pcol, bad
    c_text, c_bad = _response_of(c, p, ccol)
    r_text, r_bad = _response_of(r, p, rcol)
    if c_bad or r_bad:
        return ccol if c_bad else rcol, c_bad or r_bad
    return p, c_text, r_text


def _row_without_prompt(c: Any, r: Any, o: LayoutOptions) -> tuple:
    """One row of the pairs layout without a prompt column (the prompt is the shared
    conversation before the final assistant turns)."""
    ccol, rcol = o.chosen_col, o.rejected_col
    if isinstance(c, str) or isinstance(r, str):
        return (
            ccol if isinstance(c, str) else rcol,
            "string chosen/rejected without a prompt column: the prompt cannot be "
            "split off reliably (pass prompt_col=, or layout='hh' for HH transcripts)",
        )
    for name, v in ((ccol, c), (rcol, r)):
        if v is None:
            return name, "missing (null)"
        if (bad := message_problem(v)) is not None:
            return name + bad[0], bad[1]
    c = [{"role": m["role"], "content": m["content"]} for m in c]
    r = [{"role": m["role"], "content": m["content"]} for m in r]
    if not c or c[-1]["role"] != "assistant" or not r or r[-1]["role"] != "assistant":
        which = ccol if not c or c[-1]["role"] != "assistant" else rcol
        return which, "the last message is not an assistant turn"
    if c[:-1] != r[:-1]:
        return (
            rcol,
            f"{ccol} and {rcol} differ before the final assistant message "
            "(the shared prefix is the prompt)",
        )
    p = c[:-1]
    if (bad := prompt_problem(p)) is not None:
        return ccol, bad
    return p, c[-1]["content"], r[-1]["content"]


def _by_row(rows: np.ndarray, values: list[list], read, rej: Rejects) -> _Kept:
    """The rows the column-wise checks could not vouch for, read one at a time."""
    kept, prompts, cs, rs = [], [], [], []
    for i, args in zip(rows.tolist(), zip(*values, strict=True), strict=True):
        got = read(*args)
        if len(got) == 2:
            rej.add(i, *got)
            continue
        kept.append(i)
        prompts.append(got[0])
        cs.append(got[1])
        rs.append(got[2])
    return _Kept(
        np.asarray(kept, np.int64),
        pa.array(prompts, MESSAGES_TYPE),
        pa.array(cs, pa.string()),
        pa.array(rs, pa.string()),
    )


def _take_list(arr: pa.Array, rows: np.ndarray) -> list:
    return arr.take(pa.array(rows, pa.int64())).to_pylist()


# --------------------------------------------------------------------------- layouts


def _pairs_kept(raw: pa.Table, rej: Rejects, o: LayoutOptions) -> _Kept:
    chosen = column(raw, o.chosen_col, "chosen", "pairs")
    rejected = column(raw, o.rejected_col, "rejected", "pairs")
    pcol = o.prompt_col or ("prompt" if "prompt" in raw.column_names else None)
    n = raw.num_rows
    if pcol is not None:
        praw = column(raw, pcol, "prompt", "pairs")
        if is_string_type(praw.type):
            valid = np_bool(praw.is_valid())
            prompt = user_messages(praw)
            p_ok = valid & ~np_bool(pc.match_substring_regex(praw, _MAYBE_BLANK))
        elif is_message_list_type(praw.type) and messages_ok(praw).any():
            p_ok = messages_ok(praw)
            prompt = plain_messages(praw.filter(pa.array(p_ok)))
            at = np.full(n, -1, np.int64)
            at[p_ok] = np.arange(int(p_ok.sum()))
            prompt = prompt.take(pa.array(np.maximum(at, 0))) if len(prompt) else None
            if prompt is not None:
                p_ok &= _prompt_ok(prompt)
        else:
            p_ok, prompt = np.zeros(n, bool), None
        c_ok, c_text = _responses(chosen, prompt) if prompt is not None else (p_ok, None)
        r_ok, r_text = _responses(rejected, prompt) if prompt is not None else (p_ok, None)
        fast = p_ok & c_ok & r_ok
        slow = np.flatnonzero(~fast)
        slow_values = [_take_list(praw, slow), _take_list(chosen, slow), _take_list(rejected, slow)]
        read = lambda p, c, r: _row_with_prompt(p, c, r, o, pcol)  # noqa: E731
    else:
        fast = np.zeros(n, bool)
        if is_message_list_type(chosen.type) and is_message_list_type(rejected.type):
            ok = messages_ok(chosen) & messages_ok(rejected)
            ok &= (list_lengths(chosen) > 0) & (list_lengths(rejected) > 0)
            rows = np.flatnonzero(ok)
            if len(rows):
                c = plain_messages(chosen.take(pa.array(rows)))
                r = plain_messages(rejected.take(pa.array(rows)))
                cp, c_role, c_last = _split_last(c)
                rp, r_role, r_last = _split_last(r)
                good = (
                    np_bool(pc.equal(c_role, "assistant"))
                    & np_bool(pc.equal(r_role, "assistant"))
                    & _same_messages(cp, rp)
                )
                good &= _prompt_ok(cp)
                fast[rows[good]] = True
                at = np.full(n, -1, np.int64)
                at[rows] = np.arange(len(rows))
                back = pa.array(np.maximum(at, 0))
                prompt = cp.take(back)
                c_text, r_text = c_last.take(back), r_last.take(back)
        slow = np.flatnonzero(~fast)
        slow_values = [_take_list(chosen, slow), _take_list(rejected, slow)]
        read = lambda c, r: _row_without_prompt(c, r, o)  # noqa: E731
    rows = np.flatnonzero(fast)
    idx = pa.array(rows)
    quick = (
        _Kept(rows, prompt.take(idx), c_text.take(idx), r_text.take(idx))
        if len(rows)
        else _Kept.concat([])
    )
    return _Kept.concat([quick, _by_row(slow, slow_values, read, rej)])


def _hh_kept(raw: pa.Table, rej: Rejects, o: LayoutOptions) -> _Kept:
    chosen = column(raw, o.chosen_col, "chosen", "hh")
    rejected = column(raw, o.rejected_col, "rejected", "hh")
    got = split_pairs(chosen, rejected)
    for i, reason in got.errors.items():
        rej.add(i, o.rejected_col if reason.startswith("rejected") else o.chosen_col, reason)
    rows = np.flatnonzero(np_bool(got.chosen.is_valid()))
    idx = pa.array(rows)
    notes = {i: {"joined_turns": sides} for i, sides in got.joined.items()}
    return _Kept(rows, got.prompt.take(idx), got.chosen.take(idx), got.rejected.take(idx), notes)


def _with_annotator(meta: pa.Array | None, annotators: pa.Array) -> pa.Array:
    """Per-row metadata JSON with ``"annotator"`` added where the row names one (column-wise:
    the name JSON-encoded by polars).

    >>> out = _with_annotator(pa.array(['{"margin": 1.0}', None, None]),
    ...                       pa.array(["a1", 'say "hi"', None])).to_pylist()
    >>> out[0], json.loads(out[1]), out[2]
    ('{"margin": 1.0, "annotator": "a1"}', {'annotator': 'say "hi"'}, None)
    """
    import polars as pl

    n = len(annotators)
    m = pl.col("m")
    lit = pl.struct("a").struct.json_encode().str.slice(5).str.strip_suffix("}")  # {"a":...}
    df = pl.DataFrame(
        {
            "m": pl.Series(meta if meta is not None else pa.nulls(n, pa.string()), dtype=pl.String),
            "a": pl.Series(annotators.cast(pa.string()), dtype=pl.String),
        }
    )
    out = df.select(
        pl.when(pl.col("a").is_null())
        .then(m)
        .when(m.is_null())
        .then(pl.lit('{"annotator": ') + lit + pl.lit("}"))
        .otherwise(m.str.strip_suffix("}") + pl.lit(', "annotator": ') + lit + pl.lit("}"))
    )
    return out.to_series().to_arrow().cast(pa.string())


def _with_notes(meta: pa.Array | None, notes: dict[int, dict], n: int) -> pa.Array | None:
    """Per-row metadata JSON with ``notes`` added to the rows they name (few rows).

    >>> meta = pa.array(['{"margin": 1.0}', None])
    >>> _with_notes(meta, {0: {"x": [1]}, 1: {"y": 2}}, 2).to_pylist()
    ['{"margin": 1.0, "x": [1]}', '{"y": 2}']
    """
    if not notes:
        return meta
    rows = sorted(notes)
    old = meta.take(pa.array(rows)).to_pylist() if meta is not None else [None] * len(rows)
    new = [
        json.dumps({**(json.loads(m) if m else {}), **notes[r]}, ensure_ascii=False)
        for r, m in zip(rows, old, strict=True)
    ]
    at = np.arange(n)
    at[rows] = n + np.arange(len(rows))
    base = meta if meta is not None else pa.nulls(n, pa.string())
    return pa.concat_arrays([base.cast(pa.string()), pa.array(new, pa.string())]).take(pa.array(at))


def _margin_json(margins: pa.Array) -> pa.Array:
    """``{"margin": m}`` per row as ``json.dumps`` writes it (Python's float repr), null
    for a null margin.

    >>> _margin_json(pa.array([0.5, 2.0, None, 1e-7])).to_pylist()
    ['{"margin": 0.5}', '{"margin": 2.0}', None, '{"margin": 1e-07}']
    """
    text = margins.cast(pa.string())
    # Arrow and Python agree on the shortest digits, not on when to write an exponent:
    # the values either writes with one (rare for margins) are written by Python itself.
    x = np.abs(margins.to_numpy(zero_copy_only=False))
    with np.errstate(invalid="ignore"):
        odd = np_bool(pc.match_substring(text, "e")) | (x != 0) & ((x < 1e-4) | (x >= 1e16))
    odd = np.flatnonzero(odd & np_bool(margins.is_valid()))
    whole = np_bool(pc.invert(pc.match_substring_regex(text, r"[.e]")))
    text = pc.if_else(pa.array(whole), pc.binary_join_element_wise(text, ".0", ""), text)
    if len(odd):
        fixed = np.asarray(text.to_pylist(), dtype=object)
        fixed[odd] = [json.dumps(v) for v in margins.take(pa.array(odd)).to_pylist()]
        text = pa.array(fixed.tolist(), pa.string())
    return pc.binary_join_element_wise('{"margin": ', text, "}", "")


def _entries(raw: pa.Table, rej: Rejects, o: LayoutOptions, layout: str, kept_rows) -> Entries:
    """Two entries per kept row, chosen then rejected, with the row's margin, given id
    and per-side scores (checked column-wise first: their problems come first)."""
    margins = (
        scores(column(raw, o.margin_col, "margin", layout), "margin", rej, field=o.margin_col)
        if o.margin_col
        else None
    )
    side = None
    if o.chosen_score_col:
        side = (
            scores(
                column(raw, o.chosen_score_col, "chosen score", layout), o.chosen_score_col, rej
            ),
            scores(
                column(raw, o.rejected_score_col, "rejected score", layout),
                o.rejected_score_col,
                rej,
            ),
        )
    given = given_ids(column(raw, o.id_col, "id", layout), o.id_col, rej) if o.id_col else None
    annotators = (
        optional_strings(column(raw, o.annotator_col, "annotator", layout))
        if o.annotator_col
        else None
    )
    kept = kept_rows(raw, rej, o)
    # a pair whose two sides are the same text records no preference
    same = np.flatnonzero(np_bool(pc.equal(kept.chosen, kept.rejected)))
    rej.add_many(kept.rows[same], o.rejected_col, "chosen and rejected are the same text")
    keep = ~rej.mask(kept.rows)
    rows = kept.rows[keep]
    k = len(rows)
    kk = pa.array(np.flatnonzero(keep))
    meta = _with_notes(None if margins is None else _margin_json(margins), kept.notes, raw.num_rows)
    if annotators is not None:  # recorded in the row's metadata, like its margin
        meta = _with_annotator(meta, annotators)
    pair_of = pa.array(np.repeat(np.arange(k), 2))
    at_row = pa.array(np.repeat(rows, 2))
    both = lambda c, r: pa.concat_arrays([c, r]).take(  # noqa: E731
        pa.array(np.ravel(np.column_stack([np.arange(k), np.arange(k) + k])))
    )
    # preference first: it stays the first score name (what ranks pairs unless asked)
    score_cols = {PREFERENCE: pa.array(np.tile([1.0, 0.0], k), pa.float64())}
    if side is not None:
        idx = pa.array(rows)
        score_cols[o.score_name] = both(side[0].take(idx), side[1].take(idx))
    return Entries(
        np.repeat(rows, 2),
        np.tile(np.array([0, 1], np.int32), k),
        kept.prompt.take(kk).take(pair_of),
        both(kept.chosen.take(kk), kept.rejected.take(kk)),
        pa.nulls(2 * k, pa.string()),
        score_cols,
        np.ones(2 * k, bool),
        None if given is None else given.take(at_row),
        None if meta is None else meta.take(at_row),
    )


def pairs_entries(raw: pa.Table, rej: Rejects, o: LayoutOptions) -> Entries:
    """Entries of the ``pairs`` layout."""
    return _entries(raw, rej, o, "pairs", _pairs_kept)


def hh_entries(raw: pa.Table, rej: Rejects, o: LayoutOptions) -> Entries:
    """Entries of the ``hh`` layout."""
    return _entries(raw, rej, o, "hh", _hh_kept)


def reject_contradictions(e: Entries, rej: Rejects, field: str | None) -> None:
    """Reject rows whose pair another row records the other way round for the same prompt
    (A over B, and B over A) by the same annotator (or where none is recorded): both rows,
    each naming the other, as no preference can be learnt from them. Two annotators who
    disagree are data, not noise: their rows stay (``annotator`` in the row's metadata).
    Entries come as (chosen, rejected) per row, as the pair layouts make them; only
    prompts in several rows are compared.

    >>> from prefdata.io.layouts.columns import Rejects
    >>> q = pa.array([[{"role": "user", "content": "Q"}]] * 6)
    >>> e = Entries.of([0, 0, 1, 1, 2, 2], q, pa.array(["A", "B", "C", "D", "B", "A"]),
    ...                pos=np.array([0, 1] * 3)).with_keys()
    >>> rej = Rejects()
    >>> reject_contradictions(e, rej, "chosen")
    >>> sorted(rej.items), rej.items[2][1]
    ([0, 2], "contradicts row 0, which prefers this row's rejected response to its chosen one")
    """
    import polars as pl

    if len(e) < 4:
        return
    meta = e.metadata if e.metadata is not None else pa.nulls(len(e), pa.string())
    annotator = pl.Series(meta.cast(pa.string())).str.json_path_match("$.annotator")
    df = pl.DataFrame(
        {
            "row": e.row,
            "pos": e.pos,
            # the prompt and the annotator: only one annotator's own rows can contradict
            "p": pl.Series(e.prompt_ids().cast(pa.string())) + "\x00" + annotator.fill_null(""),
            "t": pl.Series(e.response.cast(pa.string())),
        }
    )
    shared = df.filter(pl.col("pos") == 0).group_by("p").agg(pl.len()).filter(pl.col("len") > 1)
    if not shared.height:
        return
    df = df.join(shared.select("p"), on="p")
    pairs = (
        df.filter(pl.col("pos") == 0)
        .select("row", "p", c="t")
        .join(df.filter(pl.col("pos") == 1).select("row", r="t"), on="row")
    )
    flipped = pairs.select(other="row", p="p", c="r", r="c")
    hits = (
        pairs.join(flipped, on=["p", "c", "r"])
        .group_by("row")
        .agg(pl.col("other").min(), pl.col("p").first(), pl.col("c").first(), pl.col("r").first())
        .sort("row")
    )
    for row, other, p, c, r in hits.iter_rows():
        rej.add(
            row,
            field,
            f"contradicts row {other}, which prefers this row's rejected response to its "
            "chosen one",
            prompt_id=p.split("\x00")[0],
        )
        rej.records.setdefault(
            int(row), json.dumps({"chosen": c, "rejected": r}, ensure_ascii=False)
        )


def pair_metadata(table: pa.Table, info: Assembly) -> pa.Table:
    """Pools merged from several pairs list the recorded pairs by candidate id:
    ``{"pairs": [{"chosen": id, "rejected": id, "margin": m}, ...]}``."""
    if not len(info.row):
        return table
    rows_per_pool = np.bincount(info.pool, minlength=table.num_rows) // 2
    merged = np.flatnonzero(rows_per_pool > 1)
    if not len(merged):
        return table
    # entries come as (chosen, rejected) per input row; only merged pools' are read
    firsts = np.flatnonzero(np.isin(info.pool[0::2], merged)) * 2
    if info.metadata is None or info.metadata.null_count == len(info.metadata):
        text = _plain_pairs_json(info, firsts, table.num_rows)
        if text is not None:
            return table.set_column(
                table.schema.get_field_index("metadata"),
                "metadata",
                pc.if_else(pa.array(rows_per_pool > 1), text, table["metadata"]),
            )
    cids = info.candidate_id.take(pa.array(np.column_stack([firsts, firsts + 1]).ravel()))
    cids = cids.to_pylist()
    meta_in = (
        info.metadata.take(pa.array(firsts)).to_pylist()
        if info.metadata is not None
        else [None] * len(firsts)
    )
    pairs: dict[int, list[dict]] = {int(p): [] for p in merged}
    for j, k in enumerate(firsts.tolist()):
        item = {"chosen": cids[2 * j], "rejected": cids[2 * j + 1]}
        if meta_in[j] is not None:
            item.update(json.loads(meta_in[j]))
        pairs[int(info.pool[k])].append(item)
    meta = table["metadata"].to_pylist()
    for p, items in pairs.items():
        meta[p] = json.dumps({"pairs": items}, ensure_ascii=False)
    return table.set_column(
        table.schema.get_field_index("metadata"), "metadata", pa.array(meta, pa.string())
    )


def _plain_pairs_json(info: Assembly, firsts: np.ndarray, n_pools: int) -> pa.Array | None:
    """:func:`pair_metadata`'s JSON, column-wise, where no pair carries metadata and the
    ids need no JSON escaping (prefdata's own ids): the text ``json.dumps`` writes, placed
    at every pool (the caller keeps it for merged pools only); None otherwise."""
    chosen = info.candidate_id.take(pa.array(firsts))
    rejected = info.candidate_id.take(pa.array(firsts + 1))
    for ids in (chosen, rejected):
        if (
            ids.null_count
            or not pc.all(pc.match_substring_regex(ids, r"^[A-Za-z0-9_.:-]*$")).as_py()
        ):
            return None
    items = pc.binary_join_element_wise(
        '{"chosen": "', chosen, '", "rejected": "', rejected, '"}', ""
    )
    pools = info.pool[firsts]
    order = np.argsort(pools, kind="stable")  # a pool's rows stay in input order
    offsets = pa.array(offsets_of(np.bincount(pools, minlength=n_pools)))
    lists = pa.ListArray.from_arrays(offsets, items.take(pa.array(order)))
    return pc.binary_join_element_wise('{"pairs": [', pc.binary_join(lists, ", "), "]}", "")
