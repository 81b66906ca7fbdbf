"""Chat-template tokenisation and length-bucketed batching shared by the model scorers.

>>> plan_batches([5, 100, 7, 98], token_budget=200)
[[1, 3], [2, 0]]
>>> round(padding_waste([5, 100, 7, 98], [[1, 3], [2, 0]]), 4)
0.0187
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "chat_token_ids",
    "fixed_batches",
    "padding_waste",
    "plan_batches",
    "resolve_pad_id",
]


def plan_batches(
    lengths: Sequence[int] | np.ndarray, token_budget: int, max_rows: int | None = None
) -> list[list[int]]:
    """Batches of indices, longest first, each padded size ``rows * max_len`` within budget.

    Sorting by length puts sequences of similar length together (little padding); the
    longest batch comes first so an out-of-memory error shows at once. A sequence longer than
    the budget gets a batch of its own. Ties keep input order (stable sort): deterministic.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    batches: list[list[int]] = []
    cur: list[int] = []
    cur_max = 0
    for i in order.tolist():
        n = int(lengths[i])
        width = max(cur_max, n)
        if cur and (width * (len(cur) + 1) > token_budget or (max_rows and len(cur) >= max_rows)):
            batches.append(cur)
            cur, width = [], n
        cur.append(i)
        cur_max = width
    if cur:
        batches.append(cur)
    return batches


def fixed_batches(n: int, batch_size: int) -> list[list[int]]:
    """Naive batching: fixed row count, input order (the baseline of the benchmark)."""
    return [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]


def padding_waste(lengths: Sequence[int] | np.ndarray, batches: Sequence[Sequence[int]]) -> float:
    """Share of the computed token slots that are padding."""
    lengths = np.asarray(lengths)
    slots = sum(len(b) * int(lengths[list(b)].max()) for b in batches if len(b))
    real = sum(int(lengths[list(b)].sum()) for b in batches if len(b))
    return 0.0 if slots == 0 else 1.0 - real / slots


def resolve_pad_id(tokenizer: Any) -> int:
    """A pad id that differs from EOS.

    Sequence-classification heads read the rightmost non-pad token; if pad equalled the EOS
    that ends the chat template, that EOS would be skipped. Padded positions are masked, so any
    id that never ends a real sequence works: the tokenizer's pad, else unk, else BOS.
    """
    eos = tokenizer.eos_token_id
    for cand in (tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.bos_token_id):
        if cand is not None and cand != eos:
            return int(cand)
    raise ValueError(
        "tokenizer has no pad, unk or BOS token distinct from EOS; set tokenizer.pad_token"
    )


def _strip_double_bos(ids: list[int], bos: int | None) -> list[int]:
    if bos is not None and len(ids) >= 2 and ids[0] == bos and ids[1] == bos:
        return ids[1:]
    return ids


def render_chat(tokenizer: Any, prompt: Sequence[Mapping[str, str]], response: str | None) -> str:
    """Chat-template text of ``prompt`` + the assistant ``response`` (generation prompt only
    when ``response`` is None)."""
    msgs = [{"role": m["role"], "content": m["content"]} for m in prompt]
    if response is None:
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    msgs.append({"role": "assistant", "content": response})
    return tokenizer.apply_chat_template(msgs, tokenize=False)


def chat_token_ids(
    tokenizer: Any,
    prompts: Sequence[Sequence[Mapping[str, str]]],
    responses: Sequence[str],
) -> list[list[int]]:
    """Token ids of the chat template over prompt + response, one list per pair.

    The template already writes the BOS, so the text is tokenised with
    ``add_special_tokens=False`` (and a doubled leading BOS is dropped): no double BOS.
    """
    texts = [render_chat(tokenizer, p, r) for p, r in zip(prompts, responses, strict=True)]
    if not texts:  # tokenizers raise on an empty batch; a shard may have no candidate left
        return []
    enc = tokenizer(texts, add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token_id
    return [_strip_double_bos(list(ids), bos) for ids in enc]


def truncate_left(ids: list[int], max_length: int, bos: int | None) -> tuple[list[int], bool]:
    """Keep the last ``max_length`` tokens (the end of the response, which the reward head
    reads), keeping a leading BOS. Returns the ids and whether they were cut."""
    if len(ids) <= max_length:
        return ids, False
    if bos is not None and ids and ids[0] == bos:
        return [bos, *ids[len(ids) - max_length + 1 :]], True
    return ids[len(ids) - max_length :], True
