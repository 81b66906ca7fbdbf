"""Ranking candidates with a pairwise judge on the real alpaca_eval pool: comparisons used
against ranking accuracy, for PairS (merge sort), a knockout tournament and round-robin.

Data: ``../shared/data/alpaca_eval_pool.parquet`` (805 prompts, up to 20 responses each:
19 models and the judge's reference), read in the long layout. The judge is an oracle
that answers the real pairwise prompt by the GPT-4-turbo judge preference recorded for each
response (``judge_pref``; the higher wins), optionally turning a share of its answers
around (``--flip``, fixed per request seed): it stands in for an LLM judge, which cannot
run here, so the numbers isolate what each search does with a judge of known quality.

Reported per method: comparisons per pool (each asked in both orders: twice the judge
calls), pairwise ranking accuracy against the full ``judge_pref`` order (share of
candidate pairs placed in the right order), and how often the top-ranked candidate is the
true best.

    .venv/bin/python benchmarks/bench_rank.py                  # 100 prompts, flips 0 and 0.15
    .venv/bin/python benchmarks/bench_rank.py --prompts 805 --flip 0 0.1 0.2
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from prefdata.generate.base import GenerationConfig
from prefdata.io.readers import read_pools
from prefdata.score import RankPairwise
from prefdata.sql import Sql
from prefdata.testing import OracleJudge

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PREFDATA_SHARED_DATA", ROOT.parent / "shared" / "data"))


def judged_alpaca_pools(prog: str, prompts: int | None = None, reference: bool = False):
    """The alpaca_eval pool as pools scored by ``judge_pref``, the judge's own reference
    answers (which carry no preference) left out, or kept as a ``reference`` column
    (``reference=True``); None, with a message, when the shared data is absent."""
    path = SHARED / "alpaca_eval_pool.parquet"
    if not path.exists():
        print(f"{prog}: error: {path} not found (set PREFDATA_SHARED_DATA)", file=sys.stderr)
        return None
    pools = read_pools(
        path, "long", prompt_col="instruction", response_col="output",
        generator_col="generator", score_cols=["judge_pref"],
    ).table  # fmt: skip
    if prompts is not None:
        pools = pools.slice(0, prompts)
    judged = "list_filter(candidates, lambda c: c.scores.judge_pref IS NOT NULL) AS candidates"
    ref = (
        ", list_filter(candidates, lambda c: c.scores.judge_pref IS NULL)[1].response AS reference"
        if reference
        else ""
    )
    return Sql(f"SELECT * REPLACE ({judged}){ref} FROM pools")(pools).table


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prompts", type=int, default=100)
    p.add_argument("--flip", type=float, nargs="+", default=[0.0, 0.15])
    args = p.parse_args()
    pools = judged_alpaca_pools("bench_rank", args.prompts)
    if pools is None:
        return 2
    cands = pools["candidates"].to_pylist()
    utility = {c["response"]: c["scores"]["judge_pref"] for cs in cands for c in cs}
    print(
        f"{pools.num_rows} prompts, {sum(len(c) for c in cands)} responses "
        f"({np.mean([len(c) for c in cands]):.1f} per prompt)"
    )
    print("| judge flips | method | comparisons per pool | ranking accuracy | best found | s |")
    print("|---:|---|---:|---:|---:|---:|")
    for flip in args.flip:
        for method in ("pairs", "knockout", "round-robin"):
            judge = OracleJudge(utility, flip)
            stage = RankPairwise(backend=judge, method=method, generation=GenerationConfig())
            t = time.perf_counter()
            out = stage(pools).table
            seconds = time.perf_counter() - t
            acc, best, used = [], [], []
            for cs in out["candidates"].to_pylist():
                u = np.array([utility[c["response"]] for c in cs])
                rank = np.array([c["scores"]["rank.rank"] for c in cs])
                used.append(sum(c["scores"]["rank.comparisons"] for c in cs) / 2)
                i, j = np.triu_indices(len(u), 1)
                decided = u[i] != u[j]
                if method != "knockout":
                    acc.append(np.mean((rank[i] < rank[j])[decided] == (u[i] > u[j])[decided]))
                best.append(u[rank == 0].max() == u.max())
            accuracy = f"{np.mean(acc):.3f}" if acc else "(winner only)"
            print(
                f"| {flip} | {method} | {np.mean(used):.1f} | {accuracy} | "
                f"{np.mean(best):.3f} | {seconds:.1f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
