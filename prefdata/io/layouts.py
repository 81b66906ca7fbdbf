"""Input layouts: turn a raw table (one row per record of the source) into pools.

=================  ===========================================================================
``pool``           already nested pools (missing ids, sources, flags and scores are filled in)
``long``           one row per response: prompt, response, optional generator, scores, id
``pairs``          chosen / rejected (strings or message lists), optional prompt and margin
``hh``             Anthropic HH-RLHF ``"\\n\\nHuman: ...\\n\\nAssistant: ..."`` transcripts
``ultrafeedback``  openbmb/UltraFeedback rows: an instruction and rated ``completions``
=================  ===========================================================================

:func:`to_pools` returns a :class:`~prefdata.pipeline.StageOutput`: the pools, and one
rejects entry per input row it could not use (stage ``layout:<name>``, ``row`` = input row
index, ``field`` = the offending column, an explicit reason). Every input row is either
part of a pool or rejected, so ``input rows = accepted rows + rejects``; the number of pools
is ``table.num_rows``.

Shared rules: a plain-string prompt becomes one user message; ``prompt_id`` is
:func:`prefdata.ids.prompt_id` of the messages unless ``id_col`` gives one (a given id that
names two different prompts rejects the later rows, naming the first row); rows with the same
prompt form one pool, in order of first appearance; ``sample_index`` is the position among
the pool's candidates from the same generator; ``candidate_id`` is
:func:`prefdata.ids.candidate_id`. Scores are float64, null stays null, NaN or infinity
rejects the row.

Pairs and HH keep the recorded preference as the score ``preference`` (chosen 1.0, rejected
0.0); a score recorded per side (``chosen_score_col`` / ``rejected_score_col``, e.g.
``score_chosen`` / ``score_rejected``) goes to each candidate as ``scores[score_name]``.
A pool built from one pair records its margin (``margin_col``) as metadata
``{"margin": m}``. When several pairs share a prompt they are merged into one pool (a pool
holds one prompt), and the metadata lists the recorded pairs by candidate id:
``{"pairs": [{"chosen": id, "rejected": id, "margin": m}, ...]}``.

>>> import pyarrow as pa
>>> raw = pa.table({"prompt": ["Hi", "Hi", "Bye"], "response": ["a", "b", "c"],
...                 "rm": [0.5, None, 1.0]})
>>> out = to_pools(raw, "long", score_cols=["rm"])
>>> out.table.num_rows, out.rejects.num_rows
(2, 0)
>>> [[c["scores"]["rm"] for c in cands] for cands in out.table["candidates"].to_pylist()]
[[0.5, None], [1.0]]
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from prefdata import ids
from prefdata.annotate.columns import list_lengths, list_parents, offsets_of
from prefdata.io.hh import split_pair
from prefdata.pipeline import StageOutput, rejects_from
from prefdata.schema import (
    MESSAGE_TYPE,
    MESSAGES_TYPE,
    PROMPT_END_ROLES,
    REJECTS_SCHEMA,
    ROLES,
    candidate_type,
    conform,
    conform_types,
    empty_scores,
    pool_schema,
)
from prefdata.validate import _check_prompt, validate

LAYOUTS = ("pool", "long", "pairs", "hh", "ultrafeedback")
PREFERENCE = "preference"
ULTRAFEEDBACK_ASPECTS = ("helpfulness", "honesty", "instruction_following", "truthfulness")
ULTRAFEEDBACK_SCORES = ("overall_score", "fine_grained_score", *ULTRAFEEDBACK_ASPECTS)
_NUMBER = re.compile(r"^\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*$")


# --------------------------------------------------------------------------- rejects


class _Rejects:
    """The first problem of each rejected input row: row -> (field, reason, prompt_id)."""

    def __init__(self) -> None:
        self.items: dict[int, tuple[str | None, str, str | None]] = {}

    def add(self, row: int, field: str | None, reason: str, prompt_id: str | None = None) -> None:
        self.items.setdefault(int(row), (field, reason, prompt_id))

    def mask(self, rows: np.ndarray) -> np.ndarray:
        if not self.items:
            return np.zeros(len(rows), dtype=bool)
        return np.isin(rows, np.fromiter(self.items, dtype=np.int64))

    def table(self, raw: pa.Table, stage: str) -> pa.Table:
        if not self.items:
            return REJECTS_SCHEMA.empty_table()
        rows = sorted(self.items)
        return rejects_from(
            raw.take(pa.array(rows, pa.int64())),
            stage,
            [self.items[r][1] for r in rows],
            field=[self.items[r][0] for r in rows],
            rows=rows,
            prompt_ids=[self.items[r][2] for r in rows],
        )


# --------------------------------------------------------------------------- columns


def _np_bool(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), dtype=bool)


def _is_string_type(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _column(raw: pa.Table, name: str, what: str, layout: str) -> pa.Array:
    if name not in raw.column_names:
        raise KeyError(
            f"layout {layout!r}: {what} column {name!r} not found; columns: {raw.column_names}"
        )
    col = raw[name].combine_chunks() if raw.num_rows else pa.array([], raw.schema.field(name).type)
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    return col


def _pick(raw: pa.Table, given: str | None, defaults: Sequence[str], what: str, layout: str) -> str:
    if given is not None:
        return given
    for name in defaults:
        if name in raw.column_names:
            return name
    raise KeyError(
        f"layout {layout!r}: no {what} column (tried {list(defaults)}); pass "
        f"{what}_col=...; columns: {raw.column_names}"
    )


def _user_messages(content: pa.Array) -> pa.Array:
    """One user message per string (nulls give a message with null content)."""
    n = len(content)
    values = pa.StructArray.from_arrays(
        [pa.array(["user"] * n, pa.string()), content.cast(pa.string())],
        fields=list(MESSAGE_TYPE),
    )
    return pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32)), values)


def _messages(col: pa.Array, name: str, rej: _Rejects) -> pa.Array:
    """A prompt column (strings or message lists) as MESSAGES_TYPE; bad rows go to ``rej``."""
    t = col.type
    n = len(col)
    if pa.types.is_null(t):
        for r in range(n):
            rej.add(r, name, "missing prompt (null)")
        return pa.nulls(n, MESSAGES_TYPE)
    if _is_string_type(t):
        valid = _np_bool(col.is_valid())
        blank = _np_bool(pc.equal(pc.utf8_trim_whitespace(col), ""))
        for r in np.flatnonzero(~valid):
            rej.add(r, name, "missing prompt (null)")
        for r in np.flatnonzero(blank):
            rej.add(r, name, "empty prompt")
        return _user_messages(col)
    if (pa.types.is_list(t) or pa.types.is_large_list(t)) and pa.types.is_struct(t.value_type):
        errors: list = []
        _check_prompt(col, errors)
        table_level = [e for e in errors if e.row < 0]
        if table_level:
            for r in range(n):
                rej.add(
                    r,
                    name,
                    f"{table_level[0].field.replace('prompt', name, 1)}: {table_level[0].reason}",
                )
            return pa.nulls(n, MESSAGES_TYPE)
        for e in errors:
            reason = e.reason
            if e.field == "prompt" and reason.startswith("missing"):
                reason = "missing prompt (null)"
            elif e.field == "prompt" and reason.startswith("empty list"):
                reason = "empty prompt (no messages)"
            rej.add(e.row, e.field.replace("prompt", name, 1), reason)
        return col.cast(MESSAGES_TYPE)
    for r in range(n):
        if col[r].is_valid:
            rej.add(r, name, f"expected a string or a list of messages, got {t}")
        else:
            rej.add(r, name, "missing prompt (null)")
    return pa.nulls(n, MESSAGES_TYPE)


def _strings(col: pa.Array, name: str, rej: _Rejects, what: str = "response") -> pa.Array:
    """A response column: strings; null or another type rejects the row."""
    if _is_string_type(col.type):
        for r in np.flatnonzero(~_np_bool(col.is_valid())):
            rej.add(r, name, f"{what} is not a string (null)")
        return col.cast(pa.string())
    for r in range(len(col)):
        rej.add(r, name, f"{what} is not a string ({col.type})")
    return pa.nulls(len(col), pa.string())


def _optional_strings(col: pa.Array) -> pa.Array:
    """Generator-like columns: strings, other scalars cast to their text, nulls kept."""
    if _is_string_type(col.type) or pa.types.is_null(col.type):
        return col.cast(pa.string())
    return pc.cast(col, pa.string())


def _scores(col: pa.Array, name: str, rej: _Rejects, field: str | None = None) -> pa.Array:
    """A score column as float64: null stays null; NaN, infinity or a non-number rejects."""
    field = field or name
    t = col.type
    if not (
        pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_null(t)
        or pa.types.is_boolean(t)
        or pa.types.is_decimal(t)
    ):
        for r in np.flatnonzero(_np_bool(col.is_valid())):
            rej.add(r, field, f"score {name} is not a number ({t})")
        return pa.nulls(len(col), pa.float64())
    out = col.cast(pa.float64())
    bad = _np_bool(pc.invert(pc.is_finite(out)))
    for r in np.flatnonzero(bad):
        rej.add(r, field, f"score {name} is {out[r].as_py()}; scores must be finite or null")
    return out


def _given_ids(col: pa.Array, name: str, rej: _Rejects) -> pa.Array:
    ids_ = _optional_strings(col)
    missing = ~_np_bool(ids_.is_valid()) | _np_bool(pc.equal(ids_, ""))
    for r in np.flatnonzero(missing):
        rej.add(r, name, "missing prompt id (null or empty)")
    return ids_


def _message_problem(msgs: Any) -> tuple[str, str] | None:
    """Per-row check of a message list: (sub-field, reason) or None when fine."""
    if not isinstance(msgs, list):
        return "", f"expected a list of messages, got {type(msgs).__name__}"
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            return f"[{i}]", f"message is not an object ({type(m).__name__})"
        if m.get("role") not in ROLES:
            return f"[{i}].role", f"{m.get('role')!r} is not one of {', '.join(ROLES)}"
        if not isinstance(m.get("content"), str):
            return f"[{i}].content", f"not a string ({type(m.get('content')).__name__})"
    return None


def _prompt_problem(msgs: list[dict]) -> str | None:
    if not msgs or all(not m["content"].strip() for m in msgs):
        return "empty prompt"
    if msgs[-1]["role"] not in PROMPT_END_ROLES:
        return (
            f"prompt ends with a{'n' if msgs[-1]['role'] == 'assistant' else ''} "
            f"{msgs[-1]['role']} turn; it must end with a user or tool turn"
        )
    return None


# --------------------------------------------------------------------------- assembly


@dataclass
class _Entries:
    """Candidate entries a layout extracts: one per candidate (or a prompt-only entry)."""

    row: np.ndarray  # input row of each entry
    prompt: pa.Array  # MESSAGES_TYPE
    response: pa.Array  # string (null for prompt-only entries)
    generator: pa.Array  # string
    scores: dict[str, pa.Array]  # name -> float64
    is_cand: np.ndarray  # bool
    given_id: pa.Array | None = None  # string
    metadata: pa.Array | None = None  # string, pool-level (first entry of the pool wins)

    def take(self, idx: np.ndarray) -> _Entries:
        i = pa.array(idx, pa.int64())
        return _Entries(
            self.row[idx],
            self.prompt.take(i),
            self.response.take(i),
            self.generator.take(i),
            {k: v.take(i) for k, v in self.scores.items()},
            self.is_cand[idx],
            None if self.given_id is None else self.given_id.take(i),
            None if self.metadata is None else self.metadata.take(i),
        )


@dataclass
class _Assembly:
    """Where each surviving entry went: its pool index and its candidate id (or None)."""

    row: np.ndarray
    pool: np.ndarray
    candidate_id: list[str | None]
    metadata: list[str | None]


def _prompt_keys(prompt: pa.Array) -> pa.Array:
    """A string per prompt that is equal exactly when the messages (role, content) are."""
    flat = prompt.flatten()
    joined = pc.binary_join_element_wise(
        pc.struct_field(flat, "role"), pc.struct_field(flat, "content"), "\x1f"
    )
    offsets = offsets_of(list_lengths(prompt))
    return pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), joined), "\x1e")


def _first_index(codes: np.ndarray, n_codes: int) -> np.ndarray:
    first = np.full(n_codes, -1, dtype=np.int64)
    uniq, idx = np.unique(codes, return_index=True)
    first[uniq] = idx
    return first


def _assemble(
    e: _Entries,
    rej: _Rejects,
    *,
    source: str | None,
    id_field: str | None,
) -> tuple[pa.Table, _Assembly]:
    """Group entries into pools (first-appearance order) and build the candidates."""
    if (dropped := rej.mask(e.row)).any():
        e = e.take(np.flatnonzero(~dropped))
    n = len(e.row)
    score_names = list(e.scores)
    if n:
        keys = pc.dictionary_encode(_prompt_keys(e.prompt))
        kcodes = keys.indices.to_numpy()
        if e.given_id is not None:
            pid = np.array(e.given_id.to_pylist(), dtype=object)
            # A given id must name one prompt: later rows naming another are rejected.
            pcodes = pc.dictionary_encode(pa.array(pid, pa.string())).indices.to_numpy()
            pfirst = _first_index(pcodes, pcodes.max() + 1)
            clash = kcodes != kcodes[pfirst[pcodes]]
            for k in np.flatnonzero(clash):
                first_row = int(e.row[pfirst[pcodes[k]]])
                rej.add(
                    e.row[k],
                    id_field,
                    f"prompt_id {pid[k]!r} is already used by row {first_row} "
                    "for a different prompt",
                    prompt_id=pid[k],
                )
            if clash.any():
                keep = np.flatnonzero(~rej.mask(e.row))
                e, pid = e.take(keep), pid[keep]
                n = len(e.row)
        else:  # one digest per distinct prompt, only when no id is given
            kfirst = _first_index(kcodes, len(keys.dictionary))
            firsts = e.prompt.take(pa.array(kfirst)).to_pylist()
            digests = np.array([ids.prompt_id(p) for p in firsts], dtype=object)
            pid = digests[kcodes]
    else:
        pid = np.array([], dtype=object)

    pid_arr = pa.array(pid.tolist(), pa.string())
    enc = pc.dictionary_encode(pid_arr) if n else None
    pcode = enc.indices.to_numpy().astype(np.int64) if n else np.zeros(0, np.int64)
    n_pools = len(enc.dictionary) if n else 0
    pool_first = _first_index(pcode, n_pools) if n else np.zeros(0, np.int64)

    cand = np.flatnonzero(e.is_cand)
    cand_ids: list[str | None] = [None] * n
    if len(cand):
        gen = e.generator.take(pa.array(cand))
        sample_index = (
            pl.DataFrame({"p": pcode[cand], "g": pl.from_arrow(gen)})
            .select(pl.int_range(pl.len()).over(["p", "g"]).alias("i"))["i"]
            .to_numpy()
            .astype(np.int32)
        )
        resp = e.response.take(pa.array(cand))
        gens, texts = gen.to_pylist(), resp.to_pylist()
        cids = [
            ids.candidate_id(pid[k], g, int(s), t)
            for k, g, s, t in zip(cand.tolist(), gens, sample_index.tolist(), texts, strict=True)
        ]
        for k, c in zip(cand.tolist(), cids, strict=True):
            cand_ids[k] = c
        order = np.argsort(pcode[cand], kind="stable")
        oi = pa.array(order)
        m = len(cand)
        ctype = candidate_type(score_names)
        scores = (
            pa.StructArray.from_arrays(
                [e.scores[s].take(pa.array(cand)).take(oi) for s in score_names],
                fields=list(ctype.field("scores").type),
            )
            if score_names
            else empty_scores(m)
        )
        values = pa.StructArray.from_arrays(
            [
                pa.array(cids, pa.string()).take(oi),
                resp.take(oi),
                gen.take(oi),
                pa.array(sample_index).take(oi),
                pa.nulls(m, pa.int64()),
                pa.nulls(m, pa.string()),
                pa.nulls(m, pa.int32()),
                scores,
                pa.ListArray.from_arrays(
                    pa.array(np.zeros(m + 1, np.int32)), pa.array([], pa.string())
                ),
            ],
            fields=list(ctype),
        )
        counts = np.bincount(pcode[cand], minlength=n_pools)
    else:
        values = pa.array([], candidate_type(score_names))
        counts = np.zeros(n_pools, np.int64)
    offsets = offsets_of(counts)
    candidates = pa.ListArray.from_arrays(pa.array(offsets), values)

    firsts = pa.array(pool_first, pa.int64())
    metadata = e.metadata.take(firsts) if e.metadata is not None else pa.nulls(n_pools, pa.string())
    table = pa.table(
        {
            "prompt_id": enc.dictionary if n else pa.array([], pa.string()),
            "prompt": e.prompt.take(firsts),
            "source": pa.array([source] * n_pools, pa.string()),
            "metadata": metadata,
            "candidates": candidates,
        },
        schema=pool_schema(score_names),
    )
    meta_list = e.metadata.to_pylist() if e.metadata is not None else [None] * n
    return table, _Assembly(e.row, pcode, cand_ids, meta_list)


def _empty_entries(score_names: Sequence[str] = ()) -> _Entries:
    return _Entries(
        np.zeros(0, np.int64),
        pa.array([], MESSAGES_TYPE),
        pa.array([], pa.string()),
        pa.array([], pa.string()),
        {s: pa.array([], pa.float64()) for s in score_names},
        np.zeros(0, bool),
    )


# --------------------------------------------------------------------------- layouts


def _long(raw: pa.Table, rej: _Rejects, o: dict[str, Any]) -> _Entries:
    pcol = _pick(raw, o["prompt_col"], ("prompt", "instruction"), "prompt", "long")
    rcol = _pick(raw, o["response_col"], ("response", "output", "completion"), "response", "long")
    n = raw.num_rows
    prompt = _messages(_column(raw, pcol, "prompt", "long"), pcol, rej)
    response = _strings(_column(raw, rcol, "response", "long"), rcol, rej)
    gcol = o["generator_col"]
    generator = (
        _optional_strings(_column(raw, gcol, "generator", "long"))
        if gcol
        else pa.nulls(n, pa.string())
    )
    scores = {s: _scores(_column(raw, s, "score", "long"), s, rej) for s in o["score_cols"]}
    given = (
        _given_ids(_column(raw, o["id_col"], "id", "long"), o["id_col"], rej)
        if o["id_col"]
        else None
    )
    return _Entries(
        np.arange(n, dtype=np.int64), prompt, response, generator, scores, np.ones(n, bool), given
    )


def _pair_entries(
    rows: list[int],
    prompts: list[list[dict]],
    chosen: list[str],
    rejected: list[str],
    margins: list[float | None] | None,
    given: list[str] | None,
    side: _SideScores | None = None,
) -> _Entries:
    """Two entries per pair (chosen then rejected), preference 1.0 / 0.0, and the per-side
    score ``side.name`` when the dataset records one."""
    k = len(rows)
    twice = lambda xs: [x for x in xs for _ in (0, 1)]  # noqa: E731
    responses = [x for pair in zip(chosen, rejected, strict=True) for x in pair]
    meta = None
    if margins is not None:
        meta = pa.array(
            twice([None if m is None else json.dumps({"margin": m}) for m in margins]), pa.string()
        )
    # preference first: it stays the first score name (what ranks pairs unless asked otherwise)
    scores = {PREFERENCE: pa.array([1.0, 0.0] * k, pa.float64())}
    if side is not None:
        scores[side.name] = side.interleave(np.asarray(rows, dtype=np.int64))
    return _Entries(
        np.repeat(np.asarray(rows, dtype=np.int64), 2),
        pa.array(twice(prompts), MESSAGES_TYPE),
        pa.array(responses, pa.string()),
        pa.nulls(2 * k, pa.string()),
        scores,
        np.ones(2 * k, bool),
        None if given is None else pa.array(twice(given), pa.string()),
        meta,
    )


@dataclass
class _SideScores:
    """A score recorded per side of each pair (``score_chosen`` / ``score_rejected``)."""

    name: str  # the score name both candidates get
    chosen: pa.Array  # float64, one per input row
    rejected: pa.Array  # float64, one per input row

    def interleave(self, rows: np.ndarray) -> pa.Array:
        """(chosen, rejected) of each kept row, in the order of the pair entries."""
        idx = pa.array(rows, pa.int64())
        both = pa.concat_arrays([self.chosen.take(idx), self.rejected.take(idx)])
        k = len(rows)
        order = np.empty(2 * k, dtype=np.int64)
        order[0::2] = np.arange(k)
        order[1::2] = np.arange(k) + k
        return both.take(pa.array(order))


def _side_scores(
    raw: pa.Table, o: dict[str, Any], rej: _Rejects, layout: str
) -> _SideScores | None:
    """The per-side score columns as float64 (null stays null; NaN, infinity or a
    non-number rejects the row, naming the column)."""
    ccol, rcol = o["chosen_score_col"], o["rejected_score_col"]
    if ccol is None:
        return None
    return _SideScores(
        o["score_name"],
        _scores(_column(raw, ccol, "chosen score", layout), ccol, rej),
        _scores(_column(raw, rcol, "rejected score", layout), rcol, rej),
    )


def _margins(raw: pa.Table, o: dict[str, Any], rej: _Rejects) -> list[float | None] | None:
    if not o["margin_col"]:
        return None
    return _scores(
        _column(raw, o["margin_col"], "margin", "pairs"), "margin", rej, field=o["margin_col"]
    ).to_pylist()


def _response_of(
    value: Any, prompt: list[dict] | None, field: str
) -> tuple[str | None, str | None]:
    """The response text of a pairs-layout chosen/rejected value: (text, problem)."""
    if isinstance(value, str):
        return value, None
    if value is None:
        return None, f"{field}: missing (null)"
    bad = _message_problem(value)
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


def _pair_inputs(
    raw: pa.Table, rej: _Rejects, o: dict[str, Any], layout: str
) -> tuple[list, list, Callable[[list, list, list, list], _Entries]]:
    """The chosen and rejected values of a pairwise layout, and ``finish(keep, prompts,
    chosen_texts, rejected_texts)`` that adds the rows' margins, given ids and per-side
    scores (checked column-wise here; bad ones are already in ``rej``)."""
    chosen = _column(raw, o["chosen_col"], "chosen", layout).to_pylist()
    rejected = _column(raw, o["rejected_col"], "rejected", layout).to_pylist()
    margins = _margins(raw, o, rej)
    side = _side_scores(raw, o, rej, layout)
    given = (
        _given_ids(_column(raw, o["id_col"], "id", layout), o["id_col"], rej).to_pylist()
        if o["id_col"]
        else None
    )

    def finish(keep: list, prompts: list, cs: list, rs: list) -> _Entries:
        pick = lambda values: None if values is None else [values[i] for i in keep]  # noqa: E731
        return _pair_entries(keep, prompts, cs, rs, pick(margins), pick(given), side)

    return chosen, rejected, finish


def _pairs(raw: pa.Table, rej: _Rejects, o: dict[str, Any]) -> _Entries:
    ccol, rcol = o["chosen_col"], o["rejected_col"]
    pcol = (
        o["prompt_col"] if o["prompt_col"] else ("prompt" if "prompt" in raw.column_names else None)
    )
    chosen, rejected, finish = _pair_inputs(raw, rej, o, "pairs")
    prompts_in = _column(raw, pcol, "prompt", "pairs").to_pylist() if pcol else None
    keep, prompts, cs, rs = [], [], [], []
    for i in range(raw.num_rows):
        c, r = chosen[i], rejected[i]
        if prompts_in is not None:
            p = prompts_in[i]
            if p is None:
                rej.add(i, pcol, "missing prompt (null)")
                continue
            if isinstance(p, str):
                p = [{"role": "user", "content": p}]
            elif (bad := _message_problem(p)) is not None:
                rej.add(i, pcol + bad[0], bad[1])
                continue
            p = [{"role": m["role"], "content": m["content"]} for m in p]
            if (bad := _prompt_problem(p)) is not None:
                rej.add(i, pcol, bad)
                continue
            c_text, c_bad = _response_of(c, p, ccol)
            r_text, r_bad = _response_of(r, p, rcol)
            if c_bad or r_bad:
                rej.add(i, ccol if c_bad else rcol, c_bad or r_bad)
                continue
        else:
            if isinstance(c, str) or isinstance(r, str):
                rej.add(
                    i,
                    ccol if isinstance(c, str) else rcol,
                    "string chosen/rejected without a prompt column: the prompt cannot be "
                    "split off reliably (pass prompt_col=, or layout='hh' for HH transcripts)",
                )
                continue
            bad_field = None
            for name, v in ((ccol, c), (rcol, r)):
                if v is None:
                    bad_field = (name, "missing (null)")
                elif (bad := _message_problem(v)) is not None:
                    bad_field = (name + bad[0], bad[1])
                if bad_field:
                    break
            if bad_field:
                rej.add(i, *bad_field)
                continue
            c = [{"role": m["role"], "content": m["content"]} for m in c]
            r = [{"role": m["role"], "content": m["content"]} for m in r]
            if not c or c[-1]["role"] != "assistant" or not r or r[-1]["role"] != "assistant":
                which = ccol if not c or c[-1]["role"] != "assistant" else rcol
                rej.add(i, which, "the last message is not an assistant turn")
                continue
            if c[:-1] != r[:-1]:
                rej.add(
                    i,
                    rcol,
                    f"{ccol} and {rcol} differ before the final assistant message "
                    "(the shared prefix is the prompt)",
                )
                continue
            p = c[:-1]
            if (bad := _prompt_problem(p)) is not None:
                rej.add(i, ccol, bad)
                continue
            c_text, r_text = c[-1]["content"], r[-1]["content"]
        if i in rej.items:  # margin or id problems found column-wise
            continue
        keep.append(i)
        prompts.append(p)
        cs.append(c_text)
        rs.append(r_text)
    return finish(keep, prompts, cs, rs)


def _hh(raw: pa.Table, rej: _Rejects, o: dict[str, Any]) -> _Entries:
    ccol, rcol = o["chosen_col"], o["rejected_col"]
    chosen, rejected, finish = _pair_inputs(raw, rej, o, "hh")
    keep, prompts, cs, rs = [], [], [], []
    for i in range(raw.num_rows):
        try:
            p, c, r = split_pair(chosen[i], rejected[i])
        except ValueError as err:
            reason = str(err)
            field = rcol if reason.startswith("rejected") else ccol
            rej.add(i, field, reason)
            continue
        if i in rej.items:
            continue
        keep.append(i)
        prompts.append(p)
        cs.append(c)
        rs.append(r)
    return finish(keep, prompts, cs, rs)


def _rating(
    arr: pa.Array, parent: np.ndarray, pos: np.ndarray, field: str, rej: _Rejects
) -> pa.Array:
    """UltraFeedback ratings: numeric strings to float64, "N/A" (or null) to null."""
    if not _is_string_type(arr.type):
        return _scores_at(arr, parent, pos, field, rej)
    text = pc.utf8_trim_whitespace(arr.cast(pa.string()))
    na = _np_bool(pc.equal(pc.utf8_upper(text), "N/A")) | ~_np_bool(text.is_valid())
    numeric = _np_bool(pc.match_substring_regex(text, _NUMBER.pattern))
    values = text.to_pylist()
    for k in np.flatnonzero(~na & ~numeric):
        rej.add(
            parent[k],
            f"completions[{pos[k]}].{field}",
            f"rating {values[k]!r} is neither a number nor N/A",
        )
    clean = pc.if_else(pa.array(numeric & ~na), text, pa.nulls(len(text), pa.string()))
    out = pc.cast(clean, pa.float64())
    for k in np.flatnonzero(_np_bool(pc.invert(pc.is_finite(out)))):
        rej.add(parent[k], f"completions[{pos[k]}].{field}", f"rating {values[k]!r} is not finite")
    return out


def _scores_at(
    arr: pa.Array, parent: np.ndarray, pos: np.ndarray, field: str, rej: _Rejects
) -> pa.Array:
    local = _Rejects()
    out = _scores(arr, field, local)
    for k, (_, reason, _) in local.items.items():
        rej.add(parent[k], f"completions[{pos[k]}].{field}", reason)
    return out


def _ultrafeedback(raw: pa.Table, rej: _Rejects, o: dict[str, Any]) -> _Entries:
    pcol = _pick(raw, o["prompt_col"], ("instruction", "prompt"), "prompt", "ultrafeedback")
    prompt = _messages(_column(raw, pcol, "prompt", "ultrafeedback"), pcol, rej)
    comps = _column(raw, "completions", "completions", "ultrafeedback")
    if not (
        (pa.types.is_list(comps.type) or pa.types.is_large_list(comps.type))
        and pa.types.is_struct(comps.type.value_type)
    ):
        raise TypeError(
            f"layout 'ultrafeedback': completions has type {comps.type}; "
            "expected a list of completion objects"
        )
    ctype = comps.type.value_type
    rfield = o["response_col"] or "response"
    gfield = o["generator_col"] or "model"
    for r in np.flatnonzero(~_np_bool(comps.is_valid())):
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
    local = _Rejects()
    resp = _strings(resp, rfield, local)
    for k, (_, reason, _) in local.items.items():
        rej.add(parent[k], f"completions[{pos[k]}].{rfield}", reason)
    gen = sub(gfield)
    gen = _optional_strings(gen) if gen is not None else pa.nulls(m, pa.string())

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
    names = list(o["score_cols"]) or available
    scores = {}
    for s in names:
        if s in ULTRAFEEDBACK_ASPECTS and s in available:
            aspect = pc.struct_field(annotations, s)
            if not (pa.types.is_struct(aspect.type) and aspect.type.get_field_index("Rating") >= 0):
                raise TypeError(
                    f"layout 'ultrafeedback': annotations.{s} has type {aspect.type}; "
                    "expected an object with a Rating"
                )
            scores[s] = _rating(
                pc.struct_field(aspect, "Rating"), parent, pos, f"annotations.{s}.Rating", rej
            )
        elif s == "fine_grained_score" and s in available:
            name = "fine-grained_score" if ctype.get_field_index("fine-grained_score") >= 0 else s
            scores[s] = _scores_at(sub(name), parent, pos, name, rej)
        elif (col := sub(s)) is not None:
            scores[s] = (
                _scores_at(col, parent, pos, s, rej)
                if not _is_string_type(col.type)
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
        src = _column(raw, "source", "source", "ultrafeedback").to_pylist()
        meta = pa.array(
            [None if v is None else json.dumps({"source": v}, ensure_ascii=False) for v in src],
            pa.string(),
        ).take(idx)
    pad = lambda a: pa.concat_arrays([a, pa.nulls(len(empty_rows), a.type)]).take(oi)  # noqa: E731
    return _Entries(
        rows[order],
        prompt.take(idx),
        pad(resp),
        pad(gen),
        {s: pad(v) for s, v in scores.items()},
        np.concatenate([np.ones(m, bool), np.zeros(len(empty_rows), bool)])[order],
        None
        if not o["id_col"]
        else _given_ids(_column(raw, o["id_col"], "id", "ultrafeedback"), o["id_col"], rej).take(
            idx
        ),
        meta,
    )


# --------------------------------------------------------------------------- pool layout


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


def _pool(raw: pa.Table, rej: _Rejects, o: dict[str, Any], source: str | None) -> pa.Table:
    t = conform_types(raw)
    n = t.num_rows
    if "prompt" not in t.column_names:
        raise KeyError(f"layout 'pool': no prompt column; columns: {t.column_names}")
    if _is_string_type(t.schema.field("prompt").type):
        msgs = _messages(t["prompt"].combine_chunks(), "prompt", rej)
        t = t.set_column(t.schema.get_field_index("prompt"), "prompt", msgs)
    if o["id_col"] and o["id_col"] != "prompt_id":
        t = t.drop_columns([c for c in ("prompt_id",) if c in t.column_names])
        t = t.rename_columns(["prompt_id" if c == o["id_col"] else c for c in t.column_names])
    if "prompt_id" not in t.column_names or t["prompt_id"].null_count:
        prompts = t["prompt"].to_pylist()
        given = t["prompt_id"].to_pylist() if "prompt_id" in t.column_names else [None] * n
        filled = []
        for g, p in zip(given, prompts, strict=True):
            if g is None and isinstance(p, list) and _message_problem(p) is None:
                g = ids.prompt_id(p)
            filled.append(g)
        col = pa.array(filled, pa.string())
        if "prompt_id" in t.column_names:
            t = t.set_column(t.schema.get_field_index("prompt_id"), "prompt_id", col)
        else:
            t = t.append_column("prompt_id", col)
    elif not _is_string_type(t.schema.field("prompt_id").type):
        t = t.set_column(
            t.schema.get_field_index("prompt_id"),
            "prompt_id",
            _optional_strings(t["prompt_id"].combine_chunks()),
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


# --------------------------------------------------------------------------- entry point


@dataclass(frozen=True)
class LayoutOptions:
    """Which input columns a layout reads (see :func:`to_pools` for which layout uses
    which). One definition for :func:`to_pools`, :func:`prefdata.io.readers.read_pools`,
    the CLI and the recipes; an unknown option is a ``TypeError`` naming it.

    >>> LayoutOptions(score_cols=["rm"]).score_cols
    ('rm',)
    """

    prompt_col: str | None = None
    response_col: str | None = None
    generator_col: str | None = None
    score_cols: Sequence[str] = ()
    id_col: str | None = None
    chosen_col: str = "chosen"
    rejected_col: str = "rejected"
    margin_col: str | None = None
    chosen_score_col: str | None = None
    rejected_score_col: str | None = None
    score_name: str = "score"

    def __post_init__(self) -> None:
        object.__setattr__(self, "score_cols", tuple(self.score_cols))

    def check(self, layout: str) -> LayoutOptions:
        """Raise ``ValueError`` for an unknown layout or inconsistent options."""
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
        _check_side_scores(layout, self.chosen_score_col, self.rejected_score_col, self.score_name)
        return self


def to_pools(
    raw: pa.Table, layout: str, *, source_name: str | None = None, **options: Any
) -> StageOutput:
    """Pools from a raw table in ``layout`` (one of :data:`LAYOUTS`); see the module doc.

    Options by layout: ``long`` uses prompt_col (default ``prompt``, then ``instruction``),
    response_col (``response``, ``output``, ``completion``), generator_col, score_cols and
    id_col; ``pairs`` uses chosen_col, rejected_col, prompt_col (default ``prompt`` if
    present), margin_col, id_col, chosen_score_col / rejected_score_col / score_name;
    ``hh`` uses chosen_col, rejected_col, margin_col, id_col and the per-side scores;
    ``ultrafeedback`` uses prompt_col (``instruction``, ``prompt``), response_col and
    generator_col for completion fields (``response``, ``model``), and score_cols to pick
    scores (default: overall_score, fine_grained_score and the four aspect ratings present;
    another name reads that numeric field of each completion); ``pool`` uses id_col.
    Missing columns named by an option raise :class:`KeyError`; bad rows are rejected.

    Per-side scores (``pairs`` and ``hh``; e.g. ultrafeedback_binarized's ``score_chosen``
    and ``score_rejected``): with ``chosen_score_col`` and ``rejected_score_col`` (both or
    neither) the chosen candidate gets ``scores[score_name]`` from the first column and the
    rejected one from the second, beside ``preference`` (which stays the first score).

    >>> import pyarrow as pa
    >>> out = to_pools(pa.table({"prompt": ["Q"], "chosen": ["A"], "rejected": ["B"]}), "pairs")
    >>> [(c["response"], c["scores"]["preference"]) for c in out.table["candidates"][0].as_py()]
    [('A', 1.0), ('B', 0.0)]
    >>> raw = pa.table({"prompt": ["Q"], "chosen": ["A"], "rejected": ["B"],
    ...                 "score_chosen": [8.5], "score_rejected": [None]})
    >>> out = to_pools(raw, "pairs", chosen_score_col="score_chosen",
    ...                rejected_score_col="score_rejected")
    >>> [c["scores"] for c in out.table["candidates"][0].as_py()]
    [{'preference': 1.0, 'score': 8.5}, {'preference': 0.0, 'score': None}]
    """
    o = dataclasses.asdict(LayoutOptions(**options).check(layout))
    stage = f"layout:{layout}"
    raw = conform_types(raw)
    rej = _Rejects()
    if layout == "pool":
        table = _pool(raw, rej, o, source_name)
    else:
        build = {"long": _long, "pairs": _pairs, "hh": _hh, "ultrafeedback": _ultrafeedback}[layout]
        entries = (
            build(raw, rej, o)
            if raw.num_rows
            else _empty_entries(
                _pair_score_names(o) if layout in ("pairs", "hh") else o["score_cols"]
            )
        )
        table, info = _assemble(entries, rej, source=source_name, id_field=o["id_col"])
        if layout in ("pairs", "hh"):
            table = _pair_metadata(table, info)
        table = conform(table)
        accepted = len(np.unique(info.row))
        if accepted + len(rej.items) != raw.num_rows:  # every row: in a pool or rejected
            raise AssertionError(
                f"{stage}: {raw.num_rows} rows in, {accepted} accepted, {len(rej.items)} rejected"
            )
    return StageOutput(table, rej.table(raw, stage))


def _check_side_scores(
    layout: str, chosen_score_col: str | None, rejected_score_col: str | None, score_name: str
) -> None:
    """Options of the per-side scores: both columns or neither, pairwise layouts, a name
    that is not ``preference``."""
    if chosen_score_col is None and rejected_score_col is None:
        return
    if chosen_score_col is None or rejected_score_col is None:
        given, missing = (
            ("chosen_score_col", "rejected_score_col")
            if chosen_score_col is not None
            else ("rejected_score_col", "chosen_score_col")
        )
        raise ValueError(
            f"{given} needs {missing}: the per-side scores come in pairs (pass both or neither)"
        )
    if layout not in ("pairs", "hh"):
        raise ValueError(
            f"chosen_score_col / rejected_score_col apply to the pairs and hh layouts, "
            f"not {layout!r}; use score_cols for per-response scores"
        )
    if not isinstance(score_name, str) or not score_name.strip():
        raise ValueError(f"score_name must be a non-empty string, got {score_name!r}")
    if score_name == PREFERENCE:
        raise ValueError(
            f"score_name {PREFERENCE!r} is the recorded preference (1.0 chosen, 0.0 rejected); "
            "name the per-side score something else"
        )


def _pair_score_names(o: dict[str, Any]) -> tuple[str, ...]:
    return (PREFERENCE, o["score_name"]) if o["chosen_score_col"] else (PREFERENCE,)


def _pair_metadata(table: pa.Table, info: _Assembly) -> pa.Table:
    """Pools merged from several pairs list the recorded pairs by candidate id."""
    if not len(info.row):
        return table
    rows_per_pool = np.bincount(info.pool, minlength=table.num_rows) // 2
    merged = np.flatnonzero(rows_per_pool > 1)
    if not len(merged):
        return table
    meta = table["metadata"].to_pylist()
    pairs: dict[int, list[dict]] = {int(p): [] for p in merged}
    for k in range(0, len(info.row), 2):  # entries come as (chosen, rejected) per input row
        p = int(info.pool[k])
        if p in pairs:
            item = {"chosen": info.candidate_id[k], "rejected": info.candidate_id[k + 1]}
            if info.metadata[k] is not None:
                item.update(json.loads(info.metadata[k]))
            pairs[p].append(item)
    for p, items in pairs.items():
        meta[p] = json.dumps({"pairs": items}, ensure_ascii=False)
    return table.set_column(
        table.schema.get_field_index("metadata"), "metadata", pa.array(meta, pa.string())
    )


__all__ = ["LAYOUTS", "LayoutOptions", "PREFERENCE", "ULTRAFEEDBACK_SCORES", "to_pools"]
