"""LLM judges through ChatBackend.

Two backends, both defined here because the concrete prefdata.generate backends are being
written in parallel: ``TinyTransformersBackend`` is a real one (the tiny random Llama through
transformers ``generate``; its answers are gibberish, which is exactly an unparseable judge),
and ``RuleJudge`` is a deterministic rule-based backend at the model boundary (it reads the
rendered judge prompt and answers like a judge would, with a configurable position bias).
"""

import re
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import pytest

from prefdata.generate.base import ChatBackend, ChatResult, Completion, GenerationConfig
from prefdata.score import JudgePairwise, JudgePointwise, pools_from_texts
from prefdata.score.judge import parse_rating, parse_verdict


class TinyTransformersBackend:
    """A real ChatBackend: chat template + ``generate`` on a local causal LM."""

    def __init__(self, path, max_new_tokens=6):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.name = f"tiny:{path}"
        self.tok = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path).eval()
        self.max_new_tokens = max_new_tokens

    def chat(self, conversations, config, seeds):
        import torch

        results = []
        for conv, conv_seeds in zip(conversations, seeds, strict=True):
            text = self.tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
            ids = self.tok(text, return_tensors="pt", add_special_tokens=False)
            if ids["input_ids"].shape[1] + self.max_new_tokens > 512:
                results.append(ChatResult(error="prompt longer than the context"))
                continue
            comps = []
            for s in conv_seeds:
                torch.manual_seed(s)
                out = self.model.generate(
                    **ids,
                    max_new_tokens=min(config.max_tokens, self.max_new_tokens),
                    do_sample=config.temperature > 0,
                    pad_token_id=self.tok.pad_token_id,
                )
                new = out[0, ids["input_ids"].shape[1] :]
                comps.append(
                    Completion(
                        self.tok.decode(new, skip_special_tokens=True), num_tokens=len(new), seed=s
                    )
                )
            results.append(ChatResult(comps))
        return results


@dataclass
class RuleJudge:
    """Rates by word count; prefers the longer response. With ``bias_a`` it answers "A"
    whenever the two lengths are within ``tie_band`` words (a position-biased judge).
    Answers "I cannot say." to any response containing "???"."""

    name: str = "rule-judge"
    bias_a: bool = True
    tie_band: int = 2
    calls: list = field(default_factory=list)

    def chat(self, conversations, config: GenerationConfig, seeds):
        out = []
        for conv in conversations:
            text = conv[-1]["content"]
            self.calls.append(text)
            if "[Response A]" in text:
                a = re.search(r"\[Response A\]\n(.*?)\n\[End of response A\]", text, re.S)[1]
                b = re.search(r"\[Response B\]\n(.*?)\n\[End of response B\]", text, re.S)[1]
                if "???" in a + b:
                    ans = "Hard to say."
                elif abs(len(a.split()) - len(b.split())) <= self.tie_band:
                    ans = "Both fine. [[A]]" if self.bias_a else "[[C]]"
                else:
                    ans = "[[A]]" if len(a.split()) > len(b.split()) else "Verdict: B"
            else:
                resp = re.search(r"\[Response\]\n(.*?)\n\[End of response\]", text, re.S)[1]
                ans = (
                    "I cannot say."
                    if "???" in resp
                    else (f"Good enough.\nRating: [[{min(10, max(1, len(resp.split())))}]]")
                )
            out.append(ChatResult([Completion(ans)] * config.n))
        return out


@pytest.fixture(scope="module")
def pools():
    return pools_from_texts(
        ["Tell me about the sea.", "Name a fruit."],
        [
            ["The sea is big.", "The sea is big and blue and deep and cold.", "??? what"],
            ["apple", "a red apple"],
        ],
    )


def _scores(table, name):
    return [c["scores"].get(name) for row in table["candidates"].to_pylist() for c in row]


def _flags(table):
    return [c["flags"] for row in table["candidates"].to_pylist() for c in row]


def test_parsers():
    assert parse_rating("Rating: 7", 1, 10) == 7.0
    assert parse_rating("blah [[3]] then [[8]]", 1, 10) == 8.0
    assert parse_rating("Score = 7.5", 1, 10) == 7.5
    assert parse_rating("rating: 0", 1, 10) is None
    assert parse_rating("no number here", 1, 10) is None
    assert parse_rating(None, 1, 10) is None
    assert [parse_verdict(x) for x in ("[[A]]", "B", "The winner is B.", "(A)", "tie?")] == [
        "A",
        "B",
        "B",
        "A",
        None,
    ]


def test_pointwise_rule_backend_scores_and_unparsed(pools):
    judge = JudgePointwise(RuleJudge(), rubric="length", scale=(1, 10))
    out = judge(pools).table
    assert _scores(out, "judge") == [4.0, 10.0, None, 1.0, 3.0]
    assert _flags(out)[2] == ["judge_unparsed"] and not any(_flags(out)[:2])
    assert isinstance(judge.resources["backend"], ChatBackend)
    assert "Rubric: length" in judge.resources["backend"].calls[0]


def test_pointwise_real_tiny_model_unparseable_gives_null_and_flag(tiny_models, pools):
    judge = JudgePointwise(
        partial(TinyTransformersBackend, str(tiny_models["causal"])),
        generation=GenerationConfig(n=1, temperature=0.0, max_tokens=12),
    )
    out = judge(pools).table
    answers = judge.resources["backend"]
    assert isinstance(answers, TinyTransformersBackend)
    flags = _flags(out)
    # Each candidate is either scored from a parsed rating or null with a flag: no crash.
    assert all(s is None for s in _scores(out, "judge"))
    assert all(f in (["judge_unparsed"], ["judge_error"]) for f in flags)
    assert "TinyTransformersBackend" in judge.config()["backend"]
    again = JudgePointwise(
        partial(TinyTransformersBackend, str(tiny_models["causal"])),
        generation=GenerationConfig(n=1, temperature=0.0, max_tokens=12),
    )
    assert again.fingerprint == judge.fingerprint


def test_pairwise_both_orders_cancel_position_bias(pools):
    judge = JudgePairwise(RuleJudge(bias_a=True), name="pw")
    pairs = judge.compare(pools)
    # pool 0: 3 pairs, pool 1: 1 pair; each asked twice
    assert pairs.num_rows == 4 and len(judge.resources["backend"].calls) == 8
    rows = pairs.to_pylist()
    # "apple" vs "a red apple": within the tie band, the judge always says A -> 0.5 after
    # averaging both orders, and the per-order values expose the bias.
    fruit = rows[3]
    assert fruit["p_a_better"] == 0.5 and fruit["a_first"] == 1.0 and fruit["b_first"] == 0.0
    # Clear winner: the longer sea answer wins in both orders.
    assert rows[0]["p_a_better"] == 0.0 and rows[0]["parsed"] == 2
    # "???" answers never parse -> null probability
    assert rows[1]["p_a_better"] is None and rows[1]["parsed"] == 0
    out = judge(pools).table
    s = _scores(out, "pw")
    assert s[0] == 0.0 and s[1] == 1.0 and s[2] is None  # mean win prob vs the pool
    assert s[3] == s[4] == 0.5
    assert "pw_unparsed" in _flags(out)[2] and "pw_unparsed" in _flags(out)[0]
    assert "pw_unparsed" not in _flags(out)[3]


def test_pairwise_against_reference_generator():
    t = pools_from_texts(["q"], [["short", "a much longer answer here", "a mid size answer"]])
    import pyarrow as pa

    # Mark the first candidate as the reference generator.
    cands = t["candidates"].to_pylist()
    cands[0][0]["generator"] = "ref-model"
    t = t.set_column(
        t.column_names.index("candidates"),
        t.schema.field("candidates"),
        pa.array(cands, t.schema.field("candidates").type),
    )
    judge = JudgePairwise(RuleJudge(bias_a=False), name="vs_ref", reference="ref-model")
    out = judge(t).table
    assert _scores(out, "vs_ref") == [0.5, 1.0, 1.0]
    assert len(judge.resources["backend"].calls) == 4
    none = JudgePairwise(RuleJudge(), name="vs_ref", reference="absent")(t).table
    assert _scores(none, "vs_ref") == [None] * 3
    assert all("vs_ref_no_reference" in f for f in _flags(none))


def test_backend_errors_are_flagged_not_raised(pools):
    class Failing:
        name = "failing"

        def chat(self, conversations, config, seeds):
            return [ChatResult(error="server said no") for _ in conversations]

    out = JudgePointwise(Failing())(pools).table
    assert _scores(out, "judge") == [None] * 5
    assert all(f == ["judge_error"] for f in _flags(out))
    np.testing.assert_equal(len(JudgePointwise(Failing()).provenance()["backend"]) > 0, True)


def test_backend_credentials_never_reach_config_or_provenance():
    """A judge built from a factory with a key: the fingerprinted config (written to the
    manifest and the dataset card) holds the key neither by name nor by value."""
    import functools
    import json

    from prefdata.score import JudgePointwise

    def make_backend(url, model, api_key=None):  # never called here
        raise AssertionError

    judge = JudgePointwise(
        backend=functools.partial(
            make_backend, "http://127.0.0.1:1", "judge-m", api_key="sk-LIVE-SECRET-123456"
        ),
        rubric="helpfulness",
    )
    text = json.dumps(judge.config(), default=str) + json.dumps(judge.provenance(), default=str)
    assert "sk-LIVE-SECRET" not in text and "api_key='***'" in text
    positional = JudgePointwise(
        backend=functools.partial(make_backend, "http://x", "m", "hf_abcdefgh12345678"),
        rubric="r",
    )
    assert "hf_abcdefgh" not in json.dumps(positional.config(), default=str)


def test_a_judge_without_a_backend_says_so():
    from prefdata.score.judge import JudgePairwise, JudgePointwise

    for judge in (JudgePairwise(name="pw"), JudgePointwise(name="pt")):
        with pytest.raises(TypeError, match="no backend; pass backend="):
            judge.ensure_setup()


def test_a_missing_optional_package_names_its_extra():
    """vLLM is not in the dev venv (it has a venv of its own): a stage whose setup needs it
    says which extra provides it; a package no extra provides is left as it is."""
    from dataclasses import dataclass

    from prefdata.pipeline import Stage

    @dataclass(frozen=True)
    class NeedsVllm(Stage):
        module: str = "vllm"

        def setup(self):
            raise ModuleNotFoundError(f"No module named {self.module!r}", name=self.module)

    with pytest.raises(
        ModuleNotFoundError, match=r"NeedsVllm needs vllm: pip install 'prefdata\[vllm\]'"
    ):
        NeedsVllm().ensure_setup()
    with pytest.raises(ModuleNotFoundError, match="No module named 'nothing_here'"):
        NeedsVllm(module="nothing_here").ensure_setup()
