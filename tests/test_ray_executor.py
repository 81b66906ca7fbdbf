"""The Ray executor on a real local Ray: the local executor's files byte for byte, resume,
setup() once per actor, a real reward model in an actor pool."""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pipeline_job import make_pools, stages

from prefdata.execute import LocalExecutor, StageError, open_workdir
from prefdata.execute.manifest import MANIFEST
from prefdata.io.parquet import from_parquet_layout
from prefdata.pipeline import Pipeline, Stage
from prefdata.sql import Sql

# ray[data] is in the dev extra CI installs: a broken import must fail there, not skip
if os.environ.get("CI"):
    import ray
else:
    ray = pytest.importorskip("ray")
from prefdata.execute.ray import RayExecutor, stage_has_setup, stage_uses_gpu  # noqa: E402

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    """One local Ray for the module (about 4 s to start); workers import the test stages
    from tests/ (code_search_path). A Ray someone else started is used and left running."""
    from ray.data import DataContext
    from ray.job_config import JobConfig

    started = not ray.is_initialized()
    if started:
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            object_store_memory=256 << 20,
            job_config=JobConfig(code_search_path=[str(TESTS)]),
        )
    ctx = DataContext.get_current()
    bars, ctx.enable_progress_bars = ctx.enable_progress_bars, False
    yield
    ctx.enable_progress_bars = bars
    if started:
        ray.shutdown()


def files(workdir: Path) -> dict[str, bytes]:
    """Every file of a work directory but the lock, relative path -> bytes."""
    return {
        str(p.relative_to(workdir)): p.read_bytes()
        for p in sorted(workdir.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def calls(log: Path, shard_rows: int) -> Counter:
    """(stage, shard) -> process() calls, from a pipeline_job stage log."""
    out = Counter()
    for line in log.read_text().splitlines() if log.exists() else []:
        stage, first, _ = line.split("\t")
        out[stage, int(first[1:]) // shard_rows] += 1
    return out


def sql_filter() -> Sql:
    # rejects pools with 3 candidates; has setup() (a DuckDB connection): an actor pool
    return Sql(
        "SELECT *, n_candidates * 2 AS twice FROM pools WHERE n_candidates < 3",
        adds=("twice",),
        threads=1,
    )


@pytest.mark.parametrize("source", ["table", "parquet"])
def test_same_files_rows_rejects_and_funnel_as_local(tmp_path, source):
    """Ray keeps every stage's shards, as the local executor does with checkpoint="all".
    A Parquet file is read in place (its row groups, 4 rows each, span the shards)."""
    table = make_pools(53)
    src = table
    if source == "parquet":
        src = tmp_path / "pools.parquet"
        pq.write_table(table, src, row_group_size=4)
    job = [*stages(), sql_filter()]
    local = LocalExecutor(tmp_path / "local", shard_rows=7, checkpoint="all").run(job, src)
    result = RayExecutor(tmp_path / "ray", shard_rows=7).run(job, src)
    auto = LocalExecutor(tmp_path / "auto", shard_rows=7).run(job, src)
    assert auto.read().equals(local.read()) and auto.rejects().equals(local.rejects())
    assert auto.funnel.to_list() == local.funnel.to_list()

    assert len(result.output_paths) == 8 and result.info.complete
    assert result.read().equals(local.read())
    assert result.rejects().equals(local.rejects())
    assert result.funnel.to_list() == local.funnel.to_list()
    # every Parquet file (input shards, outputs, rejects) and the manifest, byte for byte
    assert files(tmp_path / "ray") == files(tmp_path / "local")

    # and both equal the in-memory pipeline, reject row offsets counted over all shards
    mem = Pipeline(job).run(table)
    assert result.read().equals(from_parquet_layout(mem.table))
    assert result.rejects().equals(mem.rejects)
    rejected = {e.stage: e.rows_rejected for e in result.funnel.entries}
    assert rejected == {"CountCandidates": 0, "Slow": 0, "DropEvery": 18, "Sql": 17}
    assert max(result.rejects()["row"].to_pylist()) > 7  # offsets beyond the first shard
    info = open_workdir(tmp_path / "ray")
    assert info.funnel.to_list() == result.funnel.to_list() and info.complete


def test_resume_after_failure_in_one_shard(tmp_path, capsys):
    table, log, work = make_pools(53), tmp_path / "calls.tsv", tmp_path / "w"
    with pytest.raises(StageError, match=r"stage 1 Slow failed in shard 3") as err:
        RayExecutor(work, shard_rows=5).run(stages(fail_on="p00017", log=str(log)), table)
    cause = err.value.__cause__
    assert err.value.shard == 3 and isinstance(cause, RuntimeError)
    assert "planned failure on p00017" in str(cause)
    assert any("worker traceback" in n and "pipeline_job.py" in n for n in cause.__notes__)
    # the other shards of the failing stage finished and are recorded; the next stage waits
    info = open_workdir(work)
    assert not info.complete
    assert [s["shards_done"] for s in info.stages] == [11, 10, 0]
    assert not list(work.rglob("*.tmp"))

    first = calls(log, 5)
    capsys.readouterr()
    result = RayExecutor(work, shard_rows=5, progress=True).run(stages(log=str(log)), table)
    rerun = calls(log, 5) - first
    # a bar per stage left to do, counting input rows (all 53 rows of the last stage)
    err = capsys.readouterr().err
    assert "prefdata 1/3" not in err and "prefdata 2/3 Slow" in err
    assert "prefdata 3/3 DropEvery" in err and "53/53" in err
    assert set(rerun) == {("Slow", 3)} | {("DropEvery", s) for s in range(11)}
    assert max(rerun.values()) == 1

    ref = LocalExecutor(tmp_path / "ref", shard_rows=5, checkpoint="all").run(stages(), table)
    assert files(work) == files(tmp_path / "ref")
    assert result.read().equals(ref.read()) and result.rejects().equals(ref.rejects())
    assert result.funnel.to_list() == ref.funnel.to_list()

    # the local executor reads the Ray run's work directory as its own: nothing left to do
    before = calls(log, 5)
    again = LocalExecutor(work, shard_rows=5).run(stages(log=str(log)), table)
    assert calls(log, 5) == before and again.read().equals(result.read())


def test_resumes_a_local_auto_run_from_its_last_kept_outputs(tmp_path):
    """A local checkpoint="auto" run keeps only the last stage's outputs (these stages are
    cheap); after it fails on shard 3, Ray runs shards 3-10 from their input, every stage,
    and ends with the rows, rejects and funnel of an uninterrupted run."""
    table, log, work = make_pools(53), tmp_path / "calls.tsv", tmp_path / "w"
    with pytest.raises(StageError):
        LocalExecutor(work, shard_rows=5).run(stages(fail_on="p00017", log=str(log)), table)
    first = calls(log, 5)
    result = RayExecutor(work, shard_rows=5).run(stages(log=str(log)), table)
    rerun = calls(log, 5) - first
    assert set(rerun) == {
        (st, s) for st in ("CountCandidates", "Slow", "DropEvery") for s in range(3, 11)
    }
    ref = LocalExecutor(tmp_path / "ref", shard_rows=5).run(stages(), table)
    assert result.read().equals(ref.read()) and result.rejects().equals(ref.rejects())
    assert result.funnel.to_list() == ref.funnel.to_list() and result.info.complete


@dataclass(frozen=True)
class CountedSetup(Stage):
    """Logs ``setup <pid>`` per setup() and ``process <pid> <first prompt id>`` per call."""

    log: str = field(default="", metadata={"fingerprint": False})

    def setup(self) -> None:
        with open(self.log, "a", encoding="utf-8") as fh:
            fh.write(f"setup\t{os.getpid()}\n")

    def process(self, table: pa.Table) -> pa.Table:
        with open(self.log, "a", encoding="utf-8") as fh:
            fh.write(f"process\t{os.getpid()}\t{table['prompt_id'][0]}\n")
        return table


def test_setup_runs_once_per_actor_not_per_shard(tmp_path):
    log = tmp_path / "setup.tsv"
    stage = CountedSetup(log=str(log))
    assert stage_has_setup(stage) and not stage_has_setup(stages()[0])
    result = RayExecutor(tmp_path / "w", shard_rows=5, concurrency=2).run([stage], make_pools(53))
    assert result.read().num_rows == 53

    lines = [line.split("\t") for line in log.read_text().splitlines()]
    setups = Counter(pid for kind, pid, *_ in lines if kind == "setup")
    processed = [(pid, rest[0]) for kind, pid, *rest in lines if kind == "process"]
    assert sorted(first for _, first in processed) == [f"p{i:05d}" for i in range(0, 53, 5)]
    assert set(setups.values()) == {1}  # once in every actor
    assert 1 <= len(setups) <= 2  # the pool: concurrency=2 actors, for 11 shards
    assert {pid for pid, _ in processed} <= set(setups)  # each ran setup() before its shards
    assert str(os.getpid()) not in setups  # not on the driver


@pytest.mark.slow
def test_reward_model_in_an_actor_pool_matches_local(tmp_path, tiny_models):
    """A real (tiny, random-weight) reward model scored in Ray actors on CPU."""
    from prefdata.score.reward_model import RewardModel

    rm = RewardModel(str(tiny_models["reward"]), device="cpu")
    assert stage_has_setup(rm) and not stage_uses_gpu(rm)
    table = make_pools(30)
    local = LocalExecutor(tmp_path / "local", shard_rows=10).run([rm], table)
    # one actor: each one imports torch and loads the model
    result = RayExecutor(tmp_path / "ray", shard_rows=10, concurrency=1).run([rm], table)
    scores = result.read()["candidates"].combine_chunks().flatten().field("scores")
    assert scores.field("rm").null_count == 0
    assert result.read().equals(local.read())
    assert files(tmp_path / "ray") == files(tmp_path / "local")


def test_gpu_stages_are_declared_or_inferred_and_checked(tmp_path):
    from prefdata.score.reward_model import RewardModel

    @dataclass(frozen=True)
    class Declared(Stage):
        uses_gpu = False  # the declaration wins over the device field
        device: str | None = None

    assert stage_uses_gpu(RewardModel("m")) and not stage_uses_gpu(RewardModel("m", device="cpu"))
    assert not stage_uses_gpu(Declared()) and not stage_uses_gpu(sql_filter())

    # this Ray has no GPU: a model stage asking for one fails before any stage runs
    work = tmp_path / "w"
    with pytest.raises(ValueError, match=r"\['rm'\] ask for 1 GPU"):
        RayExecutor(work, num_gpus_per_model_stage=1).run([RewardModel("m")], make_pools(3))
    assert all(s["shards_done"] == 0 for s in open_workdir(work).stages)


def test_empty_input_and_no_stages(tmp_path):
    empty = pa.Table.from_pylist([], schema=make_pools(1).schema)
    result = RayExecutor(tmp_path / "e").run(stages(), empty)
    ref = LocalExecutor(tmp_path / "ref", checkpoint="all").run(stages(), empty)
    assert result.read().num_rows == 0 and result.read().schema == ref.read().schema
    assert result.funnel.to_list() == ref.funnel.to_list()
    assert files(tmp_path / "e") == files(tmp_path / "ref")

    table = make_pools(12)
    passed = RayExecutor(tmp_path / "p", shard_rows=5).run([], table)
    assert passed.read().equals(from_parquet_layout(table)) and passed.funnel.to_list() == []
    assert json.loads((tmp_path / "p" / MANIFEST).read_text())["pipeline"] == []


def test_ingest_gives_the_local_executors_files(tmp_path):
    """The same raw source and layout: the same ingest files, pool shards, output and
    funnel as the local executor."""
    from prefdata.execute import Ingest

    raw = pa.Table.from_pylist(
        [
            {"id": f"p{i % 13:05d}", "prompt": f"q{i % 13}", "response": f"r{i}", "rm": float(i)}
            for i in range(120)
        ]
    )
    path = tmp_path / "long.parquet"
    pq.write_table(raw, path, row_group_size=40)
    source = Ingest(path, "long", id_col="id", score_cols=["rm"], partition_bytes=1024)
    local = LocalExecutor(tmp_path / "local", shard_rows=5).run(stages(), source)
    remote = RayExecutor(tmp_path / "ray", shard_rows=5).run(stages(), source)
    assert files(tmp_path / "local" / "ingest") == files(tmp_path / "ray" / "ingest")
    assert remote.read().equals(local.read())
    assert remote.funnel.to_list() == local.funnel.to_list()
    assert remote.funnel.entries[1].stage == "layout:long"
