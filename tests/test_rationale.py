"""Rationales: template wiring, A/B order randomised and recorded, errors never crash, and a
real tiny causal model through the project's TransformersBackend."""

from __future__ import annotations

import json
import re

import pyarrow as pa
import pytest

from prefdata.construct import Pairs
from prefdata.generate.base import ChatResult, Completion, GenerationConfig
from prefdata.rationale import DEFAULT_TEMPLATE, Rationales
from prefdata.schema import pool_schema

TEMPLATE = 'A=<{response_a}> B=<{response_b}> preferred={preferred} other={other} json={"k": 1}'


class RuleBackend:
    """A deterministic rule-based backend, used where a test asserts exact text: it answers
    with the text of the response the prompt marks as preferred, and records what it saw."""

    name = "rule"

    def __init__(self) -> None:
        self.seen: list[tuple[str, list[int]]] = []

    def chat(self, conversations, config, seeds):
        out = []
        for conv, s in zip(conversations, seeds, strict=True):
            text = conv[-1]["content"]
            self.seen.append((text, list(s)))
            m = re.match(r"A=<(.*)> B=<(.*)> preferred=(\w) other=(\w)", text, re.S)
            a, b, pref, _ = m.groups()
            out.append(ChatResult([Completion(f"better: {a if pref == 'A' else b}")]))
        return out


class FlakyBackend:
    """Fails in the two ways the ChatBackend protocol allows, plus one it does not."""

    name = "flaky"

    def chat(self, conversations, config, seeds):
        if any("explode" in c[-1]["content"] for c in conversations):
            raise RuntimeError("server went away")
        return [
            ChatResult(error="prompt longer than the context")
            if "long" in c[-1]["content"]
            else ChatResult([])
            if "nothing" in c[-1]["content"]
            else ChatResult([Completion("fine")])
            for c in conversations
        ]


def pairs_table(n: int, texts=None) -> pa.Table:
    rows = []
    for i in range(n):
        chosen, rejected = texts[i] if texts else (f"good answer {i}", f"poor answer {i}")
        rows.append(
            {
                "prompt_id": f"p{i}",
                "prompt": [{"role": "user", "content": f"question {i}"}],
                "chosen": chosen,
                "rejected": rejected,
                "chosen_id": f"c{i}",
                "rejected_id": f"r{i}",
                "rationale": None,
                "strategy": "best-worst",
                "provenance": '{"strategy":"best-worst"}',
            }
        )
    return pa.Table.from_pylist(rows)


def orders(table: pa.Table) -> list[str]:
    return [json.loads(p)["rationale"]["order"] for p in table["provenance"].to_pylist()]


def test_rationale_text_order_and_balance():
    t = pairs_table(200)
    backend = RuleBackend()
    out = Rationales(backend, template=TEMPLATE, seed=5)(t)
    assert out.rejects.num_rows == 0 and out.table.num_rows == 200
    # the rule backend repeats the preferred response: it must be the chosen, whatever the order
    assert out.table["rationale"].to_pylist() == [f"better: good answer {i}" for i in range(200)]
    o = orders(out.table)
    assert set(o) == {"chosen=A", "chosen=B"}
    assert 70 <= o.count("chosen=A") <= 130, o.count("chosen=A")  # binomial(200, 1/2)
    # the recorded order is the order the model saw
    for (prompt, seeds), order, i in zip(backend.seen, o, range(200), strict=True):
        first = prompt.index(f"good answer {i}") < prompt.index(f"poor answer {i}")
        assert first == (order == "chosen=A")
        prov = json.loads(out.table["provenance"][i].as_py())
        assert seeds == [prov["rationale"]["pair_seed"]]
        assert prov["strategy"] == "best-worst"  # earlier provenance kept
        assert prov["rationale"]["backend"] == "rule" and prov["rationale"]["error"] is None
    assert 'json={"k": 1}' in backend.seen[0][0]  # other braces left alone


def test_order_is_seeded():
    t = pairs_table(64)
    a = orders(Rationales(RuleBackend(), template=TEMPLATE, seed=1)(t).table)
    assert a == orders(Rationales(RuleBackend(), template=TEMPLATE, seed=1)(t).table)
    assert a != orders(Rationales(RuleBackend(), template=TEMPLATE, seed=2)(t).table)
    # per pair, not per batch position: a subset gets the same orders
    sub = orders(
        Rationales(RuleBackend(), template=TEMPLATE, seed=1, batch_size=7)(t.slice(10, 20)).table
    )
    assert sub == a[10:30]


def test_backend_errors_give_null_rationale_and_reason():
    texts = [("ok", "x"), ("long", "x"), ("nothing", "x"), ("ok2", "y")]
    out = Rationales(FlakyBackend(), template=TEMPLATE, batch_size=2)(pairs_table(4, texts))
    assert out.table["rationale"].to_pylist() == ["fine", None, None, "fine"]
    errors = [json.loads(p)["rationale"]["error"] for p in out.table["provenance"].to_pylist()]
    assert errors == [
        None,
        "prompt longer than the context",
        "backend returned no completion",
        None,
    ]
    texts = [("explode", "x"), ("ok", "y"), ("ok", "z")]
    out = Rationales(FlakyBackend(), template=TEMPLATE, batch_size=2)(pairs_table(3, texts))
    assert out.table["rationale"].to_pylist() == [None, None, "fine"]
    err = json.loads(out.table["provenance"][0].as_py())["rationale"]["error"]
    assert err == "RuntimeError: server went away"


def test_bad_pairs_rejected_and_config_checked():
    t = pairs_table(3).to_pylist()
    t[1]["chosen"] = None
    t[2]["prompt"] = []
    out = Rationales(RuleBackend(), template=TEMPLATE)(pa.Table.from_pylist(t))
    assert out.table.num_rows == 1
    assert [(r["reason"], r["field"]) for r in out.rejects.to_pylist()] == [
        ("chosen is missing", "chosen"),
        ("prompt is missing", "prompt"),
    ]
    with pytest.raises(ValueError, match="response_b"):
        Rationales(RuleBackend(), template="{response_a}")
    with pytest.raises(TypeError):
        Rationales(None)
    a = Rationales(RuleBackend(), template=TEMPLATE)
    assert a.fingerprint != Rationales(FlakyBackend(), template=TEMPLATE).fingerprint
    assert a.fingerprint != Rationales(RuleBackend(), template=TEMPLATE + "!").fingerprint


def test_tiny_causal_model_writes_rationales(tiny_models):
    """A real model: the tiny random Llama through prefdata's TransformersBackend."""
    from prefdata.generate.transformers_backend import TransformersBackend

    backend = TransformersBackend(tiny_models["causal"], device="cpu", batch_size=4)
    cands = [
        {
            "candidate_id": f"c{i}",
            "response": text,
            "generator": "g",
            "scores": {"rm": float(i)},
            "flags": [],
        }
        for i, text in enumerate(["Paris.", "The capital of France is Paris.", "No."])
    ]
    pools = pa.Table.from_pylist(
        [
            {
                "prompt_id": "p",
                "prompt": [{"role": "user", "content": "What is the capital?"}],
                "source": None,
                "metadata": None,
                "candidates": cands,
            }
        ],
        schema=pool_schema(["rm"]),
    )
    pairs = Pairs("curriculum", score="rm")(pools).table
    stage = Rationales(
        backend,
        template=DEFAULT_TEMPLATE,
        seed=0,
        generation=GenerationConfig(max_tokens=8, temperature=1.0),
    )
    out = stage(pairs)
    again = stage(pairs)
    texts = out.table["rationale"].to_pylist()
    assert len(texts) == 2 and all(isinstance(x, str) and x for x in texts)
    assert texts == again.table["rationale"].to_pylist()  # seeded per pair
    prov = [json.loads(p)["rationale"] for p in out.table["provenance"].to_pylist()]
    assert all(p["backend"] == backend.name and p["error"] is None for p in prov)
    assert json.loads(out.table["provenance"][0].as_py())["strategy"] == "curriculum"
