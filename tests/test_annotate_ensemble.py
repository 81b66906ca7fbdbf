"""Ensemble scores (Coste et al.): mean, worst case and uncertainty-weighted, and what
they buy against a known truth (prefdata.synthetic, the quality benchmark's data)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from prefdata.annotate import Ensemble, Normalise, ensemble_scores
from prefdata.construct import Pairs
from prefdata.filter import Vote
from prefdata.pipeline import Pipeline
from prefdata.schema import pool_schema
from prefdata.synthetic import NoisyScorer, known_truth_pools, label_quality


def pools(rows: list[list[dict]]) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "prompt_id": f"p{i}",
                "prompt": [{"role": "user", "content": "q"}],
                "candidates": [
                    {"candidate_id": f"c{i}{j}", "response": f"r{j}", "scores": s}
                    for j, s in enumerate(cands)
                ],
            }
            for i, cands in enumerate(rows)
        ],
        schema=pool_schema(["x.z", "y.z", "w.z"]),
    )


def test_each_method_by_hand():
    members = np.array([[1.0, 3.0, 2.0], [0.5, 0.5, 0.5], [2.0, np.nan, 1.0]])
    assert ensemble_scores(members, "mean").tolist()[:2] == [2.0, 0.5]
    assert ensemble_scores(members, "min").tolist()[:2] == [1.0, 0.5]
    uwo = ensemble_scores(members, "uwo", lam=3.0)
    assert uwo[0] == pytest.approx(2.0 - 3.0 * (2 / 3)) and uwo[1] == 0.5
    assert all(np.isnan(ensemble_scores(members, m)[2]) for m in ("mean", "min", "uwo"))


def test_the_stage_writes_one_field_that_pairs_rank_by():
    t = pools(
        [
            [
                {"x.z": 2.0, "y.z": -1.0, "w.z": 0.0},  # one scorer loves it
                {"x.z": 0.6, "y.z": 0.5, "w.z": 0.4},  # everyone likes it a little
                {"x.z": -1.0, "y.z": -1.0, "w.z": None},  # missing a member: never chosen
            ]
        ]
    )
    out = Ensemble(("x.z", "y.z", "w.z"), method="uwo", lam=1.0)(t).table
    scores = [c["scores"] for c in out["candidates"][0].as_py()]
    assert scores[0]["ensemble.uwo"] == pytest.approx(1 / 3 - 14 / 9)
    assert scores[1]["ensemble.uwo"] == pytest.approx(0.5 - 2 / 300)
    assert scores[2]["ensemble.uwo"] is None
    pair = Pairs("best-worst", score="ensemble.uwo")(out).table.to_pylist()[0]
    assert (pair["chosen"], pair["rejected"]) == ("r1", "r0")
    mean = Pairs("best-worst", score="ensemble.mean")(Ensemble(("x.z", "y.z", "w.z"))(t).table)
    assert mean.table["chosen"].to_pylist() == ["r1"]  # 0.5 > 1/3


def test_raw_members_and_bad_configs_are_refused():
    with pytest.raises(ValueError, match=r"not normalised: put Normalise\(\) before"):
        Ensemble(("rm", "judge"))
    Ensemble(("rm", "judge"), allow_raw=True)
    with pytest.raises(ValueError, match="at least 2 scorers"):
        Ensemble(("a.z",))
    with pytest.raises(ValueError, match="unknown ensemble method"):
        Ensemble(("a.z", "b.z"), method="median")
    with pytest.raises(ValueError, match=r"requires \['scores.q.z'\]"):
        Ensemble(("x.z", "q.z"))(pools([[{"x.z": 1.0}]]))


def test_against_a_known_truth_the_mean_of_three_beats_one_and_votes_trade_yield():
    """Three reward models = truth + noise (sd 1, 1, 1.5): best-worst on the mean of the
    three labels more pairs right than on one, at full yield; 3-of-3 votes on one
    scorer's pairs are about as accurate but keep far fewer prompts."""
    scorers = [NoisyScorer("a", 1.0), NoisyScorer("b", 1.0), NoisyScorer("c", 1.5)]
    data = Normalise()(known_truth_pools(1500, 8, scorers, seed=1)).table
    z = ("a.z", "b.z", "c.z")

    def grade(*stages):
        return label_quality(Pipeline(list(stages)).run(data).table, 1500)

    one = grade(Pairs("best-worst", score="a.z"))
    mean = grade(Ensemble(z), Pairs("best-worst", score="ensemble.mean"))
    voted = grade(Pairs("best-worst", score="a.z"), Vote(scorers=z, k=3))
    assert mean["accuracy"] > one["accuracy"] + 0.015 and mean["yield"] == one["yield"] == 1.0
    assert mean["true_margin"] > one["true_margin"]
    assert voted["accuracy"] > one["accuracy"] and voted["yield"] < 0.8
