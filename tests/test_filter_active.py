"""Active preference selection: predictive entropy of prompts and the certainty of the
implicit DPO preference of pairs, from LogProb scores of two real tiny models (the policy
and a reference of other weights), with top-k per round or a dataset share fitted first."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from prefdata.annotate.columns import sigmoid
from prefdata.filter.active import ActivePairs, ActivePrompts, pair_certainty, prompt_entropy
from prefdata.schema import pool_schema

torch = pytest.importorskip("torch")


def test_refuses_unclear_amounts():
    with pytest.raises(ValueError, match="one of top_k"):
        ActivePairs(policy="pi", reference="ref")
    with pytest.raises(ValueError, match="one of top_k"):
        ActivePairs(top_k=2, keep=0.5)
    with pytest.raises(ValueError, match="keep must be in"):
        ActivePrompts(keep=1.5)


@pytest.fixture(scope="module")
def scored(tiny_models, tmp_path_factory):
    """Pools of given responses scored by LogProb under the policy (the tiny causal model)
    and a reference (the same architecture, other weights)."""
    from prefdata.score import LogProb
    from prefdata.testing import build_tiny_models

    ref = build_tiny_models(tmp_path_factory.mktemp("ref-model"), seed=1)["causal"]
    rows = []
    for p in range(6):
        rows.append(
            {
                "prompt_id": f"p{p}",
                "prompt": [{"role": "user", "content": f"Question {p}: tell me about the sea"}],
                "candidates": [
                    {"candidate_id": f"c{p}{j}", "response": f"answer {j} " * (1 + (p + j) % 4),
                     "flags": []}
                    for j in range(3)
                ],
            }
        )  # fmt: skip
    pools = pa.Table.from_pylist(rows, schema=pool_schema())
    pools = LogProb(str(tiny_models["causal"]), name="pi")(pools).table
    return LogProb(str(ref), name="ref")(pools).table


def test_entropy_keeps_the_prompts_the_policy_is_least_sure_about(scored):
    lp = [[c["scores"]["pi.sum"] for c in cands] for cands in scored["candidates"].to_pylist()]
    want = np.array([-np.mean(x) for x in lp])
    assert prompt_entropy(scored, "pi") == pytest.approx(want)
    out = ActivePrompts(policy="pi", top_k=2)(scored)
    top = sorted(np.argsort(-want)[:2].tolist())
    assert out.table["prompt_id"].to_pylist() == [f"p{i}" for i in top]
    assert out.table["acquisition"].to_pylist() == pytest.approx(want[top].tolist())
    assert out.rejects.num_rows == 4
    assert all(
        r.startswith("active: predictive entropy ") for r in out.rejects["reason"].to_pylist()
    )


def test_certainty_keeps_a_share_fitted_over_the_dataset(scored, tmp_path):
    from prefdata.construct import Pairs
    from prefdata.execute import LocalExecutor

    pairs = Pairs("all-pairs", score="pi.sum")(scored).table
    c = pairs["chosen_scores"].to_pylist()
    r = pairs["rejected_scores"].to_pylist()
    implicit = lambda x: 0.1 * (x["pi.sum"] - x["ref.sum"])  # noqa: E731
    diff = np.array([implicit(a) - implicit(b) for a, b in zip(c, r, strict=True)])
    want = np.abs(sigmoid(diff) - 0.5)
    assert pair_certainty(pairs, "pi", "ref", 0.1) == pytest.approx(want)
    stage = ActivePairs(policy="pi", reference="ref", beta=0.1, keep=0.25)
    result = LocalExecutor(tmp_path / "w", shard_rows=2).run([stage], pairs)  # fitted first
    kept = result.read()
    cut = np.quantile(want, 0.75)
    assert kept.num_rows == int((want >= cut).sum()) and kept.num_rows < pairs.num_rows
    assert min(kept["acquisition"].to_pylist()) >= cut - 1e-12
    assert result.funnel.entries[0].rows_rejected == pairs.num_rows - kept.num_rows
