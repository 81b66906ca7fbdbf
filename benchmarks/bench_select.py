"""What the selection stages keep on the real alpaca_eval pool: AIR-style prompt and pair
selection, and active selection (predictive entropy of prompts, certainty of pairs).

Data: ``../shared/data/alpaca_eval_pool.parquet`` (805 prompts, the 19 models' responses;
the judge's reference answers carry no preference and are left out), the GPT-4-turbo
judge preference ``judge_pref`` as the score. Active selection needs log-probabilities:
here two tiny random-weight Llama models built in-process (``prefdata.testing``) play the
policy and the reference, so the numbers show the mechanics on real texts, not what a
trained policy would pick.

    .venv/bin/python benchmarks/bench_select.py                 # 100 prompts for active
    .venv/bin/python benchmarks/bench_select.py --active-prompts 805
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
from bench_rank import judged_alpaca_pools  # noqa: E402 - the benchmarks' folder is on sys.path

from prefdata.construct import Pairs
from prefdata.filter import ActivePairs, ActivePrompts, AirPairs, StablePrompts
from prefdata.fit import fit_stage

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PREFDATA_SHARED_DATA", ROOT.parent / "shared" / "data"))


def describe(name: str, pools_in: int, kept) -> str:
    """One table row: what a selection kept."""
    if "candidates" in kept.column_names:
        scores = [c["scores"]["judge_pref"] for p in kept["candidates"].to_pylist() for c in p]
        lens = [len(c["response"]) for p in kept["candidates"].to_pylist() for c in p]
    else:
        scores = pc.struct_field(kept["chosen_scores"], "judge_pref").to_pylist()
        lens = pc.utf8_length(kept["chosen"]).to_pylist()
    scores = [s for s in scores if s is not None]
    return (
        f"| {name} | {pools_in} | {kept.num_rows} | "
        f"{np.mean(scores) if scores else float('nan'):.3f} | {np.median(lens):.0f} |"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--active-prompts", type=int, default=100)
    args = p.parse_args()
    pools = judged_alpaca_pools("bench_select")
    if pools is None:
        return 2
    rows = ["| selection | in | kept | mean judge_pref of kept (chosen for pairs) | median "
            "length (chars) |", "|---|---:|---:|---:|---:|"]  # fmt: skip
    rows.append(describe("(all prompts)", pools.num_rows, pools))
    stable = fit_stage(StablePrompts(score="judge_pref", keep=0.5), pools)
    rows.append(describe("StablePrompts keep=0.5", pools.num_rows, stable(pools).table))
    varied = fit_stage(StablePrompts(score="judge_pref", prefer="varied", keep=0.5), pools)
    rows.append(describe("StablePrompts prefer=varied keep=0.5", pools.num_rows,
                         varied(pools).table))  # fmt: skip
    pairs = Pairs("best-worst", score="judge_pref")(pools).table
    rows.append(describe("(best-worst pairs)", pools.num_rows, pairs))
    air = AirPairs(min_margin=0.3, max_margin=0.9, min_chosen=0.5)(pairs).table
    rows.append(describe("AirPairs margin 0.3-0.9, chosen >= 0.5", pairs.num_rows, air))

    from prefdata.score import LogProb
    from prefdata.testing import build_tiny_models

    t = time.perf_counter()
    sub = pools.slice(0, args.active_prompts)
    with tempfile.TemporaryDirectory() as tmp:
        policy = build_tiny_models(Path(tmp) / "a", seed=0)["causal"]
        ref = build_tiny_models(Path(tmp) / "b", seed=1)["causal"]
        sub = LogProb(str(policy), name="pi", max_length=512)(sub).table
        sub = LogProb(str(ref), name="ref", max_length=512)(sub).table
    seconds = time.perf_counter() - t
    entropy = fit_stage(ActivePrompts(policy="pi", keep=0.25), sub)
    rows.append(describe(f"ActivePrompts keep=0.25 (first {sub.num_rows})", sub.num_rows,
                         entropy(sub).table))  # fmt: skip
    sub_pairs = Pairs("best-worst", score="judge_pref")(sub).table
    certain = fit_stage(ActivePairs(policy="pi", reference="ref", beta=0.1, keep=0.25), sub_pairs)
    rows.append(describe("ActivePairs keep=0.25", sub_pairs.num_rows, certain(sub_pairs).table))
    print("\n".join(rows))
    print(f"\n(log-probabilities of {sub.num_rows} prompts' responses under two tiny models: "
          f"{seconds:.0f} s)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
