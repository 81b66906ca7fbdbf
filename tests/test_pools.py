"""Fluent chaining on Pools: read, chain stages, run checkpointed; rejects and funnel carried."""

from __future__ import annotations

from importlib import resources

from prefdata import Pools
from prefdata.sql import Sql

SAMPLE = resources.files("prefdata").joinpath("data", "sample_long.jsonl")


def test_read_chain_and_run_checkpointed(tmp_path):
    pools = Pools.read(
        str(SAMPLE), "long", score_cols=("rm_quality", "rm_helpful"), generator_col="generator"
    )
    assert len(pools) == 12 and pools.rejects.num_rows == 0
    kept = pools.sql("SELECT * FROM pools WHERE len(candidates) >= 4").sql(
        "SELECT *, len(candidates) AS n FROM pools"
    )
    assert len(kept) == 5
    assert kept.table["n"].to_pylist() == [4] * 5
    funnel = kept.funnel.to_list()
    assert [e["stage"] for e in funnel] == ["read", "layout:long", "Sql", "Sql#2"]
    assert funnel[2] == {"stage": "Sql", "rows_in": 12, "rows_out": 5, "rows_rejected": 7}
    assert funnel[3] == {"stage": "Sql#2", "rows_in": 5, "rows_out": 5, "rows_rejected": 0}
    assert kept.rejects.num_rows == 7

    stage = Sql("SELECT * FROM pools WHERE len(candidates) >= 4")
    ran = pools.run([stage], tmp_path / "work", shard_rows=5)
    assert ran.table.equals(pools.pipe(stage).table)
    assert ran.rejects.num_rows == 7
    assert "Pools(5 pools, 7 rejects)" == repr(ran)


def test_pipe_shows_a_bar_over_its_stages_when_asked(capsys):
    from prefdata import Pools
    from prefdata.data import sample_path
    from prefdata.filter import DropFlagged, FlagDegenerate

    pools = Pools.read(sample_path(), "long", generator_col="generator", score_cols=("rm_quality",))
    pools.pipe(FlagDegenerate(), DropFlagged(), progress=True)
    err = capsys.readouterr().err
    assert "stages: 100%" in err and "2/2" in err and "DropFlagged" in err
    pools.pipe(FlagDegenerate())  # not a terminal: no bar
    assert "stages" not in capsys.readouterr().err
