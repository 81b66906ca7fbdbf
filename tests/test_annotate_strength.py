"""Margins, ensemble strength, flipping and soft labels against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from prefdata.annotate import Margins, Normalise, Strength, attach_scores, strength_quantile
from prefdata.schema import PAIR_SCHEMA, pool_schema


def make_pairs(chosen: list[dict], rejected: list[dict]) -> pa.Table:
    n = len(chosen)
    rows = [
        {
            "prompt_id": f"p{i}",
            "prompt": [{"role": "user", "content": f"q{i}"}],
            "chosen": f"good {i}",
            "rejected": f"bad {i}",
            "chosen_id": f"c{i}",
            "rejected_id": f"r{i}",
            "chosen_generator": "strong",
            "rejected_generator": "weak",
            "margin": None,
            "strategy": "best-worst",
        }
        for i in range(n)
    ]
    table = pa.Table.from_pylist(rows, schema=PAIR_SCHEMA)
    table = table.append_column("chosen_scores", pa.array(chosen))
    return table.append_column("rejected_scores", pa.array(rejected))


def test_attach_scores_joins_on_prompt_and_candidate_ids():
    pool_rows = [
        {
            "prompt_id": "p0",
            "prompt": [{"role": "user", "content": "q"}],
            "candidates": [
                {"candidate_id": "c0", "response": "good 0", "scores": {"a": 4.0, "b": None}},
                {"candidate_id": "r0", "response": "bad 0", "scores": {"a": 1.0, "b": 2.0}},
            ],
        },
        # the same candidate id under another prompt must not leak into p0's pair
        {
            "prompt_id": "p1",
            "prompt": [{"role": "user", "content": "q1"}],
            "candidates": [
                {"candidate_id": "c0", "response": "x", "scores": {"a": 99.0, "b": 99.0}}
            ],
        },
    ]
    pools = pa.Table.from_pylist(pool_rows, schema=pool_schema(["a", "b"]))
    pairs = make_pairs([{}], [{}]).drop_columns(["chosen_scores", "rejected_scores"])
    out = attach_scores(pairs, pools)
    assert out["chosen_scores"].to_pylist() == [{"a": 4.0, "b": None}]
    assert out["rejected_scores"].to_pylist() == [{"a": 1.0, "b": 2.0}]
    assert attach_scores(pairs, pools, scorers=["b"])["rejected_scores"].to_pylist() == [{"b": 2.0}]
    missing = pairs.set_column(
        pairs.schema.get_field_index("rejected_id"), "rejected_id", pa.array(["nope"])
    )
    with pytest.raises(ValueError, match="pair row 0: field 'rejected_id' = 'nope'"):
        attach_scores(missing, pools)
    assert attach_scores(missing, pools, missing="null")["rejected_scores"].to_pylist() == [None]


def test_margins_and_strength_hand_computed():
    # pair 0: d = (4-1, 2-1, 1-3) = (3, 1, -2): mean 2/3,
    #   deviations (7/3, 1/3, -8/3): population variance (49 + 1 + 64) / 27 = 114/27
    # pair 1: d = (2, null, 4): mean 3, std 1 (the unscored scorer is left out)
    # pair 2: nothing scored: mean and std null
    pairs = make_pairs(
        [
            {"a": 4.0, "b": 2.0, "c": 1.0},
            {"a": 3.0, "b": None, "c": 5.0},
            {"a": None, "b": None, "c": None},
        ],
        [
            {"a": 1.0, "b": 1.0, "c": 3.0},
            {"a": 1.0, "b": 0.0, "c": 1.0},
            {"a": 1.0, "b": 1.0, "c": 1.0},
        ],
    )
    m = Margins(margin_from="a")(pairs).table
    assert m["margins"].to_pylist()[:2] == [
        {"a": 3.0, "b": 1.0, "c": -2.0},
        {"a": 2.0, "b": None, "c": 4.0},
    ]
    assert m["margin"].to_pylist() == [3.0, 2.0, None]
    out = Strength(gamma=1.5)(m).table
    mean, std, p = (out[c].to_pylist() for c in ("strength_mean", "strength_std", "p_chosen"))
    assert mean[0] == pytest.approx(2 / 3) and std[0] == pytest.approx(math.sqrt(114 / 27))
    assert (mean[1], std[1]) == (3.0, 1.0)
    assert mean[2] is None and std[2] is None and p[2] is None
    # p = sigmoid(1.5 * 2/3) = sigmoid(1) = 0.7310585786
    assert p[0] == pytest.approx(0.7310585786300049)
    assert p[1] == pytest.approx(1 / (1 + math.exp(-4.5)))
    assert out["flipped"].to_pylist() == [False, False, False]


def test_flip_negative_swaps_everything():
    pairs = make_pairs(
        [{"a": 0.0, "b": 1.0}, {"a": 2.0, "b": 2.0}], [{"a": 2.0, "b": 2.0}, {"a": 1.0, "b": 0.0}]
    )
    pairs = Margins(margin_from="a")(pairs).table
    out = Strength(flip="negative", gamma=1.0)(pairs).table.to_pylist()
    first, second = out
    # pair 0: d = (-2, -1), mean -1.5 -> swapped: mean 1.5, std 0.5
    assert first["flipped"] and not second["flipped"]
    assert (first["chosen"], first["rejected"]) == ("bad 0", "good 0")
    assert (first["chosen_id"], first["chosen_generator"]) == ("r0", "weak")
    assert first["chosen_scores"] == {"a": 2.0, "b": 2.0}
    assert first["margin"] == 2.0 and first["margins"] == {"a": 2.0, "b": 1.0}
    assert (first["strength_mean"], first["strength_std"]) == (1.5, 0.5)
    assert first["p_chosen"] == pytest.approx(1 / (1 + math.exp(-1.5)))
    assert (second["chosen"], second["strength_mean"]) == ("good 1", 1.5)


def test_flip_below_quantile_two_pass():
    # strength means 0..4 (one scorer): the 0.25 quantile is 1.0, so 0 is flipped
    pairs = make_pairs([{"s": float(v)} for v in range(5)], [{"s": 0.0}] * 5)
    cut = strength_quantile([pairs.slice(0, 2), pairs.slice(2)], q=0.25)
    assert cut == 1.0
    out = Strength(flip="below", flip_below=cut)(pairs).table
    # mean 0 < 1 -> flipped (stays 0 when negated); 1 is not below the cut
    assert out["flipped"].to_pylist() == [True, False, False, False, False]
    with pytest.raises(ValueError, match="flip_below"):
        Strength(flip="below")


def test_soft_label_from_margin_swaps_below_half():
    pairs = make_pairs([{"a": 1.0}, {"a": 3.0}], [{"a": 2.0}, {"a": 1.0}])
    pairs = Margins(margin_from="a")(pairs).table
    out = Strength(soft_label_from="margin", gamma=2.2, swap_below_half=True)(pairs).table
    # margins -1 and 2: p = sigmoid(-2.2) < 0.5 -> swapped, p = 1 - sigmoid(-2.2) = sigmoid(2.2)
    assert out["flipped"].to_pylist() == [True, False]
    assert out["margin"].to_pylist() == [1.0, 2.0]
    assert out["p_chosen"].to_pylist() == pytest.approx(
        [1 / (1 + math.exp(-2.2)), 1 / (1 + math.exp(-4.4))]
    )


def test_strength_on_normalised_scores_from_pools():
    """Scorers on different scales: z-score the pools, attach, then strength on the z-fields."""
    pool_rows = [
        {
            "prompt_id": f"p{i}",
            "prompt": [{"role": "user", "content": f"q{i}"}],
            "candidates": [
                {
                    "candidate_id": f"c{i}",
                    "response": "x",
                    "scores": {"rm": 10.0 * i, "j": 1.0 + i},
                },
                {"candidate_id": f"r{i}", "response": "y", "scores": {"rm": 0.0, "j": 1.0}},
            ],
        }
        for i in range(3)
    ]
    pools = Normalise(method="zscore")(
        pa.Table.from_pylist(pool_rows, schema=pool_schema(["rm", "j"]))
    ).table
    pairs = attach_scores(
        make_pairs([{}] * 3, [{}] * 3).drop_columns(["chosen_scores", "rejected_scores"]), pools
    )
    out = Strength(scorers=("rm.z", "j.z"))(pairs).table
    # rm and j are affine in each other, so their z-margins agree: std 0
    assert np.allclose(out["strength_std"].to_numpy(), 0.0)
    assert out["strength_mean"].to_pylist()[0] == 0.0
    assert out["strength_mean"].to_pylist()[2] > out["strength_mean"].to_pylist()[1] > 0


def test_flip_swaps_every_chosen_rejected_column():
    from prefdata.annotate.strength import swap_pairs

    t = pa.table(
        {
            "chosen": ["bad"],
            "rejected": ["good"],
            "chosen_score": [1.0],
            "rejected_score": [5.0],
            "margin": [-4.0],
        }
    )
    out = swap_pairs(t, np.array([True])).to_pylist()[0]
    assert out == {
        "chosen": "good",
        "rejected": "bad",
        "chosen_score": 5.0,
        "rejected_score": 1.0,
        "margin": 4.0,
        "flipped": True,
    }
