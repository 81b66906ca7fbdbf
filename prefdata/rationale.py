"""Rationale augmentation: an LLM writes why the chosen response is better.

:class:`Rationales` is a row-local stage over a pairs table. For each pair it shows the two
responses as "Response A" and "Response B" in an order drawn from a seed derived from (run
seed, prompt_id, the pair's two candidates), so the position of the chosen response does
not leak into the data (the authors' template of Data-Centric Human Preference Optimization
with Rationales always puts the chosen first). The text goes to the ``rationale`` column;
the order, the seed and the backend go to the pair's ``provenance`` JSON under
``"rationale"``. Any :class:`~prefdata.generate.base.ChatBackend` serves (transformers,
vLLM, an OpenAI-compatible server). A pair the backend cannot serve keeps a null
``rationale`` and the reason in provenance (``"error"``); it is not dropped and does not
stop the run. Pairs without a prompt or a response are rejected.

Placeholders of ``template``: ``{prompt}`` (the conversation, one ``role: content`` block per
turn), ``{response_a}``, ``{response_b}``, ``{preferred}`` (``A`` or ``B``) and ``{other}``.
Other braces are left alone, so a template may contain JSON.

>>> import json, pyarrow as pa
>>> from prefdata.generate.base import ChatResult, Completion
>>> class Parrot:  # a rule-based backend: repeats which response the prompt prefers
...     name = "parrot"
...     def chat(self, conversations, config, seeds):
...         return [ChatResult([Completion(c[-1]["content"].split("Response ")[-1][:1])])
...                 for c in conversations]
>>> pairs = pa.table({"prompt_id": ["p"], "prompt": [[{"role": "user", "content": "Q"}]],
...                   "chosen": ["good"], "rejected": ["bad"]})
>>> stage = Rationales(Parrot(), template="A: {response_a}, B: {response_b}. Response {preferred}")
>>> out = stage(pairs)
>>> order = json.loads(out.table["provenance"][0].as_py())["rationale"]["order"]
>>> order == "chosen=" + out.table["rationale"][0].as_py()
True
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prefdata.arrow import set_column
from prefdata.generate.base import ChatBackend, ChatResult, GenerationConfig
from prefdata.ids import digest
from prefdata.pipeline import Stage, StageOutput, split

DEFAULT_TEMPLATE = (
    "Two assistant responses to the same conversation follow.\n\n"
    "[Conversation]\n{prompt}\n\n"
    "[Response A]\n{response_a}\n\n"
    "[Response B]\n{response_b}\n\n"
    "Response {preferred} was judged better than Response {other}. In a few sentences, "
    "explain why Response {preferred} is better: name the concrete strengths it has and the "
    "weaknesses of Response {other}. Do not restate the responses."
)
"""The default rationale prompt (one user turn)."""

PLACEHOLDERS = ("prompt", "response_a", "response_b", "preferred", "other")
_PLACEHOLDER = re.compile(r"\{(" + "|".join(PLACEHOLDERS) + r")\}")


def render(template: str, values: dict[str, str]) -> str:
    """Fill the known placeholders of ``template``; other braces stay as they are.

    >>> render('{"a": {preferred}}', {"preferred": "A"})
    '{"a": A}'
    """
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def format_conversation(messages: Sequence[dict[str, str]]) -> str:
    """A conversation as ``role: content`` blocks.

    >>> format_conversation([{"role": "user", "content": "Hi"}])
    'user: Hi'
    """
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in messages)


def pair_seed(seed: int, prompt_id: str, chosen: str, rejected: str) -> int:
    """The seed of one pair's A/B order and generation: a digest of the run seed, the
    prompt_id and the pair's chosen and rejected keys (candidate ids, or texts)."""
    return int(digest("rationale", seed, prompt_id, chosen, rejected), 16) & ((1 << 63) - 1)


@dataclass(frozen=True)
class Rationales(Stage):
    """Add a ``rationale`` to every pair (see the module docstring).

    ``backend`` is not part of the fingerprinted config itself; its ``name`` is.
    ``system`` optionally adds a system turn before the rendered template.
    """

    backend: ChatBackend = field(default=None, metadata={"fingerprint": False})
    template: str = DEFAULT_TEMPLATE
    seed: int = 0
    generation: GenerationConfig = GenerationConfig(max_tokens=256, temperature=0.7)
    system: str | None = None
    batch_size: int = 64

    requires: ClassVar[tuple[str, ...]] = ("prompt_id", "prompt", "chosen", "rejected")
    provides: ClassVar[tuple[str, ...]] = ("rationale", "provenance")

    def __post_init__(self) -> None:
        if self.backend is None or not callable(getattr(self.backend, "chat", None)):
            raise TypeError("Rationales needs a ChatBackend (an object with .name and .chat)")
        for p in ("response_a", "response_b"):
            if "{" + p + "}" not in self.template:
                raise ValueError(f"template must contain {{{p}}}")
        if self.generation.n != 1:
            raise ValueError("Rationales writes one rationale per pair: generation.n must be 1")
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")

    def config(self) -> dict[str, Any]:
        return {**super().config(), "backend": getattr(self.backend, "name", None)}

    def process(self, table: pa.Table) -> StageOutput:
        bad = np.zeros(table.num_rows, dtype=bool)
        reasons: list[str | None] = [None] * table.num_rows
        fields: list[str | None] = [None] * table.num_rows
        checks = [
            ("prompt", pc.fill_null(pc.equal(pc.list_value_length(table["prompt"]), 0), True)),
            ("chosen", table["chosen"].is_null()),
            ("rejected", table["rejected"].is_null()),
        ]
        for name, mask in checks:
            mask = mask.to_numpy(zero_copy_only=False)
            for i in np.flatnonzero(mask & ~bad):
                reasons[i], fields[i] = f"{name} is missing", name
            bad |= mask
        kept, rejects = split(table, ~bad, self.name, reasons, field=fields)
        return StageOutput(self._annotate(kept), rejects)

    def _annotate(self, table: pa.Table) -> pa.Table:
        n = table.num_rows
        ids = table["prompt_id"].to_pylist()
        prompts = table["prompt"].to_pylist()
        chosen = table["chosen"].to_pylist()
        rejected = table["rejected"].to_pylist()
        cid = table["chosen_id"].to_pylist() if "chosen_id" in table.column_names else [None] * n
        rid = (
            table["rejected_id"].to_pylist() if "rejected_id" in table.column_names else [None] * n
        )
        seeds, chosen_first, convs = [], [], []
        for i in range(n):
            s = pair_seed(self.seed, ids[i], cid[i] or chosen[i], rid[i] or rejected[i])
            first = bool(s & 1)  # one bit of the digest: chosen is Response A
            a, b = (chosen[i], rejected[i]) if first else (rejected[i], chosen[i])
            text = render(
                self.template,
                {
                    "prompt": format_conversation(prompts[i]),
                    "response_a": a,
                    "response_b": b,
                    "preferred": "A" if first else "B",
                    "other": "B" if first else "A",
                },
            )
            conv = [{"role": "system", "content": self.system}] if self.system else []
            convs.append(conv + [{"role": "user", "content": text}])
            seeds.append(s)
            chosen_first.append(first)

        results: list[ChatResult] = []
        for start in range(0, n, self.batch_size):
            batch = convs[start : start + self.batch_size]
            bseeds = [[s] for s in seeds[start : start + self.batch_size]]
            try:
                got = list(self.backend.chat(batch, self.generation, bseeds))
                if len(got) != len(batch):
                    raise RuntimeError(f"backend returned {len(got)} results for {len(batch)}")
            except Exception as e:  # a backend failure nulls the batch; it never stops the run
                got = [ChatResult(error=f"{type(e).__name__}: {e}") for _ in batch]
            results.extend(got)

        texts: list[str | None] = []
        old = table["provenance"].to_pylist() if "provenance" in table.column_names else [None] * n
        provenance = []
        for i, res in enumerate(results):
            error = res.error
            text = None
            if error is None:
                if not res.completions:
                    error = "backend returned no completion"
                elif not res.completions[0].text.strip():
                    error = "empty rationale"
                else:
                    text = res.completions[0].text.strip()
            texts.append(text)
            note = {
                "stage": self.name,
                "fingerprint": self.fingerprint,
                "backend": getattr(self.backend, "name", None),
                "seed": self.seed,
                "pair_seed": seeds[i],
                "order": "chosen=A" if chosen_first[i] else "chosen=B",
                "error": error,
            }
            provenance.append(json.dumps(_merge(old[i], note), sort_keys=True, ensure_ascii=False))
        table = set_column(table, "rationale", texts, pa.string())
        return set_column(table, "provenance", provenance, pa.string())


def _merge(previous: str | None, note: dict[str, Any]) -> dict[str, Any]:
    """``previous`` provenance (a JSON object) with ``note`` under ``"rationale"``."""
    base: dict[str, Any] = {}
    if previous:
        try:
            parsed = json.loads(previous)
            base = parsed if isinstance(parsed, dict) else {"previous": parsed}
        except json.JSONDecodeError:
            base = {"previous": previous}
    return {**base, "rationale": note}


__all__ = ["DEFAULT_TEMPLATE", "PLACEHOLDERS", "Rationales", "format_conversation", "render"]
