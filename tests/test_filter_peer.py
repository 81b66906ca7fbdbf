"""CRM-style peer filtering: selection, curriculum and the two-pass fit, hand-computed."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from prefdata.filter import PeerFilter, PeerFit, peer_order
from prefdata.filter.peer import bt_loss, estimate_noise_rate

MA = [2.0, 1.0, -1.0, 0.5, -3.0]
MB = [1.0, -2.0, 0.5, 2.0, -1.0]


def reasons_of(out) -> dict[str, str]:
    return dict(
        zip(out.rejects["prompt_id"].to_pylist(), out.rejects["reason"].to_pylist(), strict=True)
    )


def pairs(ma: list[float | None], mb: list[float | None], prefix: str = "p") -> pa.Table:
    n = len(ma)
    return pa.table(
        {
            "prompt_id": [f"{prefix}{i}" for i in range(n)],
            "chosen": [f"c{i}" for i in range(n)],
            "rejected": [f"r{i}" for i in range(n)],
            "chosen_id": [f"c{i}" for i in range(n)],
            "rejected_id": [f"r{i}" for i in range(n)],
            "chosen_scores": [{"A": a, "B": b} for a, b in zip(ma, mb, strict=True)],
            "rejected_scores": [{"A": 0.0, "B": 0.0}] * n,
        }
    )


def test_bt_loss_values():
    # -log sigmoid(m) = log(1 + exp(-m))
    assert bt_loss(np.array([2.0, 0.0, -3.0])).tolist() == pytest.approx(
        [math.log1p(math.exp(-2)), math.log(2), math.log1p(math.exp(3))]
    )


def test_peer_selection_hand_computed():
    # n = 5, tau = 0.2: each scorer keeps its 5 - floor(1.0) = 4 lowest-loss pairs.
    # A's highest loss is p4 (margin -3); B's is p1 (margin -2). Both: keep p0, p2, p3.
    out = PeerFilter(scorer_a="A", scorer_b="B", tau=0.2)(pairs(MA, MB))
    assert out.table["prompt_id"].to_pylist() == ["p0", "p2", "p3"]
    assert reasons_of(out) == {
        "p1": "peer: high loss under B",
        "p4": "peer: high loss under A",
    }
    # curriculum: mean margins p0 1.5, p2 -0.25, p3 1.25 -> p0 (0), p3 (1), p2 (2)
    assert out.table["curriculum_rank"].to_pylist() == [0, 2, 1]
    assert peer_order(out.table)["prompt_id"].to_pylist() == ["p0", "p3", "p2"]
    assert out.table["peer_loss_a"].to_pylist()[0] == pytest.approx(math.log1p(math.exp(-2)))
    # "either": only pairs high-loss under both are dropped (none here)
    either = PeerFilter(scorer_a="A", scorer_b="B", tau=0.2, select="either")(pairs(MA, MB))
    assert either.table.num_rows == 5
    # "a": the set A selects (what its peer B would train on)
    only_a = PeerFilter(scorer_a="A", scorer_b="B", tau=0.2, select="a")(pairs(MA, MB))
    assert only_a.table["prompt_id"].to_pylist() == ["p0", "p1", "p2", "p3"]
    # tau 0.4: each drops floor(2) = 2; A drops p4, p2; B drops p1, p4 -> keep p0, p3
    wider = PeerFilter(scorer_a="A", scorer_b="B", tau=0.4)(pairs(MA, MB))
    assert wider.table["prompt_id"].to_pylist() == ["p0", "p3"]
    assert wider.rejects["reason"].to_pylist() == [
        "peer: high loss under B",
        "peer: high loss under A",
        "peer: high loss under A and B",
    ]


def test_sign_agreement_and_missing_scores():
    out = PeerFilter(scorer_a="A", scorer_b="B", tau=0.0, require_sign_agreement=True)(
        pairs(MA + [1.0], MB + [None])
    )
    # signs: p1 (+, -) and p2 (-, +) disagree; p5 is not scored by B
    assert out.table["prompt_id"].to_pylist() == ["p0", "p3", "p4"]
    assert out.rejects["reason"].to_pylist() == [
        "peer: sign disagreement",
        "peer: sign disagreement",
        "peer: not scored by A and B",
    ]


def test_ties_break_by_key_and_noise_estimate():
    # four identical margins, tau 0.25: one is dropped, the one with the largest key
    out = PeerFilter(scorer_a="A", scorer_b="B", tau=0.25)(pairs([1.0] * 4, [1.0] * 4))
    assert out.rejects["prompt_id"].to_pylist() == ["p3"]
    # A against the label on p2, p4; B on p1, p4 -> (2/5 + 2/5) / 2
    assert estimate_noise_rate(np.array(MA), np.array(MB)) == pytest.approx(0.4)
    est = PeerFilter(scorer_a="A", scorer_b="B")(pairs(MA, MB))
    assert est.table["prompt_id"].to_pylist() == ["p0", "p3"]  # tau 0.4 as above


def test_two_pass_over_shards_equals_whole_table():
    rng = np.random.default_rng(1)
    ma, mb = rng.normal(0.5, 1, 200).tolist(), rng.normal(0.5, 1, 200).tolist()
    table = pairs(ma, mb)
    shards = [table.slice(0, 70), table.slice(70, 70), table.slice(140)]
    fits = [PeerFit("A", "B").update(s) for s in shards]
    fit = fits[2].merge(fits[0]).merge(fits[1])  # merge order does not matter
    sel = fit.finalize(0.3)
    parts = [PeerFilter(selection=sel)(s) for s in shards]
    whole = PeerFilter(scorer_a="A", scorer_b="B", tau=0.3)(table)
    assert pa.concat_tables([p.table for p in parts]).equals(whole.table)
    assert (
        sum(p.rejects.num_rows for p in parts)
        == whole.rejects.num_rows
        == 200 - whole.table.num_rows
    )
    assert sorted(whole.table["curriculum_rank"].to_pylist()) == list(range(whole.table.num_rows))
    with pytest.raises(ValueError, match="not in the peer selection"):
        PeerFilter(selection=sel)(pairs([1.0], [1.0], prefix="other"))
    assert (
        PeerFilter(selection=sel).fingerprint
        != PeerFilter(selection=PeerFit("A", "B").update(table).finalize(0.2)).fingerprint
    )
