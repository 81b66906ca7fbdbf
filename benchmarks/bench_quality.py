"""Data quality against a known truth: which construction recipe labels pairs correctly.

Synthetic pools (``prefdata.synthetic.known_truth_pools``, seed 0): P prompts x 8
candidates with a hidden utility; three reward models = the utility plus Gaussian noise of
sd 1.0 (``a``), 1.0 (``b``) and 1.5 (``c``), in three scenarios:

- ``noise``: just that;
- ``length``: ``a`` also likes long answers (+1.0 per sd of response length);
- ``adversarial``: in 20% of the pools one candidate is a judge-gaming answer with a low
  utility (truth - 2) that ``c`` rewards (+4.0).

Every recipe is a list of prefdata stages run on those pools (all scores z-normalised
first), then graded by ``label_quality``: **accuracy** (share of pairs whose chosen has the
higher true utility), **true margin** (mean utility difference of the kept pairs) and
**yield** (prompts that keep a pair). Recipes: best-worst on one scorer (``a``, and ``c``);
best-worst on an ensemble of the three (mean, min = worst case, UWO with lambda 0.5);
best-worst on ``a`` with votes (2 or 3 of 3 scorers agreeing); a strength filter (the
ensemble strength of the pair, mean of the three z-differences, at least 0.5); the
CRM-style peer filter (``b`` and ``c`` keep each other's 80% lowest-loss pairs); and
combinations (ensemble mean with 2-of-3 votes, ensemble mean with the strength filter).

    .venv/bin/python benchmarks/bench_quality.py                 # P = 3,000 (seconds)
    .venv/bin/python benchmarks/bench_quality.py --prompts 20000 --markdown
"""

from __future__ import annotations

import argparse
import time

from prefdata.annotate import Ensemble, Normalise, Strength
from prefdata.construct import Pairs
from prefdata.filter import Vote
from prefdata.filter.peer import PeerFilter
from prefdata.fit import fit_stage
from prefdata.pipeline import Pipeline
from prefdata.sql import Sql
from prefdata.synthetic import NoisyScorer, known_truth_pools, label_quality

Z = ("a.z", "b.z", "c.z")
SCENARIOS = {
    "noise": [NoisyScorer("a", 1.0), NoisyScorer("b", 1.0), NoisyScorer("c", 1.5)],
    "length": [
        NoisyScorer("a", 1.0, length_bias=1.0),
        NoisyScorer("b", 1.0),
        NoisyScorer("c", 1.5),
    ],
    "adversarial": [
        NoisyScorer("a", 1.0),
        NoisyScorer("b", 1.0),
        NoisyScorer("c", 1.5, planted_bonus=4.0),
    ],
}
PLANTED = {"adversarial": 0.2}


def strength_filter(threshold: float = 0.5) -> list:
    return [
        Strength(scorers=Z),
        Sql(f"SELECT * FROM pools WHERE strength_mean >= {threshold}"),
    ]


def recipes() -> dict[str, list]:
    bw = lambda score: Pairs("best-worst", score=score)  # noqa: E731
    return {
        "single a": [bw("a.z")],
        "single c": [bw("c.z")],
        "ensemble mean": [Ensemble(Z, "mean"), bw("ensemble.mean")],
        "ensemble min": [Ensemble(Z, "min"), bw("ensemble.min")],
        "ensemble uwo": [Ensemble(Z, "uwo", lam=0.5), bw("ensemble.uwo")],
        "single a + vote 2/3": [bw("a.z"), Vote(scorers=Z, k=2)],
        "single a + vote 3/3": [bw("a.z"), Vote(scorers=Z, k=3)],
        "single a + strength >= 0.5": [bw("a.z"), *strength_filter()],
        "single a + peer b,c": [bw("a.z"), PeerFilter(scorer_a="b.z", scorer_b="c.z", tau=0.2)],
        "ensemble mean + vote 2/3": [
            Ensemble(Z, "mean"),
            bw("ensemble.mean"),
            Vote(scorers=Z, k=2),
        ],
        "ensemble mean + strength >= 0.5": [
            Ensemble(Z, "mean"),
            bw("ensemble.mean"),
            *strength_filter(),
        ],
    }


def run(pools, stages: list, prompts: int) -> dict:
    table = Normalise()(pools).table  # the dataset z-score over the whole table
    for stage in stages:
        stage = fit_stage(stage, table)  # two-pass stages (the peer filter) fit first
        table = Pipeline([stage]).run(table).table
    return label_quality(table, prompts)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prompts", type=int, default=3000)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--markdown", action="store_true", help="one Markdown table")
    args = p.parse_args()
    rows = []
    for scenario, scorers in SCENARIOS.items():
        pools = known_truth_pools(
            args.prompts, args.k, scorers, planted=PLANTED.get(scenario, 0.0), seed=0
        )
        for name, stages in recipes().items():
            t = time.perf_counter()
            q = run(pools, stages, args.prompts)
            rows.append((scenario, name, q, time.perf_counter() - t))
            if not args.markdown:
                print(
                    f"{scenario:<12} {name:<34} accuracy {q['accuracy']:.3f}  "
                    f"true margin {q['true_margin']:.3f}  yield {q['yield']:.3f}",
                    flush=True,
                )
    print()
    print(f"P = {args.prompts:,} prompts x {args.k} candidates, seed 0")
    print("| scenario | recipe | accuracy | true margin | yield | pairs |")
    print("|---|---|---:|---:|---:|---:|")
    for scenario, name, q, _ in rows:
        print(
            f"| {scenario} | {name} | {q['accuracy']:.3f} | {q['true_margin']:.3f} | "
            f"{q['yield']:.3f} | {q['pairs']:,} |"
        )


if __name__ == "__main__":
    main()
