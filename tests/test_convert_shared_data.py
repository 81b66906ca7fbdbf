"""The real shared data through the readers and layouts."""

from __future__ import annotations

import gzip
import json
import re

import polars as pl
import pyarrow.parquet as pq
import pytest

from prefdata import ids
from prefdata.io.parquet import write_parquet
from prefdata.io.readers import read_pools
from prefdata.validate import validate

pytestmark = pytest.mark.shared_data

HH_ROWS = 2312


@pytest.fixture(scope="module")
def alpaca(shared_data):
    path = shared_data / "alpaca_eval_pool.parquet"
    result = read_pools(
        path,
        "long",
        prompt_col="instruction",
        response_col="output",
        generator_col="generator",
        score_cols=["judge_pref"],
    )
    return path, result


@pytest.fixture(scope="module")
def hh(shared_data):
    path = shared_data / "hh_rlhf_harmless_test.jsonl.gz"
    rows = [json.loads(line) for line in gzip.open(path, "rt", encoding="utf-8")]
    return rows, read_pools(path, "hh")


def test_alpaca_long_layout_gives_805_pools(alpaca):
    path, result = alpaca
    raw = pq.read_table(path)
    assert result.table.num_rows == 805
    assert result.rejects.num_rows == 0
    assert [e.rows_in for e in result.funnel.entries] == [raw.num_rows, raw.num_rows]
    assert result.funnel.entries[1].rows_out == raw.num_rows
    assert sum(len(c) for c in result.table["candidates"].to_pylist()) == raw.num_rows
    assert validate(result.table) == []
    assert set(result.table["source"].to_pylist()) == {"alpaca_eval_pool.parquet"}


def test_alpaca_keeps_every_judge_pref_exactly(alpaca):
    path, result = alpaca
    raw = pl.read_parquet(path)
    got = (
        pl.from_arrow(result.table.select(["prompt", "candidates"]))
        .with_columns(pl.col("prompt").list.first().struct.field("content").alias("instruction"))
        .explode("candidates")
        .unnest("candidates")
        .unnest("scores")
        .select(
            "instruction", "generator", "response", "judge_pref", "candidate_id", "sample_index"
        )
    )
    joined = raw.join(got, on=["instruction", "generator"], how="full", nulls_equal=True)
    assert joined.height == raw.height  # one candidate per (instruction, generator) row
    assert joined["response"].to_list() == joined["output"].to_list()
    assert joined["judge_pref"].to_list() == joined["judge_pref_right"].to_list()  # nulls too
    assert joined["judge_pref"].null_count() == 805
    assert (joined["sample_index"] == 0).all()  # one output per generator and prompt
    # ids are the documented digests
    row = got.row(0, named=True)
    pid = ids.prompt_id([{"role": "user", "content": row["instruction"]}])
    assert result.table["prompt_id"][0].as_py() == pid
    assert row["candidate_id"] == ids.candidate_id(pid, row["generator"], 0, row["response"])


def test_alpaca_pools_round_trip_through_parquet_and_the_pool_layout(alpaca, tmp_path):
    _, result = alpaca
    path = write_parquet(result.table, tmp_path / "pools.parquet")
    again = read_pools(path, "pool")
    assert again.rejects.num_rows == 0
    assert again.table.equals(result.table)


def test_hh_pools_and_rejects_add_up(hh):
    rows, result = hh
    read, layout = result.funnel.entries
    assert read.rows_in == HH_ROWS and read.rows_rejected == 0
    assert layout.rows_out + layout.rows_rejected == HH_ROWS
    assert result.rejects.num_rows == layout.rows_rejected
    n_cands = sum(len(c) for c in result.table["candidates"].to_pylist())
    assert n_cands == 2 * layout.rows_out  # each accepted row gives chosen + rejected
    assert validate(result.table) == []
    # Rejects carry reasons, fields and the original row.
    for r in result.rejects.to_pylist():
        assert r["stage"] == "layout:hh" and r["reason"] and r["field"] in ("chosen", "rejected")
        assert json.loads(r["record"]) == rows[r["row"]]
    assert all(
        re.search(r"turns not alternating|differ before|not an Assistant|empty", r)
        for r in result.rejects["reason"].to_pylist()
    )


def test_hh_prompts_end_with_user_and_preferences_kept(hh):
    _, result = hh
    for prompt in result.table["prompt"].to_pylist():
        assert prompt[-1]["role"] == "user"
        assert [m["role"] for m in prompt] == ["user", "assistant"] * (len(prompt) // 2) + ["user"]
    for cands in result.table["candidates"].to_pylist():
        assert [c["scores"]["preference"] for c in cands] == [1.0, 0.0] * (len(cands) // 2)


def _covers(text: str, messages: list[dict]) -> bool:
    """``text`` is exactly the messages' markers and contents in order, with only whitespace
    between them: the split neither lost nor invented text."""
    pos = 0
    for m in messages:
        marker = "Human:" if m["role"] == "user" else "Assistant:"
        j = text.find(marker, pos)
        if j < 0 or text[pos:j].strip():
            return False
        pos = j + len(marker)
        k = text.find(m["content"], pos)
        if k < 0 or text[pos:k].strip():
            return False
        pos = k + len(m["content"])
    return not text[pos:].strip()


def test_hh_splits_lose_and_invent_nothing(hh):
    rows, result = hh
    rejected = set(result.rejects["row"].to_pylist())
    pools = list(
        zip(result.table["prompt"].to_pylist(), result.table["candidates"].to_pylist(), strict=True)
    )
    # Pools follow the first appearance of each prompt; the prompt text (everything before
    # the last assistant marker) identifies it without using the parser under test.
    pool_of, uses = {}, {}
    for i, row in enumerate(rows):
        if i in rejected:
            continue
        key = row["chosen"][: row["chosen"].rfind("\n\nAssistant:")]
        pool_of.setdefault(key, len(pool_of))
        k = uses.get(key, 0)
        uses[key] = k + 1
        prompt, cands = pools[pool_of[key]]
        chosen, rej = cands[2 * k], cands[2 * k + 1]
        assert _covers(
            row["chosen"], prompt + [{"role": "assistant", "content": chosen["response"]}]
        ), i
        assert _covers(
            row["rejected"], prompt + [{"role": "assistant", "content": rej["response"]}]
        ), i
    assert len(pool_of) == result.table.num_rows
