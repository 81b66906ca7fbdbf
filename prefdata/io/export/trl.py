"""TRL: DPO (prompt, chosen, rejected), reward (+ margin) and KTO (prompt, completion, label).

Everything is conversational with an explicit prompt (TRL ``docs/source/dataset_formats.md``):
the prompt is the message list, each response is ``[{"role": "assistant", ...}]``. That avoids
TRL's sharp edges: ``is_conversational`` looks at one key picked by ``set.pop()``, so a string
prompt beside message-list responses is read either way; an empty message list raises
IndexError; implicit prompts of strings are split by a character-level common prefix.

Written as Parquet with the ``huggingface`` features metadata: ``label`` stays a bool and
``margin`` a float64 even where a JSON reader would guess other types.

>>> rec = {"prompt": [{"role": "user", "content": "2+2?"}], "chosen": "4", "rejected": "5"}
>>> to_trl_dpo(rec)["chosen"]
[{'role': 'assistant', 'content': '4'}]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from prefdata.construct.unpaired import unpair
from prefdata.io.export._arrow import (
    Converted,
    Messages,
    Reasons,
    check_distinct,
    check_finite,
    check_prompt,
    check_text,
    column,
    finish,
    keep_columns,
)
from prefdata.pipeline import rejects_from
from prefdata.schema import PROMPT_END_ROLES, ROLES

# ---------------------------------------------------------------- per-record converters


def check_prompt_record(prompt: Any, field: str = "prompt") -> list[dict[str, str]]:
    """Validate one canonical prompt; return it as plain ``{"role", "content"}`` dicts.

    >>> check_prompt_record([])
    Traceback (most recent call last):
    ...
    ValueError: prompt is an empty message list
    """
    if prompt is None:
        raise ValueError(f"{field} is null")
    if isinstance(prompt, str):
        raise ValueError(f"{field} is a string; expected a message list")
    nulls = [i for i, m in enumerate(prompt) if m is None]
    if nulls:
        raise ValueError(f"{field}[{nulls[0]}] is null")
    msgs = [{"role": m["role"], "content": m["content"]} for m in prompt]
    if not msgs:
        raise ValueError(f"{field} is an empty message list")
    for i, m in enumerate(msgs):
        if m["role"] not in ROLES:
            raise ValueError(f"{field}[{i}].role {m['role']!r} is not one of {ROLES}")
        if m["content"] is None:
            raise ValueError(f"{field}[{i}].content is null")
    if msgs[-1]["role"] not in PROMPT_END_ROLES:
        raise ValueError(f"{field} does not end with a user or tool turn")
    return msgs


def record_text(record: Mapping[str, Any], key: str) -> str:
    value = record.get(key)
    if value is None:
        raise ValueError(f"{key} is null")
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string, got {type(value).__name__}")
    return value


def pair_parts(pair: Mapping[str, Any]) -> tuple[list[dict[str, str]], str, str]:
    prompt = check_prompt_record(pair.get("prompt"))
    chosen, rejected = record_text(pair, "chosen"), record_text(pair, "rejected")
    if chosen == rejected:
        raise ValueError("chosen and rejected are identical")
    return prompt, chosen, rejected


def assistant(text: str) -> list[dict[str, str]]:
    """A one-message assistant turn."""
    return [{"role": "assistant", "content": text}]


def to_trl_dpo(pair: Mapping[str, Any]) -> dict[str, Any]:
    """A canonical pair as a TRL conversational preference example (explicit prompt).

    >>> to_trl_dpo({"prompt": [{"role": "user", "content": "Hi"}], "chosen": "Hello!",
    ...             "rejected": "Go away."})
    ... # doctest: +NORMALIZE_WHITESPACE
    {'prompt': [{'role': 'user', 'content': 'Hi'}],
     'chosen': [{'role': 'assistant', 'content': 'Hello!'}],
     'rejected': [{'role': 'assistant', 'content': 'Go away.'}]}
    """
    prompt, chosen, rejected = pair_parts(pair)
    out = {"prompt": prompt, "chosen": assistant(chosen), "rejected": assistant(rejected)}
    for key in ("ref_chosen_logps", "ref_rejected_logps"):
        if pair.get(key) is not None:
            out[key] = float(pair[key])
    return out


def to_trl_reward(pair: Mapping[str, Any], *, margin_scale: float = 1.0) -> dict[str, Any]:
    """A canonical pair for TRL's RewardTrainer; ``margin`` (when given) enters the loss as
    ``-logsigmoid(r_chosen - r_rejected - margin)``.

    >>> to_trl_reward({"prompt": [{"role": "user", "content": "Hi"}], "chosen": "Hello!",
    ...                "rejected": "Go away.", "margin": 1.5})["margin"]
    1.5
    """
    prompt, chosen, rejected = pair_parts(pair)
    out: dict[str, Any] = {
        "prompt": prompt,
        "chosen": assistant(chosen),
        "rejected": assistant(rejected),
    }
    if "margin" in pair:
        if pair["margin"] is None:
            raise ValueError("margin is null (RewardTrainer needs a float on every row)")
        if not math.isfinite(pair["margin"]):
            raise ValueError("margin is NaN or infinite")
        out["margin"] = float(pair["margin"]) * margin_scale
    return out


def to_trl_kto(example: Mapping[str, Any]) -> dict[str, Any]:
    """A canonical unpaired example as a TRL KTO example; ``label`` is a real bool.

    >>> to_trl_kto({"prompt": [{"role": "user", "content": "Hi"}], "completion": "Hello!",
    ...             "label": True})
    ... # doctest: +NORMALIZE_WHITESPACE
    {'prompt': [{'role': 'user', 'content': 'Hi'}],
     'completion': [{'role': 'assistant', 'content': 'Hello!'}], 'label': True}
    """
    prompt = check_prompt_record(example.get("prompt"))
    completion = record_text(example, "completion")
    label = example.get("label")
    if not isinstance(label, bool):
        raise ValueError(f"label must be a bool, got {label!r}")
    return {"prompt": prompt, "completion": assistant(completion), "label": label}


def unpair_record(pair: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A pair as two unpaired examples (chosen -> True, rejected -> False), like TRL's
    ``unpair_preference_dataset``.

    >>> [r["label"] for r in unpair_record({"prompt_id": "p", "prompt": [], "chosen": "a",
    ...                                     "rejected": "b"})]
    [True, False]
    """
    base = {"prompt_id": pair.get("prompt_id"), "prompt": pair.get("prompt")}
    return [
        {
            **base,
            "completion": pair.get("chosen"),
            "candidate_id": pair.get("chosen_id"),
            "label": True,
        },
        {
            **base,
            "completion": pair.get("rejected"),
            "candidate_id": pair.get("rejected_id"),
            "label": False,
        },
    ]


# ---------------------------------------------------------------- table converters


def pair_reasons(pairs: pa.Table, prompt: Messages) -> Reasons:
    """Rejection reasons shared by every pair format."""
    reasons = Reasons(pairs.num_rows)
    check_prompt(reasons, pairs, prompt)
    check_text(reasons, pairs, "chosen")
    check_text(reasons, pairs, "rejected")
    check_distinct(reasons, pairs, "chosen", "rejected")
    return reasons


def trl_dpo_table(pairs: pa.Table, *, keep: Sequence[str] | str = ()) -> Converted:
    """Vectorised :func:`to_trl_dpo` over a pair table; bad rows go to rejects.

    >>> from prefdata.schema import PAIR_SCHEMA
    >>> t = pa.Table.from_pylist([{"prompt_id": "p", "prompt": [{"role": "user", "content": "Q"}],
    ...     "chosen": "A", "rejected": "B", "strategy": "best-worst"}], schema=PAIR_SCHEMA)
    >>> trl_dpo_table(t).table.column_names
    ['prompt', 'chosen', 'rejected']
    """
    msgs = Messages.of(pairs["prompt"])
    reasons = pair_reasons(pairs, msgs)

    def build(kept: pa.Table, idx: np.ndarray) -> pa.Table:
        out = {
            "prompt": msgs.take_rows(idx).to_array(),
            "chosen": Messages.single("assistant", kept["chosen"]).to_array(),
            "rejected": Messages.single("assistant", kept["rejected"]).to_array(),
        }
        for key in ("ref_chosen_logps", "ref_rejected_logps"):
            if key in kept.column_names:
                out[key] = column(kept, key).cast(pa.float64())
        consumed = {"prompt", "chosen", "rejected"}
        return pa.table(keep_columns(kept, out, keep, consumed))

    return finish(pairs, reasons, "export:trl-dpo", build)


def _use_margin(pairs: pa.Table, margin: bool | None) -> bool:
    if margin is None:
        return "margin" in pairs.column_names and pairs["margin"].null_count < pairs.num_rows
    if margin and "margin" not in pairs.column_names:
        raise KeyError("margin=True but the pair table has no margin column")
    return margin


def trl_reward_table(
    pairs: pa.Table,
    *,
    margin: bool | None = None,
    margin_scale: float = 1.0,
    keep: Sequence[str] | str = (),
) -> Converted:
    """Vectorised :func:`to_trl_reward`. ``margin=None`` writes the margin column when the
    input has any margin; rows with a null margin are then rejected (RewardTrainer's collator
    needs a float on every row). ``margin=False`` leaves it out.
    """
    use_margin = _use_margin(pairs, margin)
    msgs = Messages.of(pairs["prompt"])
    reasons = pair_reasons(pairs, msgs)
    if use_margin:
        null = column(pairs, "margin").is_null().to_numpy(zero_copy_only=False)
        reasons.add(null, "margin is null (RewardTrainer needs a float on every row)", "margin")
        check_finite(reasons, pairs, "margin")

    def build(kept: pa.Table, idx: np.ndarray) -> pa.Table:
        out = {
            "prompt": msgs.take_rows(idx).to_array(),
            "chosen": Messages.single("assistant", kept["chosen"]).to_array(),
            "rejected": Messages.single("assistant", kept["rejected"]).to_array(),
        }
        if use_margin:
            out["margin"] = pc.multiply(column(kept, "margin").cast(pa.float64()), margin_scale)
        consumed = {"prompt", "chosen", "rejected", "margin"}
        return pa.table(keep_columns(kept, out, keep, consumed))

    return finish(pairs, reasons, "export:trl-reward", build)


def trl_kto_table(table: pa.Table, *, keep: Sequence[str] | str = ()) -> Converted:
    """Vectorised :func:`to_trl_kto` over an unpaired table, or over a pair table (unpaired
    first; ``rows_in`` then counts the two unpaired rows of each pair, and exact duplicates of
    ``(prompt_id, completion, label)``, which unpairing creates when one response is in
    several pairs, are rejected as such). A completion labelled both True and False for the
    same prompt is rejected in every row, with a reason.
    """
    from_pairs = "chosen" in table.column_names and "rejected" in table.column_names
    source = unpair(table, dedupe=False, chosen_first=True) if from_pairs else table
    msgs = Messages.of(source["prompt"])
    reasons = Reasons(source.num_rows)
    check_prompt(reasons, source, msgs)
    check_text(reasons, source, "completion")
    label = column(source, "label")
    if not pa.types.is_boolean(label.type):
        raise TypeError(f"label must be a bool column, got {label.type}")
    reasons.add(label.is_null().to_numpy(zero_copy_only=False), "label is null", "label")
    if from_pairs:
        dup = (
            pl.from_arrow(source.select(["prompt_id", "completion", "label"]))
            .select(pl.struct(pl.all()).is_first_distinct().not_())
            .to_series()
            .to_numpy()
        )
        reasons.add(dup, "duplicate (prompt_id, completion, label) after unpairing", "completion")
    # A completion labelled both desirable and undesirable for one prompt (a middle response
    # of all-pairs or curriculum pairs) is label noise for KTO: reject every such row.
    conflict = (
        pl.from_arrow(source.select(["prompt_id", "completion", "label"]))
        .select(pl.col("label").n_unique().over(["prompt_id", "completion"]) > 1)
        .to_series()
        .to_numpy()
    )
    reasons.add(
        conflict,
        "completion labelled both desirable and undesirable for this prompt",
        "label",
    )

    def build(kept: pa.Table, idx: np.ndarray) -> pa.Table:
        out = {
            "prompt": msgs.take_rows(idx).to_array(),
            "completion": Messages.single("assistant", kept["completion"]).to_array(),
            "label": column(kept, "label"),
        }
        return pa.table(keep_columns(kept, out, keep, {"prompt", "completion", "label"}))

    return finish(source, reasons, "export:trl-kto", build)


__all__ = [
    "assistant",
    "check_prompt_record",
    "pair_reasons",
    "rejects_from",
    "to_trl_dpo",
    "to_trl_kto",
    "to_trl_reward",
    "trl_dpo_table",
    "trl_kto_table",
    "trl_reward_table",
    "unpair",
    "unpair_record",
]
