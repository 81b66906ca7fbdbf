"""The filters on real data: alpaca_eval outputs (805 instructions x 20 generators) with
the GPT-4-turbo judge preference, plus a cheap real second scorer (prompt-word coverage).
Prints the funnel table (flags and drops per reason); ``python
tests/test_filter_real_funnel.py`` prints the same report outside pytest.
"""

from __future__ import annotations

import collections
import gzip
import json
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from prefdata.annotate import Normalise, Strength
from prefdata.arrow import flatten_candidates, rebuild_candidates, struct_with
from prefdata.construct import Pairs
from prefdata.filter import (
    CollapseIdenticalCandidates,
    Decontaminate,
    DedupPrompts,
    DropFlagged,
    FlagDegenerate,
    LengthControl,
    PeerFilter,
    Vote,
    length_bias_report,
)
from prefdata.io.readers import read_pools
from prefdata.pipeline import Funnel, Pipeline, count_rejects_by_reason


def alpaca_pools(path: Path) -> pa.Table:
    """Pools from the long alpaca_eval table through the real reader (the judge preference
    is the probability that the output beats gpt4_1106_preview, whose own rows are
    unscored)."""
    return read_pools(
        path,
        "long",
        prompt_col="instruction",
        response_col="output",
        generator_col="generator",
        score_cols=("judge_pref",),
    ).table


def hh_first_turns(path: Path) -> list[str]:
    """First human turn of each HH-RLHF harmless test transcript (our benchmark set)."""
    out = []
    with gzip.open(path, "rt") as fh:
        for line in fh:
            text = json.loads(line)["chosen"]
            out.append(text.split("\n\nHuman: ", 1)[1].split("\n\nAssistant:", 1)[0].strip())
    return out


def add_coverage(pools: pa.Table) -> pa.Table:
    """A cheap real second scorer, ``coverage``: the share of the prompt's distinct words
    (4+ letters) that the response uses, computed columnar with polars. (An embedding or
    reward-model scorer runs at about 10 texts/s on this shared 2-core box: too slow for
    16k responses in a test.)"""
    flat = flatten_candidates(pools)
    words = r"[a-z]{4,}"
    prompts = pl.Series([p[-1]["content"] for p in pools["prompt"].to_pylist()])
    pw = prompts.str.to_lowercase().str.extract_all(words).list.unique()
    resp = pl.Series(pc.struct_field(flat.values, "response")).str.to_lowercase()
    df = pl.DataFrame(
        {"rw": resp.str.extract_all(words).list.unique(), "pw": pw.gather(flat.parents)}
    )
    cov = df.select(
        pl.when(pl.col("pw").list.len() > 0)
        .then(pl.col("pw").list.set_intersection("rw").list.len() / pl.col("pw").list.len())
        .alias("c")
    )["c"].to_numpy()
    cov = np.asarray(cov, dtype=np.float64)
    scores = struct_with(
        pc.struct_field(flat.values, "scores"), coverage=pa.array(cov, mask=np.isnan(cov))
    )
    return rebuild_candidates(pools, flat, struct_with(flat.values, scores=scores))


def run_funnel(data: Path) -> dict:
    pools = alpaca_pools(data / "alpaca_eval_pool.parquet")
    flag = FlagDegenerate(language_mismatch=True)
    pool_stages = [
        CollapseIdenticalCandidates(),
        flag,
        DropFlagged(),
        DedupPrompts(method="minhash", threshold=0.8),
        Decontaminate(
            texts=tuple(hh_first_turns(data / "hh_rlhf_harmless_test.jsonl.gz")),
            n=8,
            threshold=0.5,
            benchmark_name="hh_harmless_test",
        ),
    ]
    # candidate-level: flags counted after FlagDegenerate, drops after DropFlagged
    cand_res = Pipeline(pool_stages[:3]).run(pools)
    flagged_table = Pipeline(pool_stages[:2]).run(pools).table
    flagged = collections.Counter(
        f for p in flagged_table["candidates"].to_pylist() for c in p for f in c["flags"]
    )
    dropped_cands = collections.Counter(
        d["reason"].split(": of ")[0]
        for ds in cand_res.table["dropped_candidates"].to_pylist()
        for d in ds
    )
    pool_res = Pipeline(pool_stages[3:]).run(cand_res.table)
    pool_res = pool_res._replace(
        funnel=Funnel().merge(cand_res.funnel).merge(pool_res.funnel),
        rejects=pa.concat_tables([cand_res.rejects, pool_res.rejects]),
    )
    kept = pool_res.table
    scored = Normalise(method="zscore")(add_coverage(kept)).table
    pairs = Pairs("best-worst", score="judge_pref")(scored).table
    bias = length_bias_report(pairs)
    pair_stages = [
        Strength(scorers=("judge_pref.z", "coverage.z"), gamma=1.0),
        Vote(scorers=("judge_pref.z", "coverage.z"), k=2, min_margin=0.0),
        PeerFilter(scorer_a="judge_pref.z", scorer_b="coverage.z", tau=0.2),
        LengthControl(scorer="judge_pref.z", min_margin=0.25, max_ratio=3.0),
    ]
    # every pair stage sees pairs with both scorers; unscored pairs go out first
    both = ~(pc.is_null(pc.struct_field(pairs["chosen_scores"], "coverage"))).to_numpy(
        zero_copy_only=False
    )
    pair_res = Pipeline(pair_stages).run(pairs.filter(pa.array(both)))
    funnel = Funnel().merge(pool_res.funnel)
    return {
        "pools": pools,
        "pool_res": pool_res,
        "flagged": flagged,
        "dropped_candidates": dropped_cands,
        "pairs": pairs,
        "pairs_scored": int(both.sum()),
        "pair_res": pair_res,
        "funnel": funnel.merge(pair_res.funnel),
        "length_bias": bias,
    }


def funnel_table(r: dict) -> str:
    lines = ["| stage | what | reason | count |", "|---|---|---|---|"]
    n_cands = sum(len(p) for p in r["pools"]["candidates"].to_pylist())
    lines.append(f"| input | pools / candidates | | {r['pools'].num_rows} / {n_cands} |")
    for f, n in sorted(r["flagged"].items()):
        lines.append(f"| FlagDegenerate | candidates flagged | {f} | {n} |")
    for code, n in sorted(r["dropped_candidates"].items()):
        lines.append(f"| candidate drops | candidates removed | {code} | {n} |")
    codes = collections.Counter()
    for stage, reason, n in count_rejects_by_reason(
        pa.concat_tables([r["pool_res"].rejects, r["pair_res"].rejects])
    ):
        code = reason.split(" (")[0].split(": of ")[0] if ": of " in reason else reason
        code = code.split(" #")[0] if code.startswith("contaminated") else code
        if code.startswith("contaminated"):
            code = "contaminated"
        codes[stage, code] += n
    for (stage, code), n in codes.items():
        lines.append(f"| {stage} | rows rejected | {code} | {n} |")
    for e in r["funnel"].entries:
        lines.append(
            f"| {e.stage} | rows in -> out (rejected) | | "
            f"{e.rows_in} -> {e.rows_out} ({e.rows_rejected}) |"
        )
    return "\n".join(lines)


@pytest.mark.shared_data
@pytest.mark.slow
def test_real_alpaca_eval_funnel(shared_data):
    r = run_funnel(shared_data)
    print("\n" + funnel_table(r))
    print(r["length_bias"])
    # the null-model cheat ("example": one adversarial text for all 805 prompts) is caught
    # twice over; its responses are gone after DropFlagged
    assert r["flagged"]["judge_injection"] >= 805
    assert r["flagged"]["repeated_across_prompts"] == 805
    gens = {c["generator"] for p in r["pool_res"].table["candidates"].to_pylist() for c in p}
    assert "example" not in gens
    # empty outputs exist in the data (gemma-2b-it) and are flagged
    assert r["flagged"]["empty"] >= 20
    for e in r["funnel"].entries:
        assert e.rows_in == e.rows_out + e.rows_rejected
    pool_funnel = r["pool_res"].funnel.entries
    assert r["pool_res"].rejects.num_rows == sum(e.rows_rejected for e in pool_funnel)
    # chosen/rejected come from different generators, and votes are 2 on every kept pair
    kept = r["pair_res"].table
    assert set(kept["votes"].to_pylist()) == {2}
    ids = zip(kept["chosen_id"].to_pylist(), kept["rejected_id"].to_pylist(), strict=True)
    assert all(c != w for c, w in ids)
    # the judge prefers the longer response in most pairs (the length-bias report)
    assert r["length_bias"]["chosen_longer"] > 0.5


if __name__ == "__main__":
    default = Path(__file__).resolve().parents[2] / "shared" / "data"
    data = Path(sys.argv[1]) if len(sys.argv) > 1 else default
    res = run_funnel(data)
    print(funnel_table(res))
    print("pairs built:", res["pairs"].num_rows, "with both scorers:", res["pairs_scored"])
    print("length bias:", json.dumps(res["length_bias"]))
