"""Pair augmentation: RRM and reward-conditioned pairs.

Both are functions over a pairs table returning a :class:`StageOutput` (augmented pairs, and
rejects for input pairs that cannot be used, so ``pairs in = pairs that yielded output +
pairs rejected``).

- :func:`rrm` (Robust Reward Modeling, RLHFlow pair-pm/RRM/rrm_augmentation.py) is
  **dataset-level, not row-local**: each example borrows the responses of two other examples
  drawn by two seeded permutations, so it must see the whole pairs table (or one shard on
  purpose). The table is first sorted by (prompt_id, chosen_id, rejected_id, chosen,
  rejected), so the output does not depend on the input row order.
- :func:`reward_conditioned` (reward-augmented data, shenao-zhang/reward-augmented-preference)
  is row-local: each pair yields the pair conditioned on its chosen score and the swapped
  twin conditioned on its rejected score.

>>> import pyarrow as pa
>>> rows = [{"prompt_id": f"p{i}", "prompt": [{"role": "user", "content": f"q{i}"}],
...          "chosen": f"good{i}", "rejected": f"bad{i}", "strategy": "best-worst",
...          "chosen_score": 8.0, "rejected_score": 3.0} for i in range(3)]
>>> out = reward_conditioned(pa.Table.from_pylist(rows))
>>> [(r["prompt"][0]["content"][-17:], r["chosen"]) for r in out.table.to_pylist()[:2]]
[('Overall score: 8.', 'good0'), ('Overall score: 3.', 'bad0')]
>>> rrm(pa.Table.from_pylist(rows), seed=0).table.num_rows  # 3 examples x (1 + 8 + 6)
45
"""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prefdata.arrow import list_lengths, offsets_of, starts_of
from prefdata.construct.candidates import dumps
from prefdata.ids import digest
from prefdata.pipeline import StageOutput, split
from prefdata.schema import MESSAGE_TYPE, MESSAGES_TYPE, PAIR_SCHEMA

TIE_FIELD = pa.field("tie", pa.bool_())

REWARD_CONDITIONED_TEMPLATE = (
    "You are an assistant that generates responses for the instruction while implicitly "
    "achieving the following target scores (on a scale of 1-10, where 1 is lowest and 10 is "
    "highest):\nOverall score: {score}."
)
"""The system prompt of reward-augmented DPO (METHODS.md); ``{score}`` is the target."""


def _col(pairs: pa.Table, name: str, typ: pa.DataType | None = None) -> pa.Array:
    """A column as one plain array (nulls of ``typ`` when absent)."""
    typ = typ or PAIR_SCHEMA.field(name).type
    if name not in pairs.column_names:
        return pa.nulls(pairs.num_rows, typ)
    return pairs[name].combine_chunks().cast(typ)


def _pair_table(pairs: pa.Table) -> pa.Table:
    """The canonical PAIR_SCHEMA columns of ``pairs`` (absent optional ones as nulls)."""
    for name in ("prompt_id", "prompt", "chosen", "rejected"):
        if name not in pairs.column_names:
            raise KeyError(f"pairs table lacks column {name!r}")
    return pa.Table.from_arrays([_col(pairs, f.name) for f in PAIR_SCHEMA], schema=PAIR_SCHEMA)


def _same_text(pairs: pa.Table, stage: str) -> StageOutput:
    same = pc.fill_null(pc.equal(pairs["chosen"], pairs["rejected"]), False)
    return split(
        pairs,
        ~same.to_numpy(zero_copy_only=False),
        stage,
        "chosen and rejected are the same text",
        field="rejected",
    )


# -- RRM ------------------------------------------------------------------------------------

# slot -> (chosen source, chosen side, rejected source, rejected side); source 0 = i, 1 = j,
# 2 = k; side 0 = chosen, 1 = rejected. The 8 prompt-vs-off-prompt pairs, then the 6 ties.
_OFF = [(1, 0), (2, 0), (1, 1), (2, 1)]  # chosen_j, chosen_k, rejected_j, rejected_k
RRM_SLOTS = [(0, a, b, s) for a in (0, 1) for b, s in _OFF] + [
    (a[0], a[1], b[0], b[1]) for a, b in itertools.combinations(_OFF, 2)
]


def rrm(
    pairs: pa.Table, *, seed: int = 0, include_original: bool = True, max_tries: int = 100
) -> StageOutput:
    """RRM augmentation (METHODS.md). For each example i and two seeded permutations j, k:
    each of {chosen_i, rejected_i} preferred over each of {chosen_j, chosen_k, rejected_j,
    rejected_k} for prompt x_i (8 pairs), and the 6 pairs among those four off-prompt
    responses marked ``tie=True`` (chosen/rejected order then means nothing). With
    ``include_original`` the example itself comes first (``tie=False``): 15 rows per example,
    else 14.

    Dataset-level: needs at least three distinct prompts. The permutations come from a seed
    derived from ``seed``; a row whose j or k would share its prompt (or each other's), or
    would put one text on both sides of a pair, is redrawn uniformly until none does.
    ``margin`` and the other pair statistics are null for augmented rows (no score exists
    for a response under another prompt); provenance names the source rows.
    """
    kept, rejects = _same_text(pairs, "rrm")
    base = _pair_table(kept)
    order = pc.sort_indices(
        base,
        [(c, "ascending") for c in ("prompt_id", "chosen_id", "rejected_id", "chosen", "rejected")],
    )
    base = base.take(order)
    n = base.num_rows
    pid = np.asarray(base["prompt_id"].to_pylist(), dtype=object)
    if len(set(pid.tolist())) < 3:
        raise ValueError("rrm needs pairs from at least three distinct prompts")
    rng = np.random.default_rng(int(digest("rrm", seed), 16) & ((1 << 63) - 1))
    j, k = rng.permutation(n), rng.permutation(n)
    text = np.concatenate(
        [
            np.asarray(base["chosen"].to_pylist(), dtype=object),
            np.asarray(base["rejected"].to_pylist(), dtype=object),
        ]
    )
    src = np.arange(n)

    def bad_rows(j: np.ndarray, k: np.ndarray) -> np.ndarray:
        bad = (pid[j] == pid) | (pid[k] == pid) | (pid[j] == pid[k])
        rows = np.stack([src, j, k])
        for a, sa, b, sb in RRM_SLOTS:
            bad |= text[rows[a] + sa * n] == text[rows[b] + sb * n]
        return bad

    for _ in range(max_tries):
        bad = bad_rows(j, k)
        if not bad.any():
            break
        j[bad] = rng.integers(n, size=int(bad.sum()))
        k[bad] = rng.integers(n, size=int(bad.sum()))
    else:
        first = int(np.flatnonzero(bad_rows(j, k))[0])
        raise ValueError(
            f"rrm: no off-prompt partners found for row {first} (prompt_id {pid[first]!r}) "
            f"after {max_tries} draws; too few distinct prompts or responses"
        )

    slots = ([(0, 0, 0, 1)] if include_original else []) + RRM_SLOTS
    per = len(slots)
    rows = np.stack([src, j, k])
    i_rep = np.repeat(src, per)
    c_idx = np.concatenate([[rows[a] + sa * n] for a, sa, _, _ in slots]).T.reshape(-1)
    r_idx = np.concatenate([[rows[b] + sb * n] for _, _, b, sb in slots]).T.reshape(-1)
    ci, ri = pa.array(c_idx), pa.array(r_idx)
    ii = pa.array(i_rep)
    both = {
        name: pa.concat_arrays(
            [base[f"chosen{suf}"].combine_chunks(), base[f"rejected{suf}"].combine_chunks()]
        )
        for name, suf in (("text", ""), ("id", "_id"), ("gen", "_generator"))
    }
    kind_of_slot = (
        (["original"] if include_original else [])
        + ["prompt-over-off-prompt"] * 8
        + ["off-prompt-tie"] * 6
    )
    kinds = np.tile(np.array(kind_of_slot, dtype=object), n)
    is_orig = kinds == "original"
    is_tie = kinds == "off-prompt-tie"
    provenance = [
        dumps(
            {
                "stage": "rrm",
                "seed": seed,
                "kind": kind,
                "source": pid[i],
                "off_prompt": [pid[j[i]], pid[k[i]]],
            }
        )
        for i, kind in zip(i_rep, kinds, strict=True)
    ]

    def keep_or_null(name: str) -> pa.Array:
        return pc.if_else(
            pa.array(is_orig),
            base[name].combine_chunks().take(ii),
            pa.nulls(len(i_rep), PAIR_SCHEMA.field(name).type),
        )

    cols = {
        "prompt_id": base["prompt_id"].combine_chunks().take(ii),
        "prompt": base["prompt"].combine_chunks().take(ii),
        "chosen": both["text"].take(ci),
        "rejected": both["text"].take(ri),
        "chosen_id": both["id"].take(ci),
        "rejected_id": both["id"].take(ri),
        "chosen_generator": both["gen"].take(ci),
        "rejected_generator": both["gen"].take(ri),
        **{
            n_: keep_or_null(n_)
            for n_ in ("margin", "strength_mean", "strength_std", "p_chosen", "votes", "rationale")
        },
        "strategy": pc.if_else(
            pa.array(is_orig), base["strategy"].combine_chunks().take(ii), pa.scalar("rrm")
        ),
        "provenance": pa.array(provenance, pa.string()),
        "tie": pa.array(is_tie),
    }
    schema = pa.schema(list(PAIR_SCHEMA) + [TIE_FIELD])
    return StageOutput(pa.Table.from_arrays([cols[f.name] for f in schema], schema=schema), rejects)


# -- reward-conditioned ---------------------------------------------------------------------


def _format_score(
    values: np.ndarray, scale: tuple[float, float] | None, decimals: int
) -> list[str]:
    if scale is not None:
        lo, hi = scale
        values = 1.0 + 9.0 * np.clip((values - lo) / (hi - lo), 0.0, 1.0)
    return [f"{round(float(v), decimals):g}" for v in values]


def _prepend_system(prompts: pa.ListArray, system: list[str]) -> pa.ListArray:
    """Each prompt with a system message at the front; an existing leading system message
    is merged into it (the new text first, a blank line, then the old text) so there is
    never a second system turn."""
    prompts = prompts.cast(MESSAGES_TYPE)
    n = len(prompts)
    lengths = list_lengths(prompts)
    values = pc.list_flatten(prompts)
    starts = starts_of(lengths)
    roles = pc.struct_field(values, "role").to_numpy(zero_copy_only=False)
    contents = pc.struct_field(values, "content").to_pylist()
    has_sys = (lengths > 0) & np.array(
        [lengths[i] > 0 and roles[starts[i]] == "system" for i in range(n)], dtype=bool
    )
    text = [f"{system[i]}\n\n{contents[starts[i]]}" if has_sys[i] else system[i] for i in range(n)]
    sys_msgs = pa.StructArray.from_arrays(
        [pa.array(["system"] * n), pa.array(text)], fields=list(MESSAGE_TYPE)
    )
    allv = pa.concat_arrays([sys_msgs, values.cast(MESSAGE_TYPE)])
    new_len = 1 + lengths - has_sys
    idx = np.empty(int(new_len.sum()), dtype=np.int64)
    offsets = offsets_of(new_len, np.int64)
    idx[offsets[:-1]] = np.arange(n)
    rest = np.ones(idx.size, dtype=bool)
    rest[offsets[:-1]] = False
    old = (
        np.concatenate(
            [np.arange(starts[i] + has_sys[i], starts[i] + lengths[i]) for i in range(n)]
        )
        if n
        else np.array([], dtype=np.int64)
    )
    idx[rest] = n + old
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), allv.take(pa.array(idx)))


def reward_conditioned(
    pairs: pa.Table,
    *,
    template: str = REWARD_CONDITIONED_TEMPLATE,
    scale: tuple[float, float] | None = None,
    decimals: int = 1,
) -> StageOutput:
    """Reward-augmented pairs: each pair (with ``chosen_score`` and ``rejected_score``, as
    :class:`Pairs` emits them) yields two rows, in this order:

    1. system ``template.format(score=s_chosen)`` + prompt, chosen > rejected;
    2. system ``template.format(score=s_rejected)`` + prompt, rejected > chosen (the twin).

    The system message goes at the front of the prompt messages (merged into an existing
    leading system message). ``scale=(lo, hi)`` maps scores linearly onto the template's 1-10
    scale (clipped); scores are shown rounded to ``decimals``. ``margin`` keeps its meaning
    (score of the row's chosen minus its rejected), so the twin's margin is negative: drop
    it before a margin-aware reward-model loss. Extra columns: ``chosen_score``,
    ``rejected_score``, ``target_score`` (the unscaled score in the system prompt). Pairs
    with a null score are rejected with the field named.
    """
    if "{score}" not in template:
        raise ValueError("template must contain '{score}'")
    if scale is not None and not scale[1] > scale[0]:
        raise ValueError(f"scale must be (low, high) with high > low, got {scale}")
    cs = _col(pairs, "chosen_score", pa.float64()).to_numpy(zero_copy_only=False)
    rs = _col(pairs, "rejected_score", pa.float64()).to_numpy(zero_copy_only=False)
    same = pc.fill_null(pc.equal(_col(pairs, "chosen"), _col(pairs, "rejected")), False)
    same = same.to_numpy(zero_copy_only=False)
    reasons = [
        "chosen and rejected are the same text"
        if sm
        else "score is null"
        if not (np.isfinite(c) and np.isfinite(r))
        else None
        for sm, c, r in zip(same, cs, rs, strict=True)
    ]
    fields = [
        None
        if why is None
        else "rejected"
        if why.startswith("chosen and")
        else "chosen_score"
        if not np.isfinite(c)
        else "rejected_score"
        for why, c, r in zip(reasons, cs, rs, strict=True)
    ]
    keep = np.array([why is None for why in reasons], dtype=bool)
    kept, rejects = split(pairs, keep, "reward_conditioned", reasons, field=fields)
    base = _pair_table(kept)
    n = base.num_rows
    cs_np = _col(kept, "chosen_score", pa.float64()).to_numpy(zero_copy_only=False)
    rs_np = _col(kept, "rejected_score", pa.float64()).to_numpy(zero_copy_only=False)
    src = np.repeat(np.arange(n), 2)
    swap = np.tile([False, True], n)
    target = np.where(swap, rs_np[src], cs_np[src])
    shown = _format_score(target, scale, decimals)
    system = [template.format(score=s) for s in shown]
    si = pa.array(src)
    ch = pa.concat_arrays([base["chosen"].combine_chunks(), base["rejected"].combine_chunks()])
    pos = pa.array(src + swap * n)
    neg = pa.array(src + (~swap) * n)

    def two(name: str) -> pa.Array:
        return pa.concat_arrays(
            [base[f"chosen{name}"].combine_chunks(), base[f"rejected{name}"].combine_chunks()]
        )

    margin = base["margin"].combine_chunks().take(si)
    margin = pc.if_else(pa.array(swap), pc.negate(margin), margin)
    old_prov = base["provenance"].combine_chunks().take(si).to_pylist()
    provenance = [
        dumps(
            {
                "stage": "reward_conditioned",
                "swapped": bool(w),
                "target_score": float(t),
                "shown_score": s,
                "scale": scale,
                "source": p,
            }
        )
        for w, t, s, p in zip(swap, target, shown, old_prov, strict=True)
    ]
    cols = {
        "prompt_id": base["prompt_id"].combine_chunks().take(si),
        "prompt": _prepend_system(base["prompt"].combine_chunks().take(si), system),
        "chosen": ch.take(pos),
        "rejected": ch.take(neg),
        "chosen_id": two("_id").take(pos),
        "rejected_id": two("_id").take(neg),
        "chosen_generator": two("_generator").take(pos),
        "rejected_generator": two("_generator").take(neg),
        "margin": margin,
        **{k: base[k].combine_chunks().take(si) for k in ("strength_mean", "strength_std")},
        # votes count scorers agreeing with the original order: unknown for the twin
        "votes": pc.if_else(
            pa.array(swap), pa.nulls(2 * n, pa.int32()), base["votes"].combine_chunks().take(si)
        ),
        "p_chosen": pc.if_else(
            pa.array(swap),
            pc.subtract(pa.scalar(1.0), base["p_chosen"].combine_chunks().take(si)),
            base["p_chosen"].combine_chunks().take(si),
        ),
        "rationale": pa.nulls(2 * n, pa.string()),
        "strategy": pa.repeat(pa.scalar("reward-conditioned"), 2 * n),
        "provenance": pa.array(provenance, pa.string()),
        "chosen_score": pa.array(np.concatenate([cs_np, rs_np])).take(pos),
        "rejected_score": pa.array(np.concatenate([cs_np, rs_np])).take(neg),
        "target_score": pa.array(target, pa.float64()),
    }
    # strength_mean is chosen-minus-rejected too: negate it for the twin
    cols["strength_mean"] = pc.if_else(
        pa.array(swap), pc.negate(cols["strength_mean"]), cols["strength_mean"]
    )
    schema = pa.schema(
        list(PAIR_SCHEMA)
        + [
            pa.field("chosen_score", pa.float64()),
            pa.field("rejected_score", pa.float64()),
            pa.field("target_score", pa.float64()),
        ]
    )
    out = pa.Table.from_arrays([cols[f.name] for f in schema], schema=schema)
    return StageOutput(out, rejects)


__all__ = ["REWARD_CONDITIONED_TEMPLATE", "RRM_SLOTS", "reward_conditioned", "rrm"]
