"""Reference-model log-probabilities of given responses, and the strong-over-weak density
ratio (CDR) built on them.

``log p(response | prompt)`` is taken over the response's tokens in the chat template
(the assistant turn including its end-of-turn token), conditioned on the templated prompt
with the generation prompt.

>>> LogProb("path/to/model", name="ref").score_fields()
('ref.sum', 'ref.mean')
>>> DensityRatio("strong", "weak").score_fields()
('cdr',)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from prefdata.score.base import Scorer, candidates_view, model_source, package_version, with_scores
from prefdata.score.batching import render_chat, resolve_pad_id
from prefdata.score.reward_model import run_bucketed

__all__ = [
    "DensityRatio",
    "LogProb",
    "response_token_ids",
    "vllm_logprob_requests",
    "vllm_prompt_logprob_scores",
]


def response_token_ids(
    tokenizer: Any,
    prompts: Sequence[Sequence[Mapping[str, str]]],
    responses: Sequence[str],
) -> list[tuple[list[int], int]]:
    """``(ids, start)`` per pair: token ids of the templated prompt + response and the index
    of the first response token.

    The prompt (with the generation prompt) and the remainder of the full template are
    tokenised separately and joined, so the boundary is exact even where a merge could cross
    it. Raises when the template does not extend the prompt's text (a template that rewrites
    earlier turns), naming the pair.
    """
    pre_texts = [render_chat(tokenizer, p, None) for p in prompts]
    if not prompts:  # tokenizers raise on an empty batch
        return []
    full_texts = [render_chat(tokenizer, p, r) for p, r in zip(prompts, responses, strict=True)]
    rests = []
    for k, (pre, full) in enumerate(zip(pre_texts, full_texts, strict=True)):
        if not full.startswith(pre):
            raise ValueError(
                f"pair {k}: the chat template over prompt + response does not start with the "
                "templated prompt; log-probs of the response are ill-defined"
            )
        rests.append(full[len(pre) :])
    pre_ids = tokenizer(pre_texts, add_special_tokens=False)["input_ids"]
    rest_ids = tokenizer(rests, add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token_id
    out = []
    for p, r in zip(pre_ids, rest_ids, strict=True):
        p = list(p)
        if bos is not None and len(p) >= 2 and p[0] == bos and p[1] == bos:
            p = p[1:]
        out.append((p + list(r), len(p)))
    return out


def _truncate(ids: list[int], start: int, max_length: int, bos: int | None):
    """Cut the prompt from the left (keeping BOS), then the response's end if still too long."""
    if len(ids) <= max_length:
        return ids, start, False
    keep_bos = bos is not None and ids and ids[0] == bos
    head = [bos] if keep_bos else []
    prompt = ids[1 if keep_bos else 0 : start]
    resp = ids[start:]
    room = max_length - len(head) - len(resp)
    if room >= 1:
        prompt = prompt[len(prompt) - room :]
    else:
        prompt = prompt[-1:] if prompt else []
        resp = resp[: max_length - len(head) - len(prompt)]
    new = head + prompt + resp
    return new, len(head) + len(prompt), True


@dataclass(frozen=True)
class LogProb(Scorer):
    """Sum and per-token mean of ``log p(response | prompt)`` under a reference causal LM,
    as two score fields ``{name}.sum`` and ``{name}.mean``.

    ``engine="transformers"`` (default): length-bucketed batches under ``token_budget``
    like :class:`~prefdata.score.reward_model.RewardModel`, right padding, float32 on CPU
    and bfloat16 on GPU. ``engine="vllm"``: ``SamplingParams(max_tokens=1,
    prompt_logprobs=0)`` over ``TokensPrompt`` (lazy import; a GPU, or vLLM's CPU build),
    with ``dtype`` (vLLM's ``"auto"`` when unset: a float32 checkpoint runs in bfloat16 or
    float16), ``revision`` and ``llm_kwargs`` passed to ``LLM``. Sequences over
    ``max_length`` lose prompt tokens from the left first, and get ``{name}_truncated``.
    """

    model: str
    name: str = "logp"
    max_length: int | None = None
    token_budget: int = 16384
    device: str | None = None
    dtype: str | None = None
    engine: str = "transformers"
    revision: str | None = None
    # vLLM only: the fraction of GPU memory this engine may take (vLLM's default 0.9 is per
    # engine, so two engines in one process must share it: see DensityRatio)
    gpu_memory_utilization: float = field(default=0.9, metadata={"fingerprint": False})
    # vLLM only: more ``LLM(...)`` keyword arguments, as pairs (``(("enforce_eager", True),)``),
    # over the ones above; fingerprinted, as VLLMRewardModel's are (quantization or a KV
    # cache dtype change the log-probs)
    llm_kwargs: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if self.engine not in ("transformers", "vllm"):
            raise ValueError(f"engine must be 'transformers' or 'vllm', not {self.engine!r}")

    def score_fields(self) -> tuple[str, ...]:
        return (f"{self.name}.sum", f"{self.name}.mean")

    def setup(self) -> None:
        if self.engine == "vllm":
            from vllm import LLM, SamplingParams  # lazy: optional (a GPU or vLLM's CPU build)

            kwargs = {
                "dtype": self.dtype or "auto",
                "revision": self.revision,
                "gpu_memory_utilization": self.gpu_memory_utilization,
                **({"max_model_len": self.max_length} if self.max_length else {}),
                **dict(self.llm_kwargs),  # the caller's word wins
            }
            llm = LLM(self.model, **kwargs)
            self.resources.update(
                llm=llm,
                tokenizer=llm.get_tokenizer(),
                params=SamplingParams(max_tokens=1, prompt_logprobs=0),
                max_length=self.max_length or llm.llm_engine.model_config.max_model_len,
            )
            return
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = (
            getattr(torch, self.dtype)
            if self.dtype
            else (torch.bfloat16 if device.startswith("cuda") else torch.float32)
        )
        tok = AutoTokenizer.from_pretrained(self.model, revision=self.revision)
        model = AutoModelForCausalLM.from_pretrained(
            self.model, dtype=dtype, revision=self.revision
        )
        model.to(device).eval()
        limit = self.max_length or getattr(model.config, "max_position_embeddings", None) or 4096
        self.resources.update(
            tokenizer=tok,
            model=model,
            device=device,
            pad_id=resolve_pad_id(tok),
            max_length=int(limit),
        )

    def source(self) -> dict[str, Any]:
        src = model_source(self.model, self.resources.get("model"), self.revision)
        src[self.engine] = package_version(self.engine)
        return src

    def token_logprobs(self, table: pa.Table) -> tuple[np.ndarray, np.ndarray, list[bool]]:
        """Per candidate: sum of response-token log-probs, number of response tokens, and
        whether the sequence was truncated."""
        view = candidates_view(table)
        prompts = table["prompt"].to_pylist()
        tok = self.resources["tokenizer"]
        pairs = response_token_ids(
            tok, [prompts[i] for i in view.row], ["" if r is None else r for r in view.responses]
        )
        cut = [
            _truncate(ids, s, self.resources["max_length"], tok.bos_token_id) for ids, s in pairs
        ]
        truncated = [c[2] for c in cut]
        if not cut:
            return np.array([]), np.array([]), truncated
        if self.engine == "vllm":
            reqs, starts = vllm_logprob_requests([(c[0], c[1]) for c in cut])
            outs = self.resources["llm"].generate(reqs, self.resources["params"], use_tqdm=False)
            sums, counts = vllm_prompt_logprob_scores(outs, starts)
            return sums, counts, truncated
        seqs = [c[0] for c in cut]
        out, _ = run_bucketed(
            seqs,
            lambda idx: self._forward([seqs[i] for i in idx], [cut[i][1] for i in idx]),
            self.token_budget,
            desc=self.name,
            progress=self.progress,
        )
        return out["sum"], out["count"], truncated

    def _forward(self, batch: list[list[int]], starts: list[int]) -> dict[str, np.ndarray]:
        import torch

        r = self.resources
        width = max(len(x) for x in batch)
        ids = torch.full((len(batch), width), r["pad_id"], dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        target = torch.zeros((len(batch), width), dtype=torch.bool)
        for i, (x, s) in enumerate(zip(batch, starts, strict=True)):
            ids[i, : len(x)] = torch.tensor(x, dtype=torch.long)
            mask[i, : len(x)] = 1
            target[i, s : len(x)] = True
        with torch.inference_mode():
            logits = r["model"](
                input_ids=ids.to(r["device"]), attention_mask=mask.to(r["device"])
            ).logits.float()
        # Token t is predicted by position t-1.
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        tok_lp = logp.gather(-1, ids[:, 1:].to(logp.device).unsqueeze(-1)).squeeze(-1)
        sel = target[:, 1:].to(tok_lp.device)
        sums = (tok_lp * sel).sum(-1).double().cpu().numpy()
        return {"sum": sums, "count": sel.sum(-1).double().cpu().numpy()}

    def process(self, table: pa.Table) -> pa.Table:
        sums, counts, truncated = self.token_logprobs(table)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        flags = [[f"{self.name}_truncated"] if t else [] for t in truncated]
        return with_scores(
            table, {f"{self.name}.sum": sums, f"{self.name}.mean": mean}, flags=flags
        )


def vllm_logprob_requests(
    pairs: Sequence[tuple[list[int], int]],
) -> tuple[list[dict[str, list[int]]], list[int]]:
    """``TokensPrompt`` dicts for prompt-logprob scoring and each response's start index.

    >>> vllm_logprob_requests([([1, 5, 6, 7], 2)])
    ([{'prompt_token_ids': [1, 5, 6, 7]}], [2])
    """
    return [{"prompt_token_ids": list(ids)} for ids, _ in pairs], [s for _, s in pairs]


def vllm_prompt_logprob_scores(
    outputs: Sequence[Any], starts: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Sum and count of the response tokens' log-probs from vLLM ``RequestOutput`` objects
    generated with ``SamplingParams(prompt_logprobs=0)``.

    ``output.prompt_logprobs[t]`` maps token ids to ``Logprob`` objects (``.logprob``) and
    always holds the prompt's own token ``output.prompt_token_ids[t]`` (plus the top-k when
    k > 0); entry 0 is None (no context). A missing entry raises.

    >>> from types import SimpleNamespace as NS
    >>> out = NS(prompt_token_ids=[1, 5, 6], prompt_logprobs=[None, {5: NS(logprob=-1.0)},
    ...          {6: NS(logprob=-0.5), 9: NS(logprob=-0.1)}])
    >>> vllm_prompt_logprob_scores([out], [1])
    (array([-1.5]), array([2.]))
    """
    sums = np.zeros(len(outputs))
    counts = np.zeros(len(outputs))
    for k, (out, start) in enumerate(zip(outputs, starts, strict=True)):
        ids, lps = out.prompt_token_ids, out.prompt_logprobs
        for t in range(max(start, 1), len(ids)):
            entry = lps[t]
            if entry is None or ids[t] not in entry:
                raise ValueError(f"request {k}: no prompt logprob for token {t} ({ids[t]})")
            sums[k] += entry[ids[t]].logprob
            counts[k] += 1
    return sums, counts


@dataclass(frozen=True)
class DensityRatio(Scorer):
    """CDR reward: ``log p_strong(y|x) - log p_weak(y|x)`` (sums over response tokens; the
    per-token difference with ``per_token=True``), one field ``{name}``. Both models must
    share a tokenizer and chat template (each applies its own; they are not compared).
    ``keep_components`` also writes ``{name}.strong`` and ``{name}.weak``.
    """

    strong: str
    weak: str
    name: str = "cdr"
    per_token: bool = False
    keep_components: bool = False
    max_length: int | None = None
    token_budget: int = 16384
    device: str | None = None
    dtype: str | None = None
    engine: str = "transformers"
    # vLLM: shared by the two engines, half each
    gpu_memory_utilization: float = field(default=0.9, metadata={"fingerprint": False})

    def score_fields(self) -> tuple[str, ...]:
        extra = (f"{self.name}.strong", f"{self.name}.weak") if self.keep_components else ()
        return (self.name, *extra)

    def _parts(self) -> tuple[LogProb, LogProb]:
        if "parts" not in self.resources:
            kw = dict(
                max_length=self.max_length,
                token_budget=self.token_budget,
                device=self.device,
                dtype=self.dtype,
                engine=self.engine,
                gpu_memory_utilization=self.gpu_memory_utilization / 2,
            )
            self.resources["parts"] = (
                LogProb(self.strong, name="strong", **kw),
                LogProb(self.weak, name="weak", **kw),
            )
        return self.resources["parts"]

    def setup(self) -> None:
        for p in self._parts():
            p.setup()

    def source(self) -> dict[str, Any]:
        s, w = self._parts()
        return {"strong": s.source(), "weak": w.source()}

    def process(self, table: pa.Table) -> pa.Table:
        s, w = self._parts()
        s_sum, s_n, s_cut = s.token_logprobs(table)
        w_sum, w_n, w_cut = w.token_logprobs(table)
        if self.per_token:
            with np.errstate(invalid="ignore", divide="ignore"):
                s_val = np.where(s_n > 0, s_sum / np.maximum(s_n, 1), np.nan)
                w_val = np.where(w_n > 0, w_sum / np.maximum(w_n, 1), np.nan)
        else:
            s_val, w_val = s_sum, w_sum
        scores = {self.name: s_val - w_val}
        if self.keep_components:
            scores |= {f"{self.name}.strong": s_val, f"{self.name}.weak": w_val}
        flags = [
            [f"{self.name}_truncated"] if a or b else [] for a, b in zip(s_cut, w_cut, strict=True)
        ]
        return with_scores(table, scores, flags=flags)
