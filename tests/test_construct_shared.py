"""Every pair strategy, lists and unpaired examples on the real alpaca_eval pool.

The pools are built here from the Parquet file with polars (one pool per instruction, one
candidate per generator, ``judge_pref`` as the score, whitespace-only outputs flagged
``empty``); the official readers live in prefdata.io.
"""

from __future__ import annotations

from collections import Counter

import polars as pl
import pyarrow as pa
import pytest

from prefdata.construct import STRATEGIES, Lists, Pairs, Unpaired, rrm, unpair
from prefdata.ids import candidate_id, prompt_id
from prefdata.schema import LIST_SCHEMA, PAIR_SCHEMA, UNPAIRED_SCHEMA, pool_schema

pytestmark = pytest.mark.shared_data

CONFIGS = {
    "best-worst": {},
    "best-random": {},
    "sweet-spot": {},
    "all-pairs": {"min_margin": 0.5, "max_pairs_per_prompt": 8},
    "curriculum": {"max_pairs_per_prompt": 4},
    "by-generator": {
        "score": None,
        "chosen_generators": "gpt4_1106_preview",
        "rejected_generators": "alpaca-7b",
    },
    # judge_pref >= 0.5: the judge prefers the response to the GPT-4 reference ("passes")
    "by-correctness": {"threshold": 0.5, "max_pairs_per_prompt": 4},
}


@pytest.fixture(scope="module")
def pools(shared_data) -> pa.Table:
    df = pl.read_parquet(shared_data / "alpaca_eval_pool.parquet")
    df = df.sort("prompt_id", "generator").with_columns(
        pid=pl.col("instruction").map_elements(
            lambda s: prompt_id([{"role": "user", "content": s}]), return_dtype=pl.String
        ),
    )
    df = df.with_columns(
        cid=pl.struct("pid", "generator", "output").map_elements(
            lambda r: candidate_id(r["pid"], r["generator"], 0, r["output"]),
            return_dtype=pl.String,
        ),
        flags=pl.when(pl.col("output").str.strip_chars() == "")
        .then(pl.lit(["empty"]))
        .otherwise(pl.lit([], dtype=pl.List(pl.String))),
    )
    grouped = df.group_by("pid", maintain_order=True).agg(
        pl.col("instruction").first(),
        pl.col("dataset").first(),
        pl.struct(
            candidate_id="cid",
            response="output",
            generator="generator",
            sample_index=pl.lit(0, pl.Int32),
            seed=pl.lit(None, pl.Int64),
            finish_reason=pl.lit(None, pl.String),
            num_tokens=pl.lit(None, pl.Int32),
            scores=pl.struct(judge_pref="judge_pref"),
            flags="flags",
        ).alias("candidates"),
    )
    grouped = grouped.select(
        prompt_id="pid",
        prompt=pl.concat_list(pl.struct(role=pl.lit("user"), content="instruction")),
        source=pl.lit("alpaca_eval:") + pl.col("dataset"),
        metadata=pl.lit(None, pl.String),
        candidates="candidates",
    )
    return grouped.to_arrow().cast(pool_schema(["judge_pref"]))


def test_every_strategy_on_alpaca_eval(pools, capsys):
    assert pools.num_rows == 805
    counts = {}
    for strategy in STRATEGIES:
        kw = {"score": "judge_pref", **CONFIGS[strategy]}
        stage = Pairs(strategy, **kw)
        out = stage(pools)
        t = out.table
        assert pa.schema(list(t.schema)[: len(PAIR_SCHEMA)]) == PAIR_SCHEMA
        yielded = len(set(t["prompt_id"].to_pylist()))
        assert yielded + out.rejects.num_rows == 805  # the pool funnel
        assert not any(
            r["chosen"] == r["rejected"] for r in t.select(["chosen", "rejected"]).to_pylist()
        )
        assert "gpt4_1106_preview" not in set(t["rejected_generator"].to_pylist()) or (
            strategy == "by-generator"
        )
        if strategy != "by-generator":
            m = t["margin"].to_numpy()
            assert (m > 0).all()
            # judge_pref of the empty outputs never enters a pair
            assert not any(x.strip() == "" for x in t["rejected"].to_pylist())
        reasons = dict(Counter(out.rejects["reason"].to_pylist()))
        counts[strategy] = (t.num_rows, yielded, out.rejects.num_rows, reasons)
        # the same pairs from two halves
        halves = [stage(pools.slice(0, 400)).table, stage(pools.slice(400)).table]
        assert pa.concat_tables(halves).equals(t)
    with capsys.disabled():
        print("\nalpaca_eval pairs per strategy (pairs, pools with pairs, pools rejected):")
        for s, (n, y, r, why) in counts.items():
            print(f"  {s:15s} {n:6d} {y:4d} {r:4d} {why}")
    assert counts["best-worst"][0] == counts["best-worst"][1]  # one pair per pool
    assert counts["curriculum"][0] <= 4 * counts["curriculum"][1]
    # both generators answered every prompt; a few pools hold the same text from both
    n, _, rejected, why = counts["by-generator"]
    assert n + rejected == 805 and set(why) <= {"only identical responses"}


def test_lists_unpaired_and_rrm_on_alpaca_eval(pools, capsys):
    lst = Lists(score="judge_pref", top_k=8)(pools)
    assert lst.table.schema == LIST_SCHEMA
    sizes = [len(r) for r in lst.table["responses"].to_pylist()]
    assert max(sizes) == 8 and lst.table.num_rows + lst.rejects.num_rows == 805
    kto = Unpaired(score="judge_pref", threshold=0.5)(pools)
    assert kto.table.schema == UNPAIRED_SCHEMA
    labels = kto.table["label"].to_pylist()
    pairs = Pairs("best-worst", score="judge_pref")(pools).table
    unp = unpair(pairs)
    aug = rrm(pairs.slice(0, 100), seed=0)
    assert aug.table.num_rows == 100 * 15
    with capsys.disabled():
        print(
            f"\nlists {lst.table.num_rows} (rejected {lst.rejects.num_rows}); "
            f"unpaired {kto.table.num_rows} ({sum(labels)} desirable); "
            f"unpair(best-worst) {unp.num_rows}; rrm(100 pairs) {aug.table.num_rows}"
        )
