"""Listwise JSON Lines in the layout of PRO's reference code (AlibabaResearch/DAMO-ConvAI,
``PRO/train/utils/data_manager.py`` and ``PRO/train/hh_preprocess_data/step_1_process.py``).

One line per prompt: ``prefix`` holds one copy of the prompt per response, each a list of
turn strings tagged ``<|prompter|>`` / ``<|assistant|>`` and ending with a bare
``<|assistant|>`` (the collator joins them and maps the tags to "Human:" / "Assistant:");
``suffix`` holds the responses best to worst; ``reward`` their scores, descending;
``sft_index`` is 0 (the best response gets the SFT loss). A system turn is kept as untagged
text at the start of the prefix; tool turns cannot be expressed and are rejected. The
conversational ``prompt`` and the shared ``rank`` (ties share a rank) are written too, for
other listwise readers.

PRO's collator slices ``[:training_stage]`` and reshapes, so every row needs at least
``training_stage`` responses: pass ``num_responses`` to cut lists to one length (shorter
lists are rejected).

>>> r = to_listwise({"prompt": [{"role": "user", "content": "Hi"}], "responses": [
...     {"response": "Hello!", "score": 2.0, "rank": 1},
...     {"response": "Go.", "score": -1.0, "rank": 2}]})
>>> r["prefix"][0], r["suffix"], r["reward"], r["sft_index"]
(['<|prompter|>Hi', '<|assistant|>'], ['Hello!', 'Go.'], [2.0, -1.0], 0)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prefdata.arrow import list_lengths, offsets_of, parents_of, starts_of
from prefdata.io.export._arrow import (
    Converted,
    Messages,
    Reasons,
    apply_map,
    check_prompt,
    column,
    finish,
    keep_columns,
)
from prefdata.io.export.trl import check_prompt_record

TAGS = {"user": "<|prompter|>", "assistant": "<|assistant|>", "system": ""}


def _prefix(prompt: list[dict[str, str]]) -> list[str]:
    out = []
    for i, m in enumerate(prompt):
        if m["role"] == "tool":
            raise ValueError(f"prompt[{i}] is a tool turn, which PRO's prefix cannot hold")
        if m["role"] == "system" and i:
            raise ValueError(f"prompt[{i}] is a system turn after the first message")
        out.append(TAGS[m["role"]] + m["content"])
    return out + [TAGS["assistant"]]


def to_listwise(lst: Mapping[str, Any], *, num_responses: int | None = None) -> dict[str, Any]:
    """A canonical ranked list as a PRO-style record."""
    prompt = check_prompt_record(lst.get("prompt"))
    responses = list(lst.get("responses") or [])
    if num_responses is not None:
        if len(responses) < num_responses:
            raise ValueError(f"responses has {len(responses)} entries, fewer than {num_responses}")
        responses = responses[:num_responses]
    if len(responses) < 2:
        raise ValueError("responses has fewer than 2 entries")
    for i, r in enumerate(responses):
        if r is None:
            raise ValueError(f"responses[{i}] is null")
        if r.get("response") is None:
            raise ValueError(f"responses[{i}].response is null")
        if r.get("score") is None or not math.isfinite(r["score"]):
            raise ValueError(
                f"responses[{i}].score is {r.get('score')} (PRO needs a finite reward per response)"
            )
    scores = [float(r["score"]) for r in responses]
    if any(b > a for a, b in zip(scores, scores[1:], strict=False)):
        raise ValueError("responses are not ordered best first (scores not descending)")
    prefix = _prefix(prompt)
    return {
        "prefix": [list(prefix) for _ in responses],
        "suffix": [r["response"] for r in responses],
        "reward": scores,
        "sft_index": 0,
        "prompt": prompt,
        "rank": [int(r["rank"]) for r in responses],
    }


def listwise_table(
    lists: pa.Table, *, num_responses: int | None = None, keep: Sequence[str] | str = ()
) -> Converted:
    """Vectorised :func:`to_listwise` over a list table (``LIST_SCHEMA``)."""
    n = lists.num_rows
    msgs = Messages.of(lists["prompt"])
    reasons = Reasons(n)
    check_prompt(reasons, lists, msgs)
    reasons.add(msgs.any_per_row(msgs.role_in(("tool",))), "prompt has a tool turn", "prompt")
    reasons.add(
        msgs.any_per_row(msgs.role_in(("system",)) & (msgs.positions > 0)),
        "prompt has a system turn after the first message",
        "prompt",
    )
    resp = column(lists, "responses")
    lengths = list_lengths(resp)
    flat = resp.flatten()
    row_ids = parents_of(lengths)
    pos = np.arange(len(flat)) - starts_of(lengths)[row_ids]
    take = np.ones(len(flat), dtype=bool)
    if num_responses is not None:
        reasons.add(lengths < num_responses, f"fewer than {num_responses} responses", "responses")
        take = pos < num_responses
    used = np.bincount(row_ids[take], minlength=n)
    reasons.add(used < 2, "fewer than 2 responses", "responses")
    # struct_field honours a null response's mask (StructArray.field reads what it hides)
    text_null = pc.struct_field(flat, "response").is_null().to_numpy(zero_copy_only=False) & take
    reasons.add(np.bincount(row_ids[text_null], minlength=n) > 0, "a response is null", "responses")
    s = pc.fill_null(pc.struct_field(flat, "score").cast(pa.float64()), np.nan)
    s = s.to_numpy(zero_copy_only=False)
    score_null = ~np.isfinite(s) & take  # null, NaN or infinite: no reward to train on
    reasons.add(
        np.bincount(row_ids[score_null], minlength=n) > 0,
        "a response has a null or non-finite score (PRO needs a finite reward per response)",
        "responses",
    )
    s = np.where(np.isfinite(s), s, 0.0)
    rising = np.zeros(len(flat), dtype=bool)
    if len(flat) > 1:
        same_row = row_ids[1:] == row_ids[:-1]
        rising[1:] = same_row & (s[1:] > s[:-1]) & take[1:]
    reasons.add(
        np.bincount(row_ids[rising], minlength=n) > 0,
        "responses are not ordered best first (scores not descending)",
        "responses",
    )

    def build(kept: pa.Table, idx: np.ndarray) -> pa.Table:
        sub_msgs = msgs.take_rows(idx)
        # tool turns and unknown roles were rejected above: every role has a tag
        tags = apply_map(sub_msgs.role_array, TAGS)
        texts = pc.binary_join_element_wise(tags, sub_msgs.contents, "")
        prefix_one = Messages(sub_msgs.role_array, texts, sub_msgs.lengths).append(
            "assistant", pa.array(np.full(len(idx), TAGS["assistant"], dtype=object), pa.string())
        )
        one = pa.ListArray.from_arrays(
            pa.array(offsets_of(prefix_one.lengths)),
            prefix_one.contents,
        )
        # Flat responses of the kept rows (cut to num_responses), then per-row counts.
        keep_flat = take & np.isin(row_ids, idx)
        k = np.bincount(row_ids[keep_flat], minlength=n)[idx]
        offsets = pa.array(offsets_of(k))
        sel = flat.take(pa.array(np.flatnonzero(keep_flat)))
        copies = one.take(pa.array(np.repeat(np.arange(len(idx)), k)))
        prefix = pa.ListArray.from_arrays(offsets, copies)
        out = {
            "prefix": prefix,
            "suffix": pa.ListArray.from_arrays(offsets, pc.struct_field(sel, "response")),
            "reward": pa.ListArray.from_arrays(
                offsets, pc.struct_field(sel, "score").cast(pa.float64())
            ),
            "sft_index": pa.array(np.zeros(len(idx), dtype=np.int64)),
            "prompt": sub_msgs.to_array(),
            "rank": pa.ListArray.from_arrays(
                offsets, pc.struct_field(sel, "rank").cast(pa.int32())
            ),
        }
        return pa.table(keep_columns(kept, out, keep, {"prompt", "responses"}))

    return finish(lists, reasons, "export:listwise", build)
