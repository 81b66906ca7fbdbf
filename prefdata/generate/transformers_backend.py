"""A chat backend on Hugging Face transformers ``generate`` (CPU or GPU).

Per-candidate seeds, independent of batch composition: every candidate is one row of a
batched greedy ``generate`` whose logits pass through :class:`SeededSampler`. At each step
it draws one uniform per row from a hash of (candidate seed, step) and picks the token by
inverse CDF of the tempered, top-p truncated distribution: an exact sample whose randomness
depends on nothing but the row's own seed. The same seed gives the same text whatever else
is in the batch (up to the tiny float differences that padding causes in the logits), with
no ``torch.manual_seed`` and no global RNG state; the uniforms are the same on CPU and GPU.

Continuous batching (``generate_batch`` / ``init_continuous_batching``, present in
transformers 5.20) is not used: its sampler draws from one global generator seeded once per
manager (``ContinuousBatchingConfig.seed``), so a candidate's tokens depend on which other
requests the scheduler put beside it; per-candidate seeds would not reproduce.

>>> backend = TransformersBackend("path/to/model")  # doctest: +SKIP
>>> chats = [[{"role": "user", "content": "Hi"}]]
>>> backend.chat(chats, GenerationConfig(n=2), [[1, 2]])  # doctest: +SKIP
[ChatResult(completions=[Completion(text=..., finish_reason='stop', num_tokens=7, seed=1), ...])]
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from prefdata.generate.base import ChatResult, Completion, GenerationConfig, Message, check_seeds

logger = logging.getLogger(__name__)

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser on uint64 arrays (wrap-around arithmetic is defined there).

    >>> int(splitmix64(np.array([0], dtype=np.uint64))[0])
    0
    >>> int(splitmix64(np.array([1], dtype=np.uint64))[0])
    6238072747940578789
    """
    x = x.astype(np.uint64, copy=True)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def step_uniforms(seeds: Sequence[int], steps: int) -> np.ndarray:
    """Uniforms in [0, 1) of shape (rows, steps): row i, step t depends on (seeds[i], t) only.

    24-bit values, exact in float32.

    >>> u = step_uniforms([7, 7, 8], 4)
    >>> u.shape, bool((u[0] == u[1]).all()), bool((u[0] != u[2]).any())
    ((3, 4), True, True)
    """
    seed = np.array([int(v) & 0xFFFFFFFFFFFFFFFF for v in seeds], dtype=np.uint64)
    step = np.arange(1, steps + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        key = splitmix64(seed * _GOLDEN + np.uint64(0x632BE59BD9B4E019))
        bits = splitmix64(key[:, None] ^ (step[None, :] * _GOLDEN))
    return ((bits >> np.uint64(40)).astype(np.float32) / np.float32(1 << 24)).astype(np.float32)


class SeededSampler:
    """A logits processor that turns greedy decoding into seeded sampling, one seed per row.

    Each step draws one uniform per row from a hash of (row seed, step) and picks the token
    where the cumulative distribution of ``softmax(logits / T)`` (restricted to the top-p
    nucleus, tokens sorted by probability) passes it: inverse-CDF sampling, exact, and as
    cheap as ``multinomial``. It returns 0 for the picked token and -inf elsewhere, so the
    greedy ``argmax`` takes it. ``temperature == 0`` leaves the logits untouched (greedy).

    >>> import torch
    >>> s = SeededSampler([7, 7, 8], temperature=1.0, top_p=1.0, prompt_len=0)
    >>> out = s(torch.zeros(3, 0, dtype=torch.long), torch.zeros(3, 50)).argmax(-1).tolist()
    >>> out[0] == out[1]
    True
    """

    def __init__(
        self,
        seeds: Sequence[int],
        temperature: float,
        top_p: float,
        prompt_len: int,
        max_steps: int = 1024,
    ):
        self.seeds = list(seeds)
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.prompt_len = prompt_len
        self.max_steps = max_steps
        self._uniforms = None

    def _uniform(self, step: int, device):
        import torch

        if self._uniforms is None or step >= self._uniforms.shape[1]:
            steps = max(self.max_steps, step + 1)
            table = step_uniforms(self.seeds, steps)
            self._uniforms = torch.from_numpy(table).to(device)
        return self._uniforms[:, step]

    def __call__(self, input_ids, scores):
        import torch

        if self.temperature == 0:
            return scores
        u = self._uniform(input_ids.shape[1] - self.prompt_len, scores.device)
        probs = (scores.float() / self.temperature).softmax(-1)
        order = None
        if self.top_p < 1.0:
            probs, order = torch.sort(probs, descending=True, dim=-1)
            # Drop a token when the mass before it already reaches top_p; the top one stays.
            probs = probs.masked_fill(probs.cumsum(-1) - probs >= self.top_p, 0.0)
        cdf = probs.cumsum(-1)
        target = (u * cdf[:, -1]).unsqueeze(-1)
        pick = torch.searchsorted(cdf, target, right=True).clamp_(max=cdf.shape[-1] - 1)
        if order is not None:
            pick = order.gather(-1, pick)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(-1, pick, 0.0)


class _EndTracker:
    """A stopping criterion that records, per row, the step and reason it finished.

    Rows stop on an EOS token, a stop string, or their own token cap (the smaller of
    ``max_tokens`` and the room left in the context).
    """

    def __init__(self, eos_ids, stop_criteria, caps, prompt_len: int):
        import torch

        self.eos_ids = eos_ids
        self.stop_criteria = stop_criteria
        self.caps = caps
        self.prompt_len = prompt_len
        n = caps.shape[0]
        self.end = torch.full((n,), -1, dtype=torch.long, device=caps.device)
        self.by_length = torch.zeros(n, dtype=torch.bool, device=caps.device)

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        step = input_ids.shape[1] - self.prompt_len
        stopped = torch.isin(input_ids[:, -1], self.eos_ids)
        if self.stop_criteria is not None:
            stopped |= self.stop_criteria(input_ids, scores)
        capped = self.caps <= step
        done = stopped | capped
        new = done & (self.end < 0)
        self.end = torch.where(new, torch.full_like(self.end, step), self.end)
        self.by_length |= new & capped & ~stopped
        return done


class TransformersBackend:
    """Chat completions from a causal LM loaded with ``from_pretrained`` (local path or Hub id).

    ``batch_size`` rows (conversation x candidate) go through one ``generate`` call; rows
    are sorted by prompt length first to cut padding. ``max_model_len`` defaults to the
    model's ``max_position_embeddings``: a prompt that leaves no room for a single token gets
    ``ChatResult(error=...)``; otherwise a row stops early (finish_reason ``"length"``) when
    it fills the context. The model's own ``generation_config`` sampling defaults
    (temperature, top-k, repetition penalty) are not applied: only ``GenerationConfig``'s
    settings are, as with explicit ``SamplingParams`` in vLLM.
    """

    def __init__(
        self,
        model: str | Path,
        *,
        device: str | None = None,
        dtype: Any = None,
        batch_size: int = 8,
        max_model_len: int | None = None,
        name: str | None = None,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if dtype is None:
            dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        elif isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        self.dtype = dtype
        self.batch_size = batch_size
        self.model_path = str(model)
        self.name = name or self.model_path
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=dtype).to(self.device)
        self.model.eval()
        cfg = self.model.config.get_text_config()
        self.max_model_len = int(
            max_model_len
            or getattr(cfg, "max_position_embeddings", None)
            or self.tokenizer.model_max_length
        )
        gen_eos = self.model.generation_config.eos_token_id
        eos = gen_eos if gen_eos is not None else self.tokenizer.eos_token_id
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        if not eos:
            raise ValueError(f"{self.model_path}: neither the model nor the tokenizer names an EOS")
        self.eos_ids = torch.tensor(eos, dtype=torch.long, device=self.device)
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else eos[0]

    def __repr__(self) -> str:
        return (
            f"TransformersBackend(model={self.model_path!r}, device={str(self.device)!r}, "
            f"dtype={self.dtype}, batch_size={self.batch_size})"
        )

    # -- tokenisation -------------------------------------------------------------------
    def encode(
        self, conversation: Sequence[Message], chat_template_kwargs: dict[str, Any]
    ) -> list[int]:
        """Token ids of a templated conversation with the generation prompt.

        The template writes any BOS itself, so the text is tokenised without special tokens.
        """
        text = self.tokenizer.apply_chat_template(
            [dict(m) for m in conversation],
            tokenize=False,
            add_generation_prompt=True,
            **chat_template_kwargs,
        )
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    @cache  # noqa: B019 - one per backend and stop tuple; the backend lives for the run
    def _stop_criteria(self, stop: tuple[str, ...]):
        from transformers import StopStringCriteria

        return StopStringCriteria(self.tokenizer, list(stop)) if stop else None

    # -- generation ---------------------------------------------------------------------
    def chat(
        self,
        conversations: Sequence[Sequence[Message]],
        config: GenerationConfig,
        seeds: Sequence[Sequence[int]],
    ) -> list[ChatResult]:
        check_seeds(conversations, seeds, config.n)
        kwargs = dict(config.chat_template_kwargs)
        results = [ChatResult() for _ in conversations]
        rows: list[tuple[int, int, list[int]]] = []  # (conversation, candidate, prompt ids)
        for i, conv in enumerate(conversations):
            try:
                ids = self.encode(conv, kwargs)
            except Exception as exc:  # a template that rejects the conversation
                results[i].error = f"chat template failed: {type(exc).__name__}: {exc}"
                continue
            if len(ids) >= self.max_model_len:
                results[i].error = (
                    f"prompt is {len(ids)} tokens; the model's context is "
                    f"{self.max_model_len} tokens, leaving no room to generate"
                )
                continue
            rows.extend((i, j, ids) for j in range(config.n))
        # Longest prompts first, so each batch holds prompts of similar length.
        order = sorted(range(len(rows)), key=lambda r: -len(rows[r][2]))
        done: dict[tuple[int, int], Completion] = {}
        for start in range(0, len(order), self.batch_size):
            batch = [rows[r] for r in order[start : start + self.batch_size]]
            batch_seeds = [int(seeds[i][j]) for i, j, _ in batch]
            outs = self._generate([ids for _, _, ids in batch], batch_seeds, config)
            for (i, j, _), out in zip(batch, outs, strict=True):
                done[(i, j)] = out
        for i, res in enumerate(results):
            if res.error is None:
                res.completions = [done[(i, j)] for j in range(config.n)]
        return results

    def _generate(
        self, prompts: list[list[int]], seeds: list[int], config: GenerationConfig
    ) -> list[Completion]:
        import torch
        from transformers import GenerationConfig as HFGenerationConfig
        from transformers import LogitsProcessorList, StoppingCriteriaList

        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for r, p in enumerate(prompts):  # left padding
            input_ids[r, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[r, width - len(p) :] = 1
        caps = torch.tensor(
            [min(config.max_tokens, self.max_model_len - len(p)) for p in prompts],
            dtype=torch.long,
            device=self.device,
        )
        tracker = _EndTracker(self.eos_ids, self._stop_criteria(tuple(config.stop)), caps, width)
        sampler = SeededSampler(
            seeds, config.temperature, config.top_p, width, max_steps=int(caps.max())
        )
        # Greedy decoding over the sampler's noisy logits; every other knob neutral so the
        # model's generation_config defaults (penalties, top-k) cannot change the sample.
        gen_config = HFGenerationConfig(
            do_sample=False,
            num_beams=1,
            max_new_tokens=int(caps.max()),
            eos_token_id=self.eos_ids.tolist(),
            pad_token_id=self.pad_id,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            temperature=1.0,
            top_p=1.0,
            top_k=None,
        )
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=input_ids.to(self.device),
                attention_mask=mask.to(self.device),
                generation_config=gen_config,
                logits_processor=LogitsProcessorList([sampler]),
                stopping_criteria=StoppingCriteriaList([tracker]),
            )
        generated = out[:, width:].tolist()
        ends = tracker.end.tolist()
        by_length = tracker.by_length.tolist()
        completions = []
        for r, tokens in enumerate(generated):
            n_tok = ends[r] if ends[r] >= 0 else len(tokens)
            text = self.tokenizer.decode(tokens[:n_tok], skip_special_tokens=True)
            reason = "length" if (by_length[r] or ends[r] < 0) else "stop"
            text, cut = truncate_at_stop(text, config.stop)
            completions.append(
                Completion(
                    text=text,
                    finish_reason="stop" if cut else reason,
                    num_tokens=n_tok,
                    seed=seeds[r],
                )
            )
        return completions


def truncate_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut ``text`` at the earliest stop string (excluded, as OpenAI and vLLM do).

    >>> truncate_at_stop("one. two. three", ["two", "."])
    ('one', True)
    >>> truncate_at_stop("abc", [])
    ('abc', False)
    """
    cuts = [k for k in (text.find(s) for s in stop if s) if k >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)
