"""RRM augmentation (8 + 6 per example, no self-pairs) and reward-conditioned twins."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest

from prefdata.construct import REWARD_CONDITIONED_TEMPLATE, Pairs, reward_conditioned, rrm
from prefdata.schema import PAIR_SCHEMA, pool_schema


def pairs_table(n: int, per_prompt: int = 1) -> pa.Table:
    rows = []
    for i in range(n):
        for j in range(per_prompt):
            rows.append(
                {
                    "prompt_id": f"p{i}",
                    "prompt": [{"role": "user", "content": f"q{i}"}],
                    "chosen": f"good {i}.{j}",
                    "rejected": f"bad {i}.{j}",
                    "chosen_id": f"c{i}.{j}",
                    "rejected_id": f"r{i}.{j}",
                    "chosen_generator": "big",
                    "rejected_generator": "small",
                    "margin": 5.0,
                    "strategy": "best-worst",
                    "provenance": '{"x":1}',
                    "chosen_score": 8.0 + j,
                    "rejected_score": 3.0,
                }
            )
    return pa.Table.from_pylist(rows)


def test_rrm_counts_and_no_self_pairs():
    src = pairs_table(6)
    out = rrm(src, seed=1, include_original=False)
    t = out.table
    assert t.schema.names == PAIR_SCHEMA.names + ["tie"]
    assert t.num_rows == 6 * 14 and out.rejects.num_rows == 0
    by_prompt = Counter(zip(t["prompt_id"].to_pylist(), t["tie"].to_pylist(), strict=True))
    for i in range(6):
        assert by_prompt[(f"p{i}", False)] == 8 and by_prompt[(f"p{i}", True)] == 6
    for r in t.to_pylist():
        assert r["chosen"] != r["rejected"]
        own = {f"good {r['prompt_id'][1:]}.0", f"bad {r['prompt_id'][1:]}.0"}
        if r["tie"]:
            assert r["chosen"] not in own and r["rejected"] not in own
        else:  # a response to x_i beats a response to another prompt
            assert r["chosen"] in own and r["rejected"] not in own
            assert r["margin"] is None and r["strategy"] == "rrm"
    # each example borrows exactly two other examples (j and k), four responses
    for i in range(6):
        rows = [r for r in t.to_pylist() if r["prompt_id"] == f"p{i}" and r["tie"]]
        assert len({x for r in rows for x in (r["chosen"], r["rejected"])}) == 4
        prov = json.loads(rows[0]["provenance"])
        assert f"p{i}" not in prov["off_prompt"] and len(set(prov["off_prompt"])) == 2


def test_rrm_original_first_deterministic_and_order_free():
    src = pairs_table(5)
    out = rrm(src, seed=0).table
    assert out.num_rows == 5 * 15
    first = out.slice(0, 1).to_pylist()[0]
    assert (first["chosen"], first["rejected"], first["margin"], first["strategy"]) == (
        "good 0.0",
        "bad 0.0",
        5.0,
        "best-worst",
    )
    assert rrm(src, seed=0).table.equals(out)
    shuffled = src.take(np.random.default_rng(0).permutation(src.num_rows))
    assert rrm(shuffled, seed=0).table.equals(out)  # input row order does not matter
    assert not rrm(src, seed=9).table.equals(out)


def test_rrm_with_several_pairs_per_prompt_never_borrows_its_own_prompt():
    src = pairs_table(4, per_prompt=3)
    t = rrm(src, seed=2, include_original=False).table
    assert t.num_rows == 12 * 14
    for r in t.to_pylist():
        i = r["prompt_id"][1:]
        own = {f"{w} {i}.{j}" for w in ("good", "bad") for j in range(3)}
        if r["tie"]:
            assert r["chosen"] not in own and r["rejected"] not in own
        else:
            assert r["rejected"] not in own


def test_rrm_needs_three_prompts_and_rejects_self_pairs():
    with pytest.raises(ValueError, match="three distinct prompts"):
        rrm(pairs_table(2))
    src = pairs_table(4)
    bad = pa.Table.from_pylist([{**src.to_pylist()[0], "rejected": "good 0.0"}])
    out = rrm(pa.concat_tables([src, bad]), seed=0, include_original=False)
    assert out.table.num_rows == 4 * 14
    assert out.rejects.to_pylist()[0]["reason"] == "chosen and rejected are the same text"


def test_reward_conditioned_twins():
    src = pairs_table(2)
    out = reward_conditioned(src)
    t = out.table.to_pylist()
    assert len(t) == 4 and out.rejects.num_rows == 0
    first, twin = t[0], t[1]
    assert first["prompt"] == [
        {"role": "system", "content": REWARD_CONDITIONED_TEMPLATE.format(score="8")},
        {"role": "user", "content": "q0"},
    ]
    assert twin["prompt"][0]["content"].endswith("Overall score: 3.")
    assert (first["chosen"], first["rejected"], first["margin"]) == ("good 0.0", "bad 0.0", 5.0)
    assert (twin["chosen"], twin["rejected"], twin["margin"]) == ("bad 0.0", "good 0.0", -5.0)
    assert (twin["chosen_id"], twin["chosen_score"], twin["target_score"]) == ("r0.0", 3.0, 3.0)
    assert first["prompt_id"] == twin["prompt_id"] == "p0"
    assert json.loads(twin["provenance"])["swapped"] is True
    assert out.table.schema.names[: len(PAIR_SCHEMA)] == PAIR_SCHEMA.names


def test_reward_conditioned_merges_system_scales_and_rejects_nulls():
    rows = pairs_table(2).to_pylist()
    rows[0]["prompt"] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "q0"},
    ]
    rows[0]["chosen_score"], rows[0]["rejected_score"] = 0.75, 0.25
    rows[1]["rejected_score"] = None
    out = reward_conditioned(pa.Table.from_pylist(rows), scale=(0.0, 1.0))
    t = out.table.to_pylist()
    assert len(t) == 2
    # 0.75 on [0, 1] -> 1 + 9 * 0.75 = 7.75 -> 7.8 (one decimal); 0.25 -> 3.25 -> 3.2
    assert [m["role"] for m in t[0]["prompt"]] == ["system", "user"]
    assert t[0]["prompt"][0]["content"] == (
        REWARD_CONDITIONED_TEMPLATE.format(score="7.8") + "\n\nBe brief."
    )
    assert t[1]["prompt"][0]["content"].startswith(REWARD_CONDITIONED_TEMPLATE.format(score="3.2"))
    assert [(r["reason"], r["field"], r["row"]) for r in out.rejects.to_pylist()] == [
        ("score is null", "rejected_score", 1)
    ]


def test_reward_conditioned_on_real_pairs():
    cands = [
        {
            "candidate_id": f"c{i}",
            "response": f"r{i}",
            "generator": "g",
            "scores": {"rm": float(i)},
            "flags": [],
        }
        for i in range(4)
    ]
    pools = pa.Table.from_pylist(
        [
            {
                "prompt_id": "p",
                "prompt": [{"role": "user", "content": "Q"}],
                "source": None,
                "metadata": None,
                "candidates": cands,
            }
        ],
        schema=pool_schema(["rm"]),
    )
    pairs = Pairs("curriculum", score="rm")(pools).table
    out = reward_conditioned(pairs, scale=(0.0, 3.0))
    assert out.table.num_rows == 2 * pairs.num_rows
    targets = out.table["target_score"].to_pylist()
    assert targets == [3.0, 0.0, 3.0, 1.0, 3.0, 2.0]
