"""AIR-style selection: prompts by the spread of their scores across generators, pairs by
a moderate margin and a high chosen score; on hand-made pools and the real alpaca_eval
pool (19 generators per prompt, the GPT-4-turbo judge preference as the score)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from prefdata.construct import Pairs
from prefdata.execute import Ingest, LocalExecutor
from prefdata.filter import AirPairs, StablePrompts
from prefdata.filter.air import generator_spread
from prefdata.fit import fit_stage
from prefdata.schema import pool_schema


def pool(pid: str, scores: list[tuple[str, float | None]]) -> dict:
    return {
        "prompt_id": pid,
        "prompt": [{"role": "user", "content": "q"}],
        "candidates": [
            {"candidate_id": f"{pid}{k}", "response": f"{g}{k}", "generator": g,
             "scores": {"rm": s}}
            for k, (g, s) in enumerate(scores)
        ],
    }  # fmt: skip


def table() -> pa.Table:
    rows = [
        pool("calm", [("m1", 1.0), ("m2", 1.1), ("m3", 0.9)]),
        pool("wild", [("m1", -3.0), ("m2", 3.0), ("m3", 0.0)]),
        pool("mid", [("m1", 0.0), ("m1", 2.0), ("m2", 2.0)]),  # m1's mean is 1.0
        pool("lonely", [("m1", 1.0), ("m1", 2.0), ("m2", None)]),  # one generator scored
    ]
    return pa.Table.from_pylist(rows, schema=pool_schema(["rm"]))


def test_spread_is_across_generator_means():
    spread, gens = generator_spread(table(), "rm")
    assert spread[0] == pytest.approx(np.std([1.0, 1.1, 0.9]))
    assert spread[2] == pytest.approx(0.5) and gens.tolist() == [3, 3, 2, 1]


@pytest.mark.parametrize("prefer,kept", [("stable", ["calm", "mid"]), ("varied", ["wild"])])
def test_an_absolute_cut_off_either_way(prefer, kept):
    cut = 0.5 if prefer == "stable" else 1.0
    out = StablePrompts(score="rm", prefer=prefer, max_spread=cut)(table())
    assert out.table["prompt_id"].to_pylist() == kept
    rows, why = out.rejects["row"].to_pylist(), out.rejects["reason"].to_pylist()
    reasons = dict(zip(rows, why, strict=True))
    assert reasons[3] == "air: 1 generator(s) scored, need 2"
    assert out.table.num_rows + out.rejects.num_rows == 4


def test_a_share_is_a_dataset_quantile_fitted_first():
    stage = fit_stage(StablePrompts(score="rm", keep=0.34), [table().slice(0, 2), table().slice(2)])
    assert stage.fit() is None and stage.fitted_cut == pytest.approx(np.quantile(
        [np.std([1.0, 1.1, 0.9]), np.std([-3.0, 3.0, 0.0]), 0.5], 0.34))  # fmt: skip
    assert stage(table()).table["prompt_id"].to_pylist() == ["calm"]


def test_pairs_with_a_moderate_margin_and_a_high_chosen_score():
    pairs = pa.table(
        {
            "prompt_id": ["a", "b", "c", "d"],
            "margin": [1.0, 0.1, 4.0, 1.0],
            "chosen_score": [1.5, 1.5, 3.0, 0.2],
        }
    )
    out = AirPairs(min_margin=0.5, max_margin=2.5, min_chosen=0.5)(pairs)
    assert out.table["prompt_id"].to_pylist() == ["a"]
    assert [(r["field"], r["reason"]) for r in out.rejects.to_pylist()] == [
        ("margin", "air: margin 0.1 outside [0.5, 2.5]"),
        ("margin", "air: margin 4 outside [0.5, 2.5]"),
        ("chosen_score", "air: chosen score 0.2 < 0.5"),
    ]


@pytest.mark.shared_data
def test_on_the_alpaca_eval_pool_through_the_executor(shared_data, tmp_path):
    """The executor fits the quantile over every shard: half the prompts are kept, those
    with the least spread of judge preference across the 19 generators."""
    source = Ingest(
        shared_data / "alpaca_eval_pool.parquet", "long", prompt_col="instruction",
        response_col="output", generator_col="generator", score_cols=["judge_pref"],
    )  # fmt: skip
    stages = [StablePrompts(score="judge_pref", keep=0.5), Pairs("best-worst", score="judge_pref"),
              AirPairs(min_margin=0.3, max_margin=1.0, min_chosen=0.5)]  # fmt: skip
    result = LocalExecutor(tmp_path / "w", shard_rows=200).run(stages, source)
    funnel = {e.stage: e for e in result.funnel.entries}
    air = funnel["StablePrompts"]
    assert air.rows_in == 805 and abs(air.rows_out - 402) <= 2
    rejects = [r for r in result.rejects().to_pylist() if r["stage"] == "StablePrompts"]
    spreads = [float(r["reason"].split()[-3]) for r in rejects]
    cut = float(rejects[0]["reason"].split()[-1])
    assert min(spreads) >= cut and len(rejects) == air.rows_rejected  # (4 digits shown)
    kept = result.read()
    assert kept.num_rows == funnel["AirPairs"].rows_out > 0
    again = LocalExecutor(tmp_path / "w2", shard_rows=100).run(stages, source)
    assert again.read().equals(kept)  # the same cut-off, to the bit, with other shards
    assert all(0.3 <= m <= 1.0 for m in kept["margin"].to_pylist())
