"""Multi-RM voting on pairs and on a pool's best/worst choice, hand-computed."""

from __future__ import annotations

import pyarrow as pa
import pytest

from prefdata.filter import PoolVote, Vote
from prefdata.pipeline import MissingColumnsError, Pipeline
from prefdata.schema import pool_schema


def pairs_with(diffs: list[dict]) -> pa.Table:
    n = len(diffs)
    return pa.table(
        {
            "prompt_id": [f"p{i}" for i in range(n)],
            "chosen": ["c"] * n,
            "rejected": ["r"] * n,
            "chosen_scores": diffs,
            "rejected_scores": [{k: 0.0 for k in d} for d in diffs],
        }
    )


def test_votes_and_agreement_hand_computed():
    pairs = pairs_with(
        [
            {"a": 0.5, "b": 0.3, "c": -1.0},  # a, b agree by >= 0.25: 2 of 3
            {"a": 0.5, "b": 0.1, "c": 2.0},  # b's 0.1 is below the minimum margin: 2 of 3
            {"a": 0.2, "b": 0.0, "c": None},  # nobody clears 0.25, c did not score: 0 of 2
            {"a": 1.0, "b": 1.0, "c": 1.0},  # 3 of 3
        ]
    )
    out = Vote(k=2, min_margin=0.25)(pairs)
    assert out.table["prompt_id"].to_pylist() == ["p0", "p1", "p3"]
    assert out.table["votes"].to_pylist() == [2, 2, 3]
    assert out.table["agreement"].to_pylist() == pytest.approx([2 / 3, 2 / 3, 1.0])
    assert out.rejects["reason"].to_pylist() == ["vote: 0 of 2 scorers agree, need 2"]
    assert out.rejects["row"].to_pylist() == [2]
    # a tie (margin exactly 0) is not a vote even with min_margin 0
    assert Vote(k=1, scorers=("b",))(pairs).table["prompt_id"].to_pylist() == ["p0", "p1", "p3"]


def test_vote_config_errors():
    with pytest.raises(ValueError, match="k=3 exceeds"):
        Vote(k=3, scorers=("a", "b"))
    with pytest.raises(ValueError, match="k=4 exceeds the 3 scorers"):
        Vote(k=4)(pairs_with([{"a": 1.0, "b": 1.0, "c": 1.0}]))
    with pytest.raises(MissingColumnsError, match="chosen_scores"):
        Vote(k=1)(pa.table({"prompt_id": ["p"], "chosen": ["c"], "rejected": ["r"]}))


def test_pool_vote_best_worst_hand_computed():
    def cand(cid: str, p: float | None, a: float, b: float) -> dict:
        return {"candidate_id": cid, "response": cid, "scores": {"p": p, "a": a, "b": b}}

    rows = [
        # primary p: best x (3), worst z (1); a: 5-1 = 4 agrees, b: 0-2 = -2 disagrees
        {
            "prompt_id": "q0",
            "candidates": [cand("x", 3, 5, 0), cand("y", 2, 0, 0), cand("z", 1, 1, 2)],
        },
        # ties on p: the earlier candidate wins both best (u) and worst (v, as u is not lower)
        {
            "prompt_id": "q1",
            "candidates": [cand("u", 2, 3, 3), cand("v", 2, 1, 1), cand("w", 1, 0, 0)],
        },
        # only one candidate scored by the primary
        {"prompt_id": "q2", "candidates": [cand("s", 1, 0, 0), cand("t", None, 1, 1)]},
    ]
    for r in rows:
        r["prompt"] = [{"role": "user", "content": r["prompt_id"]}]
    table = pa.Table.from_pylist(rows, schema=pool_schema(["p", "a", "b"]))
    out = PoolVote(primary="p", scorers=("a", "b"), k=2)(table)
    assert out.table["prompt_id"].to_pylist() == ["q1"]
    assert out.table.select(["best_id", "worst_id", "votes"]).to_pylist() == [
        {"best_id": "u", "worst_id": "w", "votes": 2}
    ]
    assert out.rejects["reason"].to_pylist() == [
        "vote: 1 of 2 scorers agree, need 2",
        "vote: fewer than 2 scored candidates",
    ]
    one = PoolVote(primary="p", scorers=("a", "b"), k=1)(table)
    assert one.table["prompt_id"].to_pylist() == ["q0", "q1"]
    assert one.table["best_id"].to_pylist() == ["x", "u"]
    assert one.table["worst_id"].to_pylist() == ["z", "w"]
    res = Pipeline([PoolVote(primary="p", k=1, scorers=("a",))]).run(table)
    e = res.funnel.entries[0]
    assert (e.rows_in, e.rows_out, e.rows_rejected) == (3, 2, 1)
