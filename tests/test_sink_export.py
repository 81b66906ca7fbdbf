"""Streaming the executor's output into an exporter: ``LocalExecutor.run(sink=...)`` and
``ShardedExport`` (one export file per output shard, no second pass over the output)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from pipeline_job import Slow, make_pools

from prefdata.construct import Pairs
from prefdata.execute import LocalExecutor, StageError
from prefdata.io.export import ShardedExport, export
from prefdata.io.shards import read_files
from prefdata.pipeline import Pipeline


def job(fail_on: str | None = None) -> list:
    return [Slow(fail_on=fail_on), Pairs("best-worst", score="rm")]


def tree(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_sink_gets_every_output_shard_in_order_fresh_or_resumed(tmp_path):
    table, seen = make_pools(53), []
    result = LocalExecutor(tmp_path / "w", shard_rows=7).run(
        job(), table, sink=lambda shard, t: seen.append((shard, t))
    )
    assert [s for s, _ in seen] == list(range(8))
    for (_, t), path in zip(seen, result.output_paths, strict=True):
        assert t.equals(read_files(path).cast(t.schema))
    # a rerun with nothing to do hands over the stored shards: the same tables
    again = []
    LocalExecutor(tmp_path / "w", shard_rows=7).run(
        job(), table, sink=lambda shard, t: again.append((shard, t))
    )
    assert [s for s, _ in again] == list(range(8))
    assert all(a.equals(b) for (_, a), (_, b) in zip(seen, again, strict=True))


def test_sharded_export_equals_one_export_and_loads_as_one_split(tmp_path):
    from datasets import load_dataset

    table = make_pools(53)
    sink = ShardedExport("trl-dpo", tmp_path / "trl")
    result = LocalExecutor(tmp_path / "w", shard_rows=7).run(job(), table, sink=sink)
    out = sink.result(funnel=result.funnel)
    assert [p.name for p in out] == [f"train-{i:05d}.parquet" for i in range(8)]

    whole = export(Pipeline(job()).run(table).table, "trl-dpo", tmp_path / "one")
    ds = load_dataset(
        "parquet", data_files=str(tmp_path / "trl" / "train-*.parquet"), cache_dir=str(tmp_path)
    )["train"]
    ref = load_dataset("parquet", data_files=str(whole[0]), cache_dir=str(tmp_path))["train"]
    assert ds.to_list() == ref.to_list() and len(ds) == out.rows_written > 0
    assert ds.features == ref.features
    assert result.funnel.entries[-1].stage == "export:trl-dpo"


def test_sharded_export_counts_reject_rows_over_all_shards(tmp_path):
    pairs = Pipeline(job()).run(make_pools(53)).table
    chosen = pairs["chosen"].to_pylist()
    chosen[9] = None  # no chosen response: TRL cannot train on it
    pairs = pairs.set_column(pairs.schema.get_field_index("chosen"), "chosen", pa.array(chosen))
    sink = ShardedExport("trl-dpo", tmp_path / "trl", split="dpo")
    sink(0, pairs.slice(0, 5))
    sink(1, pairs.slice(5))
    out = sink.result()
    assert out.rejects["row"].to_pylist() == [9]
    assert "chosen" in out.rejects["field"][0].as_py()
    assert out.rows_in == pairs.num_rows and out.rows_written == pairs.num_rows - 1
    assert [p.name for p in out] == ["dpo-00000.parquet", "dpo-00001.parquet"]


def test_export_after_a_failure_and_resume_equals_a_fresh_export(tmp_path):
    table = make_pools(53)
    failing = ShardedExport("trl-dpo", tmp_path / "resumed")
    with pytest.raises(StageError):
        LocalExecutor(tmp_path / "w", shard_rows=7).run(job("p00030"), table, sink=failing)
    assert 0 < len(list((tmp_path / "resumed").glob("*.parquet"))) < 8
    resumed = ShardedExport("trl-dpo", tmp_path / "resumed")
    LocalExecutor(tmp_path / "w", shard_rows=7).run(job(), table, sink=resumed)
    fresh = ShardedExport("trl-dpo", tmp_path / "fresh")
    LocalExecutor(tmp_path / "f", shard_rows=7).run(job(), table, sink=fresh)
    assert tree(tmp_path / "resumed") == tree(tmp_path / "fresh")
    assert resumed.result().rows_written == fresh.result().rows_written


def test_formats_with_a_side_file_need_the_whole_table(tmp_path):
    with pytest.raises(ValueError, match="side file"):
        ShardedExport("llamafactory", tmp_path)
    with pytest.raises(ValueError, match="unknown format"):
        ShardedExport("trl", tmp_path)


def test_sharded_kto_from_pairs_counts_its_own_rows(tmp_path):
    """trl-kto turns each pair into two rows: counts and reject rows are in those rows."""
    pairs = Pipeline(job()).run(make_pools(53)).table.slice(0, 4)
    chosen = pairs["chosen"].to_pylist()
    chosen[3] = None  # the 4th pair's chosen row (unpaired row 6) cannot be written
    pairs = pairs.set_column(pairs.schema.get_field_index("chosen"), "chosen", pa.array(chosen))
    sink = ShardedExport("trl-kto", tmp_path / "kto")
    sink(0, pairs.slice(0, 2))
    sink(1, pairs.slice(2))
    out = sink.result()
    whole = export(pairs, "trl-kto", tmp_path / "one")
    assert (out.rows_in, out.rows_written) == (whole.rows_in, whole.rows_written) == (8, 7)
    # row counts unpaired rows over the shards in order: shard 1 unpairs pairs 2 and 3 as
    # rows 4-7 (chosen 2, chosen 3, rejected 2, rejected 3), so pair 3's chosen is row 5
    assert out.rejects["row"].to_pylist() == [5]
    assert out.rejects["prompt_id"].to_pylist() == [pairs["prompt_id"][3].as_py()]
