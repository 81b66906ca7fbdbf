"""The vLLM adapter: request building and output mapping.

vLLM is not in the dev venv (it pins its own torch; ``tests/test_vllm_cpu.py`` runs the
real engine, vLLM's CPU build, in a venv of its own), so these tests build stand-ins with
the documented attributes of ``vllm.outputs``: ``RequestOutput.outputs`` is a list of
``CompletionOutput(index, text, token_ids, cumulative_logprob, logprobs, finish_reason,
stop_reason)``. The end-to-end test swaps a
stand-in ``vllm`` module (``SamplingParams`` records its keyword arguments; ``LLM.chat``
answers with those structures) for the real one, and uses the real tiny tokenizer for
prompt lengths and chat templating.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field
from typing import Any

import pytest

from prefdata.generate.base import GenerationConfig
from prefdata.generate.vllm_backend import (
    VLLMBackend,
    VLLMRequest,
    build_vllm_requests,
    context_errors,
    map_vllm_outputs,
    sampling_kwargs,
)


@dataclass
class CompletionOutput:  # vllm.outputs.CompletionOutput's documented fields
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None = None
    logprobs: Any = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@dataclass
class RequestOutput:  # the attributes of vllm.outputs.RequestOutput used here
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool = True


def test_sampling_kwargs_one_candidate_per_request():
    cfg = GenerationConfig(n=3, temperature=0.7, top_p=0.9, max_tokens=64, stop=("###", "\n\n"))
    assert sampling_kwargs(cfg, 123) == {
        "n": 1,
        "seed": 123,
        "temperature": 0.7,
        "top_p": 0.9,
        "max_tokens": 64,
        "stop": ["###", "\n\n"],
    }
    assert sampling_kwargs(GenerationConfig(), 1)["stop"] is None


def test_build_requests_expands_candidates_and_skips():
    cfg = GenerationConfig(n=2)
    reqs = build_vllm_requests(cfg, [[10, 11], [20, 21], [30, 31]], skip=[False, True, False])
    assert [(r.conversation, r.sample, r.sampling_kwargs["seed"]) for r in reqs] == [
        (0, 0, 10),
        (0, 1, 11),
        (2, 0, 30),
        (2, 1, 31),
    ]
    with pytest.raises(ValueError, match="conversation 0: 1 seeds for n=2"):
        build_vllm_requests(cfg, [[1]])


def _out(text, reason, n_tokens=3):
    return RequestOutput(
        "r", None, [1, 2], [CompletionOutput(0, text, list(range(n_tokens)), finish_reason=reason)]
    )


def test_map_outputs_to_chat_results():
    cfg = GenerationConfig(n=2)
    reqs = build_vllm_requests(cfg, [[10, 11], [20, 21], [30, 31]], skip=[False, True, False])
    errors = [None, "prompt is 900 tokens; ...", None]
    outputs = [
        _out("a", "stop", 4),
        _out("b", "length", 64),
        _out("c", "stop"),
        _out("", "stop", 1),
    ]
    results = map_vllm_outputs(outputs, reqs, 3, errors)
    assert [(c.text, c.finish_reason, c.num_tokens, c.seed) for c in results[0].completions] == [
        ("a", "stop", 4, 10),
        ("b", "length", 64, 11),
    ]
    assert results[1].error.startswith("prompt is 900") and results[1].completions == []
    assert [c.text for c in results[2].completions] == ["c", ""]


def test_map_outputs_aborted_or_wrong_count_is_an_error():
    reqs = [
        VLLMRequest(0, 0, {"seed": 1}),
        VLLMRequest(0, 1, {"seed": 2}),
        VLLMRequest(1, 0, {"seed": 3}),
    ]
    aborted = [_out("a", "stop"), _out("b", "abort"), RequestOutput("r", None, [], [])]
    results = map_vllm_outputs(aborted, reqs, 2)
    assert "finish_reason='abort'" in results[0].error and results[0].completions == []
    assert "returned 0 completions" in results[1].error
    with pytest.raises(ValueError, match="2 outputs for 3 requests"):
        map_vllm_outputs(aborted[:2], reqs, 2)


def test_context_errors():
    assert context_errors([5, 9, 10, None], 10)[:2] == [None, None]
    assert "prompt is 10 tokens" in context_errors([10], 10)[0]


@dataclass
class _StandInLLM:
    tokenizer: Any
    max_model_len: int = 64
    calls: list = field(default_factory=list)

    def __post_init__(self):
        self.llm_engine = types.SimpleNamespace(
            model_config=types.SimpleNamespace(max_model_len=self.max_model_len)
        )

    def get_tokenizer(self):
        return self.tokenizer

    def chat(self, messages, sampling_params, use_tqdm=True, chat_template_kwargs=None):
        self.calls.append((messages, sampling_params, chat_template_kwargs))
        return [
            RequestOutput(
                str(k),
                None,
                [1],
                [CompletionOutput(0, f"seed {p.kwargs['seed']}", [7, 8], finish_reason="stop")],
            )
            for k, p in enumerate(sampling_params)
        ]


class _SamplingParams:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


def test_backend_chat_with_stand_in_engine(tiny_models, monkeypatch):
    from transformers import AutoTokenizer

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(SamplingParams=_SamplingParams))
    llm = _StandInLLM(AutoTokenizer.from_pretrained(tiny_models["tokenizer"]))
    backend = VLLMBackend("tiny", llm=llm)
    hi = [{"role": "user", "content": "Hi"}]
    long = [{"role": "user", "content": "sea sky " * 40}]
    cfg = GenerationConfig(n=2, max_tokens=5, chat_template_kwargs=(("enable_thinking", False),))
    results = backend.chat([hi, long, hi], cfg, [[1, 2], [3, 4], [5, 6]])
    assert [c.text for c in results[0].completions] == ["seed 1", "seed 2"]
    assert "context is 64 tokens" in results[1].error
    assert [(c.seed, c.num_tokens) for c in results[2].completions] == [(5, 2), (6, 2)]
    [(messages, params, kwargs)] = llm.calls
    assert messages == [hi, hi, hi, hi]  # one request per candidate, the long one left out
    assert [p.kwargs["seed"] for p in params] == [1, 2, 5, 6]
    assert all(p.kwargs["n"] == 1 and p.kwargs["max_tokens"] == 5 for p in params)
    assert kwargs == {"enable_thinking": False}
