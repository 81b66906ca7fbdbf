"""Ranking with a pairwise judge: PairS (merge sort), knockout and round-robin.

The judge here is a deterministic stand-in at the model boundary
(``prefdata.testing.OracleJudge``): a ChatBackend that reads the two responses out of the
real pairwise prompt and prefers the one with the higher hidden utility (optionally
flipping a share of its verdicts, fixed by the request's seed).
That is the test the issue asks for: with a judge that follows a hidden order the ranking
must come back exactly, in at most ``n ceil(log2 n)`` comparisons (PairS) and ``n - 1``
(knockout).
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from prefdata.construct import Pairs
from prefdata.schema import pool_schema
from prefdata.score import RankPairwise
from prefdata.score.judge import GenerationConfig
from prefdata.testing import OracleJudge


def pools(sizes: list[int], seed: int = 0) -> tuple[pa.Table, dict[str, float]]:
    rng = np.random.default_rng(seed)
    rows, utility = [], {}
    for p, n in enumerate(sizes):
        cands = []
        for j in range(n):
            text = f"answer {p}-{j}"
            utility[text] = float(rng.normal())
            cands.append({"candidate_id": f"c{p}-{j}", "response": text, "flags": []})
        rows.append(
            {
                "prompt_id": f"p{p}",
                "prompt": [{"role": "user", "content": f"Q{p}"}],
                "candidates": cands,
            }  # fmt: skip
        )
    return pa.Table.from_pylist(rows, schema=pool_schema()), utility


def ranked(table: pa.Table, method: str, judge, name: str = "rank") -> pa.Table:
    stage = RankPairwise(backend=judge, method=method, name=name, generation=GenerationConfig())
    return stage(table).table


def per_pool(out: pa.Table, field: str) -> list[list[float]]:
    return [[c["scores"][field] for c in cands] for cands in out["candidates"].to_pylist()]


SIZES = [1, 2, 3, 5, 8, 12, 16]


def true_ranks(table: pa.Table, utility: dict[str, float]) -> list[list[int]]:
    out = []
    for cands in table["candidates"].to_pylist():
        u = [utility[c["response"]] for c in cands]
        order = sorted(range(len(u)), key=lambda k: -u[k])
        ranks = [0] * len(u)
        for pos, k in enumerate(order):
            ranks[k] = pos
        out.append(ranks)
    return out


@pytest.mark.parametrize("method", ["pairs", "round-robin"])
def test_a_judge_that_follows_a_hidden_order_gives_it_back_exactly(method):
    table, utility = pools(SIZES)
    judge = OracleJudge(utility)
    out = ranked(table, method, judge)
    assert per_pool(out, "rank.rank") == true_ranks(table, utility)
    comparisons = [sum(x) / 2 for x in per_pool(out, "rank.comparisons")]
    for n, used in zip(SIZES, comparisons, strict=True):
        bound = n * math.ceil(math.log2(n)) if method == "pairs" and n > 1 else n * (n - 1) / 2
        assert used <= bound if method == "pairs" else used == bound, (n, used)
    assert judge.calls == 2 * sum(comparisons)  # both orders of every comparison
    scores = per_pool(out, "rank")
    assert all(max(s) == 1.0 and (len(s) == 1 or min(s) == 0.0) for s in scores)
    assert sum(sum(x) for x in per_pool(out, "rank.uncertain")) == 0


def test_knockout_finds_the_best_in_n_minus_one_comparisons():
    table, utility = pools(SIZES)
    out = ranked(table, "knockout", OracleJudge(utility))
    best = [r.index(0) for r in true_ranks(table, utility)]
    got = [s.index(1.0) for s in per_pool(out, "rank")]
    assert got == best
    comparisons = [sum(x) / 2 for x in per_pool(out, "rank.comparisons")]
    assert comparisons == [n - 1 for n in SIZES]
    # the runners-up left in the last round: rank 1; the first round's losers share one rank
    ranks = per_pool(out, "rank.rank")[-1]  # 16 candidates: 4 rounds
    assert sorted(ranks) == [0] + [1] + [2] * 2 + [3] * 4 + [4] * 8


def test_ranks_are_a_score_every_strategy_reads():
    table, utility = pools([6, 6])
    out = ranked(table, "pairs", OracleJudge(utility))
    pairs = Pairs("best-worst", score="rank")(out).table
    for row, cands in zip(pairs.to_pylist(), table["candidates"].to_pylist(), strict=True):
        u = {c["response"]: utility[c["response"]] for c in cands}
        assert row["chosen"] == max(u, key=u.get) and row["rejected"] == min(u, key=u.get)


def test_a_noisy_judge_buys_accuracy_with_comparisons():
    """A judge that turns 15% of its answers around: round-robin (all pairs) orders the
    pools best, PairS nearly as well with far fewer comparisons, knockout only picks a
    winner (right most of the time)."""
    table, utility = pools([10] * 40, seed=3)
    truth = true_ranks(table, utility)

    def agreement(ranks) -> float:
        hits = total = 0
        for got, want in zip(ranks, truth, strict=True):
            for i in range(len(got)):
                for j in range(i + 1, len(got)):
                    total += 1
                    hits += (got[i] < got[j]) == (want[i] < want[j])
        return hits / total

    results = {}
    for method in ("round-robin", "pairs", "knockout"):
        out = ranked(table, method, OracleJudge(utility, flip=0.15))
        used = sum(sum(x) for x in per_pool(out, "rank.comparisons")) / 2
        top = np.mean([r.index(0.0) == t.index(0) for r, t in
                       zip(per_pool(out, "rank.rank"), truth, strict=True)])  # fmt: skip
        results[method] = (agreement(per_pool(out, "rank.rank")), used, top)
    rr, ps, ko = results["round-robin"], results["pairs"], results["knockout"]
    assert rr[1] == 40 * 45 and ps[1] <= 40 * 10 * 4 and ko[1] == 40 * 9
    assert rr[0] > 0.85 and ps[0] > 0.75 and ps[1] < rr[1] / 1.5
    assert ko[2] > 0.5 and rr[2] >= ko[2] - 0.1


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="unknown ranking method"):
        RankPairwise(backend=OracleJudge({}), method="elo")
    with pytest.raises(ValueError, match="takes no reference"):
        RankPairwise(backend=OracleJudge({}), reference="gpt-4")
    assert RankPairwise(backend=OracleJudge({})).score_fields() == (
        "rank",
        "rank.rank",
        "rank.comparisons",
        "rank.uncertain",
    )
