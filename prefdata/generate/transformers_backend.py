"""A chat backend on Hugging Face transformers ``generate`` (CPU or GPU).

Per-candidate seeds, independent of batch composition: every candidate is one row of a
batched greedy ``generate`` whose logits pass through :class:`SeededSampler`, which adds
Gumbel noise computed by a counter-based hash of (candidate seed, step, token id). The
argmax of ``logits / T + Gumbel`` is an exact sample from the tempered (and top-p
truncated) distribution, and the noise of a row depends on nothing but its own seed: the
same seed gives the same text whatever else is in the batch (up to the tiny float
differences that padding causes in the logits), on CPU and GPU alike, with no
``torch.manual_seed`` and no global RNG state.

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

from prefdata.generate.base import ChatResult, Completion, GenerationConfig, Message

logger = logging.getLogger(__name__)

_MASK32 = 0xFFFFFFFF


def _mul32(x, c: int):
    """``x * c mod 2**32`` for int64 tensors holding 32-bit values, without int64 overflow."""
    lo = x * (c & 0xFFFF)
    hi = ((x * (c >> 16)) & 0xFFFF) << 16
    return (lo + hi) & _MASK32


def mix32(x):
    """A 32-bit integer hash (Wellons' lowbias32) on int64 tensors holding values < 2**32.

    >>> import torch
    >>> mix32(torch.tensor([0, 1, 2])).tolist()
    [0, 1753845952, 3507691905]
    """
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def row_keys(seeds: Sequence[int], device=None):
    """One 32-bit key per 64-bit seed (both halves mixed in)."""
    import torch

    lo = torch.tensor([int(v) & _MASK32 for v in seeds], dtype=torch.int64, device=device)
    hi = torch.tensor([(int(v) >> 32) & _MASK32 for v in seeds], dtype=torch.int64, device=device)
    return mix32(lo ^ mix32(hi ^ 0x5BD1E995))


def gumbel_noise(keys, step: int, vocab_keys):
    """Gumbel(0, 1) noise of shape (rows, vocab) from row keys, a step and per-token keys."""
    import torch

    step_keys = mix32(keys ^ mix32(torch.full_like(keys, (step * 0x9E3779B9 + 1) & _MASK32)))
    bits = mix32(step_keys[:, None] ^ vocab_keys[None, :]) >> 9  # 23 bits: exact in float32
    u = (bits.to(torch.float32) + 0.5) * (1.0 / (1 << 23))
    return -torch.log(-torch.log(u))


class SeededSampler:
    """A logits processor that turns greedy decoding into seeded sampling, one seed per row.

    Applies temperature and top-p, then adds Gumbel noise keyed on (row seed, step, token):
    ``argmax`` of the result is a sample from the truncated softmax. ``temperature == 0``
    leaves the logits untouched (greedy).

    >>> import torch
    >>> s = SeededSampler([7, 7, 8], temperature=1.0, top_p=1.0, prompt_len=0)
    >>> out = s(torch.zeros(3, 0, dtype=torch.long), torch.zeros(3, 50)).argmax(-1).tolist()
    >>> out[0] == out[1]
    True
    """

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float, prompt_len: int):
        self.seeds = list(seeds)
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.prompt_len = prompt_len
        self._keys = None
        self._vocab_keys = None

    def __call__(self, input_ids, scores):
        import torch

        if self.temperature == 0:
            return scores
        if self._keys is None or self._keys.device != scores.device:
            self._keys = row_keys(self.seeds, device=scores.device)
        vocab = scores.shape[-1]
        if self._vocab_keys is None or self._vocab_keys.shape[0] != vocab:
            self._vocab_keys = mix32(
                torch.arange(vocab, dtype=torch.int64, device=scores.device) ^ 0x27D4EB2F
            )
        logits = scores.float() / self.temperature
        if self.top_p < 1.0:
            logits = _top_p_mask(logits, self.top_p)
        step = input_ids.shape[1] - self.prompt_len
        return logits + gumbel_noise(self._keys, step, self._vocab_keys)


def _top_p_mask(logits, top_p: float):
    """Set logits outside the smallest set whose probability reaches ``top_p`` to -inf."""
    import torch

    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    probs = sorted_logits.softmax(-1)
    # Drop a token when the mass before it already reaches top_p; the top token always stays.
    drop_sorted = (probs.cumsum(-1) - probs) >= top_p
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


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
        if len(seeds) != len(conversations):
            raise ValueError(f"{len(conversations)} conversations but {len(seeds)} seed lists")
        kwargs = dict(config.chat_template_kwargs)
        results = [ChatResult() for _ in conversations]
        rows: list[tuple[int, int, list[int]]] = []  # (conversation, candidate, prompt ids)
        for i, (conv, conv_seeds) in enumerate(zip(conversations, seeds, strict=True)):
            if len(conv_seeds) != config.n:
                raise ValueError(f"conversation {i}: {len(conv_seeds)} seeds for n={config.n}")
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
        sampler = SeededSampler(seeds, config.temperature, config.top_p, width)
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
