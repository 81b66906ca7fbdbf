"""A chat backend on vLLM's offline engine (``LLM.chat``), imported lazily.

vLLM is an optional extra: nothing here imports it until a :class:`VLLMBackend` is built.
Request building (:func:`build_vllm_requests`) and output mapping (:func:`map_vllm_outputs`)
are pure functions over vLLM's documented structures (``RequestOutput.outputs[i]`` with
``text``, ``token_ids``, ``finish_reason``), so they are tested without vLLM.

Seeds: one ``SamplingParams(n=1, seed=s)`` request per candidate. With ``n>1`` and one seed,
vLLM seeds child j with ``seed + j``, which cannot express the per-candidate seeds derived
from (run seed, prompt_id, sample index); prefix caching (on) makes the repeated prompt
cheap. A prompt longer than ``max_model_len`` would make vLLM raise for the whole batch, so
prompts are measured with the engine's tokenizer first and such conversations get
``ChatResult(error=...)``.

>>> backend = VLLMBackend("Qwen/Qwen2.5-1.5B-Instruct")  # doctest: +SKIP
>>> chats = [[{"role": "user", "content": "Hi"}]]
>>> backend.chat(chats, GenerationConfig(n=4), [[1, 2, 3, 4]])  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prefdata.generate.base import ChatResult, Completion, GenerationConfig, Message, check_seeds


@dataclass(frozen=True)
class VLLMRequest:
    """One engine request: candidate ``sample`` of conversation ``conversation``."""

    conversation: int
    sample: int
    sampling_kwargs: dict[str, Any]


def sampling_kwargs(config: GenerationConfig, seed: int) -> dict[str, Any]:
    """Keyword arguments of ``vllm.SamplingParams`` for one candidate.

    >>> sampling_kwargs(GenerationConfig(max_tokens=16, stop=("###",)), 42)["seed"]
    42
    """
    return {
        "n": 1,
        "seed": int(seed),
        "temperature": config.temperature,
        "top_p": config.top_p,
        "max_tokens": config.max_tokens,
        "stop": list(config.stop) or None,
    }


def build_vllm_requests(
    config: GenerationConfig,
    seeds: Sequence[Sequence[int]],
    skip: Sequence[bool] | None = None,
) -> list[VLLMRequest]:
    """One request per (conversation, candidate), conversations in order, skipping those
    marked in ``skip`` (too long, template failed).

    >>> reqs = build_vllm_requests(GenerationConfig(n=2), [[1, 2], [3, 4]], skip=[False, True])
    >>> [(r.conversation, r.sample, r.sampling_kwargs["seed"]) for r in reqs]
    [(0, 0, 1), (0, 1, 2)]
    """
    out = []
    for i, conv_seeds in enumerate(seeds):
        if len(conv_seeds) != config.n:  # a public builder: it checks its own input
            raise ValueError(f"conversation {i}: {len(conv_seeds)} seeds for n={config.n}")
        if skip is not None and skip[i]:
            continue
        out.extend(VLLMRequest(i, j, sampling_kwargs(config, s)) for j, s in enumerate(conv_seeds))
    return out


def context_errors(prompt_lengths: Sequence[int | None], max_model_len: int) -> list[str | None]:
    """An error for each prompt that leaves no room to generate within ``max_model_len``.

    >>> errors = context_errors([3, 10, None], 10)
    >>> errors[0] is errors[2] is None, errors[1][:32]
    (True, "prompt is 10 tokens; the model's")
    """
    return [
        None
        if n is None or n < max_model_len
        else (
            f"prompt is {n} tokens; the model's context is {max_model_len} tokens, "
            "leaving no room to generate"
        )
        for n in prompt_lengths
    ]


def map_vllm_outputs(
    outputs: Sequence[Any],
    requests: Sequence[VLLMRequest],
    num_conversations: int,
    errors: Sequence[str | None] | None = None,
) -> list[ChatResult]:
    """``ChatResult`` per conversation from ``RequestOutput``s (one per request, in order).

    Each output's ``outputs[0]`` gives ``text``, ``len(token_ids)`` and ``finish_reason``
    (``"stop"`` or ``"length"``; ``"abort"`` or a missing reason is an error).
    """
    if len(outputs) != len(requests):
        raise ValueError(f"vLLM returned {len(outputs)} outputs for {len(requests)} requests")
    results = [ChatResult(error=(errors[i] if errors else None)) for i in range(num_conversations)]
    for req, out in zip(requests, outputs, strict=True):
        res = results[req.conversation]
        if res.error is not None:
            continue
        completions = getattr(out, "outputs", None) or []
        if len(completions) != 1:
            res.error = f"vLLM returned {len(completions)} completions, expected 1"
            continue
        c = completions[0]
        reason = getattr(c, "finish_reason", None)
        if reason not in ("stop", "length"):
            res.error = f"vLLM did not finish the request (finish_reason={reason!r})"
            continue
        token_ids = getattr(c, "token_ids", None)
        res.completions.append(
            Completion(
                text=c.text,
                finish_reason=reason,
                num_tokens=len(token_ids) if token_ids is not None else None,
                seed=req.sampling_kwargs["seed"],
            )
        )
    for res in results:
        if res.error is not None:
            res.completions = []
    return results


class VLLMBackend:
    """Chat completions from ``vllm.LLM`` with prefix caching on.

    ``llm`` takes an engine already built (to share one between a sampler and a judge);
    otherwise ``LLM(model=model, enable_prefix_caching=True, **llm_kwargs)`` is built here.
    """

    def __init__(self, model: str, *, llm: Any = None, name: str | None = None, **llm_kwargs: Any):
        self.model = str(model)
        self.name = name or self.model
        if llm is None:
            try:
                from vllm import LLM
            except ImportError as exc:  # pragma: no cover - depends on the environment
                raise ImportError(
                    "VLLMBackend needs vLLM (pip install vllm, on a machine with a GPU)"
                ) from exc
            llm_kwargs.setdefault("enable_prefix_caching", True)
            llm = LLM(model=self.model, **llm_kwargs)
        self.llm = llm
        self.tokenizer = llm.get_tokenizer()
        self.max_model_len = int(llm.llm_engine.model_config.max_model_len)

    def __repr__(self) -> str:
        return f"VLLMBackend(model={self.model!r}, max_model_len={self.max_model_len})"

    def _prompt_length(self, conv: Sequence[Message], kwargs: dict[str, Any]) -> int:
        text = self.tokenizer.apply_chat_template(
            [dict(m) for m in conv], tokenize=False, add_generation_prompt=True, **kwargs
        )
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def chat(
        self,
        conversations: Sequence[Sequence[Message]],
        config: GenerationConfig,
        seeds: Sequence[Sequence[int]],
    ) -> list[ChatResult]:
        from vllm import SamplingParams

        check_seeds(conversations, seeds, config.n)
        kwargs = dict(config.chat_template_kwargs)
        lengths: list[int | None] = []
        errors: list[str | None] = []
        for conv in conversations:
            try:
                lengths.append(self._prompt_length(conv, kwargs))
                errors.append(None)
            except Exception as exc:  # a template that rejects the conversation
                lengths.append(None)
                errors.append(f"chat template failed: {type(exc).__name__}: {exc}")
        too_long = context_errors(lengths, self.max_model_len)
        errors = [e or c for e, c in zip(errors, too_long, strict=True)]
        requests = build_vllm_requests(config, seeds, skip=[e is not None for e in errors])
        outputs = []
        if requests:
            outputs = self.llm.chat(
                [[dict(m) for m in conversations[r.conversation]] for r in requests],
                [SamplingParams(**r.sampling_kwargs) for r in requests],
                use_tqdm=False,
                chat_template_kwargs=kwargs or None,
            )
        return map_vllm_outputs(outputs, requests, len(conversations), errors)
