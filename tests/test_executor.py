"""The checkpointed local executor: resume, recompute on change, determinism, SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pipeline_job import (
    RUNTIME,
    CostlyCount,
    CountCandidates,
    DropEvery,
    Slow,
    make_pools,
    row_index,
    stages,
)

from prefdata.execute import LocalExecutor, StageError, open_workdir
from prefdata.execute.inputs import iter_shards, source_digest
from prefdata.execute.manifest import MANIFEST
from prefdata.execute.workdir import workdir_lock
from prefdata.io.parquet import from_parquet_layout
from prefdata.pipeline import MissingColumnsError, Pipeline, Stage
from prefdata.schema import empty_pools

JOB = Path(__file__).with_name("pipeline_job.py")


def calls(log: Path) -> Counter:
    """(stage, shard) -> number of process() calls, from a stage log (shard_rows=5 inputs)."""
    if not log.exists():
        return Counter()
    out = Counter()
    for line in log.read_text().splitlines():
        stage, first, _ = line.split("\t")
        out[stage, int(first[1:]) // 5] += 1
    return out


def files(workdir: Path) -> dict[str, bytes]:
    """Every file under input/ and stages/, relative path -> bytes."""
    return {
        str(p.relative_to(workdir)): p.read_bytes()
        for sub in ("input", "stages")
        for p in sorted((workdir / sub).rglob("*"))
        if p.is_file()
    }


def manifest_files(workdir: Path) -> set[str]:
    """The files the manifest accounts for: input shards (unless the input is read in
    place), and the rejects of every recorded (stage, shard) and its output when stored."""
    m = json.loads((workdir / MANIFEST).read_text())
    names = set()
    if "pieces" not in m["input"]:
        names = {f"input/shard-{i:05d}.arrow" for i in range(len(m["input"]["shards"]))}
    for rec in m["stages"].values():
        for s, counts in rec["shards"].items():
            names.add(f"{rec['dir']}/rejects/shard-{s}.arrow")
            if counts.get("stored", True):
                names.add(f"{rec['dir']}/shard-{s}.arrow")
    return names


def in_memory(table: pa.Table, job) -> tuple[pa.Table, pa.Table, list]:
    res = Pipeline(job).run(table)
    return from_parquet_layout(res.table), res.rejects, res.funnel.to_list()


def test_matches_in_memory_pipeline(tmp_path):
    table = make_pools(53)
    result = LocalExecutor(tmp_path / "w", shard_rows=7).run(stages(), table)
    out, rejects, funnel = in_memory(table, stages())
    assert len(result.output_paths) == 8  # 7 shards of 7 rows, one of 4
    got = result.read()
    assert got.schema == out.schema and got.equals(out)
    assert result.rejects().equals(rejects)  # reject rows count over all shards
    assert result.rejects().num_rows == 18 and result.funnel.to_list() == funnel
    assert [e.stage for e in result.funnel.entries] == ["CountCandidates", "Slow", "DropEvery"]


def test_parquet_folder_input_is_sharded_across_files(tmp_path):
    table = make_pools(53)
    src = tmp_path / "src"
    src.mkdir()
    pq.write_table(table.slice(0, 30), src / "a.parquet", row_group_size=4)
    pq.write_table(table.slice(30), src / "b.parquet", row_group_size=6)
    result = LocalExecutor(tmp_path / "w", shard_rows=7).run(stages(), src)
    info = open_workdir(tmp_path / "w")
    assert info.input["shards"] == [7] * 7 + [4]
    assert info.input["sources"] == [str(src / "a.parquet"), str(src / "b.parquet")]
    assert result.read().equals(in_memory(table, stages())[0])


def test_parquet_input_is_read_in_place_and_guarded_by_its_digest(tmp_path):
    """A Parquet source is not copied: shards are pieces of its row groups. The same bytes
    at another path resume as done; changed bytes recompute everything."""
    table, log, work = make_pools(53), tmp_path / "calls.tsv", tmp_path / "w"
    src = tmp_path / "pools.parquet"
    pq.write_table(table, src, row_group_size=4)
    result = LocalExecutor(work, shard_rows=7).run(stages(log=str(log)), src)
    info = open_workdir(work)
    assert not (work / "input").exists()
    assert info.input["digest"] == source_digest([src], 7)  # hashed in the background
    assert info.input["pieces"][1] == [[0, 1, 3, 1], [0, 2, 0, 4], [0, 3, 0, 2]]
    assert sum(n for shard in info.input["pieces"] for *_, n in shard) == 53
    assert result.read().equals(in_memory(table, stages())[0])

    moved = tmp_path / "elsewhere.parquet"
    src.rename(moved)
    before = calls(log)
    again = LocalExecutor(work, shard_rows=7).run(stages(log=str(log)), moved)
    assert calls(log) == before and again.read().equals(result.read())
    assert open_workdir(work).input["sources"] == [str(moved)]

    pq.write_table(table.slice(0, 50), moved, row_group_size=4)
    changed = LocalExecutor(work, shard_rows=7).run(stages(log=str(log)), moved)
    assert sum((calls(log) - before).values()) == 3 * 8  # every stage on every shard
    assert changed.read().equals(in_memory(table.slice(0, 50), stages())[0])
    assert set(files(work)) == manifest_files(work)


def test_a_manifest_without_its_digest_starts_over(tmp_path):
    """A run killed before its background hash finished left ``"digest": null``; the
    rerun cannot tell the input is the same, so it recomputes every shard."""
    table, log, work = make_pools(20), tmp_path / "calls.tsv", tmp_path / "w"
    src = tmp_path / "pools.parquet"
    pq.write_table(table, src)
    first = LocalExecutor(work, shard_rows=7).run(stages(log=str(log)), src)
    manifest = json.loads((work / MANIFEST).read_text())
    manifest["input"]["digest"] = None
    (work / MANIFEST).write_text(json.dumps(manifest))
    before = calls(log)
    again = LocalExecutor(work, shard_rows=7).run(stages(log=str(log)), src)
    assert sum((calls(log) - before).values()) == 3 * 3
    assert again.read().equals(first.read())
    assert open_workdir(work).input["digest"] == source_digest([src], 7)


def _slow_digest(monkeypatch, before=None):
    """Make the background hash take a while (a large input) and run ``before`` first."""
    import prefdata.execute.inputs as inputs

    real = inputs.source_digest

    def slow(source, shard_rows, stop=None):
        time.sleep(0.5)
        if before is not None:
            before()
        return real(source, shard_rows, stop)

    monkeypatch.setattr(inputs, "source_digest", slow)
    return real


def test_a_failed_run_waits_for_its_background_digest(tmp_path, monkeypatch):
    """A stage that fails before the input's hash is done: the run still records the
    digest, so the rerun resumes the finished shards instead of starting over."""
    table, log, work = make_pools(20), tmp_path / "calls.tsv", tmp_path / "w"
    src = tmp_path / "pools.parquet"
    pq.write_table(table, src)
    real = _slow_digest(monkeypatch)
    with pytest.raises(StageError):
        LocalExecutor(work, shard_rows=7).run(stages(fail_on="p00015", log=str(log)), src)
    assert open_workdir(work).input["digest"] == real([src], 7)
    before = calls(log)
    LocalExecutor(work, shard_rows=7).run(stages(log=str(log)), src)
    assert sorted({shard for _, shard in calls(log) - before}) == [2]  # only the failed one


def test_a_file_changed_while_hashed_gets_no_digest(tmp_path, monkeypatch):
    """The hash runs after the plan; a file rewritten in between (its mtime moves) must not
    vouch for the planned bytes: the digest stays null and the rerun starts over."""
    table, log, work = make_pools(20), tmp_path / "calls.tsv", tmp_path / "w"
    src = tmp_path / "pools.parquet"
    pq.write_table(table, src)
    st = src.stat()
    _slow_digest(monkeypatch, lambda: os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9)))
    LocalExecutor(work, shard_rows=7).run(stages(log=str(log)), src)
    assert open_workdir(work).input["digest"] is None
    before = calls(log)
    LocalExecutor(work, shard_rows=7).run(stages(log=str(log)), src)
    assert sum((calls(log) - before).values()) == 3 * 3


def test_an_input_that_cannot_be_planned_stops_the_hash(tmp_path, monkeypatch):
    """A folder with a file of another schema fails while planning; the background hash
    of the (large) input is stopped instead of running on."""
    import prefdata.execute.inputs as inputs

    started = []

    class Spy(inputs.BackgroundDigest):
        def __init__(self, *args):
            super().__init__(*args)
            started.append(self)

    monkeypatch.setattr(inputs, "BackgroundDigest", Spy)
    _slow_digest(monkeypatch)
    (tmp_path / "in").mkdir()
    pq.write_table(make_pools(10), tmp_path / "in" / "a.parquet")
    pq.write_table(pa.table({"x": [1]}), tmp_path / "in" / "b.parquet")
    with pytest.raises(ValueError, match="schema differs"):
        LocalExecutor(tmp_path / "w").run(stages(), tmp_path / "in")
    assert len(started) == 1 and started[0].stop.is_set()
    assert started[0].done.wait(5) and started[0].digest is None


def test_a_costly_pipeline_hashes_its_input_first(tmp_path, monkeypatch):
    """With a costly stage the digest is in the manifest before any shard runs, so a kill
    at any moment never throws away model outputs."""
    import prefdata.execute.inputs as inputs

    def no_background(*args, **kwargs):
        raise AssertionError("a costly pipeline hashed in the background")

    monkeypatch.setattr(inputs, "BackgroundDigest", no_background)
    table, log, work = make_pools(20), tmp_path / "calls.tsv", tmp_path / "w"
    job = [CostlyCount(log=str(log)), *stages(log=str(log))[1:]]
    LocalExecutor(work, shard_rows=7).run(job, table)
    assert open_workdir(work).input["digest"] == source_digest(table, 7)


def test_a_failing_sink_ends_the_run(tmp_path):
    """The sink runs on its own thread; what it raises still reaches the caller."""

    def sink(shard, table):
        if shard == 1:
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        LocalExecutor(tmp_path / "w", shard_rows=7).run(stages(), make_pools(30), sink=sink)


READ_STARTED = {s: threading.Event() for s in range(5)}


@dataclass(frozen=True)
class WaitForNextRead(Stage):
    """Passes pools through; on shard k (7 rows each) it waits up to 20 s for the read of
    shard k + 1 to begin, and records whether it did."""

    waited: list = field(default_factory=list, metadata=RUNTIME, compare=False)

    def process(self, table: pa.Table) -> pa.Table:
        shard = int(row_index(table)[0].as_py()) // 7
        if shard + 1 in READ_STARTED:
            self.waited.append(READ_STARTED[shard + 1].wait(timeout=20))
        return table


def test_the_next_input_shard_is_read_while_this_one_computes(tmp_path, monkeypatch):
    """While shard k runs through the stages, shard k + 1 is already being decoded, on a
    thread of its own and on the cores the stages leave; the first shard on every core.
    Without the read-ahead the stage would wait in vain (20 s) for the next read."""
    from prefdata.execute import inputs, local

    reads, real = [], inputs.InputReader.read

    def read(self, shard, threads=None):
        reads.append((shard, threads, threading.current_thread().name))
        READ_STARTED[shard].set()
        return real(self, shard, threads)

    monkeypatch.setattr(inputs.InputReader, "read", read)
    monkeypatch.setattr(local, "_spare_cores", lambda: 3)
    for event in READ_STARTED.values():
        event.clear()
    src, wait = tmp_path / "pools.parquet", WaitForNextRead()
    pq.write_table(make_pools(30), src, row_group_size=4)
    result = LocalExecutor(tmp_path / "w", shard_rows=7).run([wait, *stages()], src)
    assert wait.waited == [True] * 4
    assert [(s, t) for s, t, _ in reads] == [(0, None), (1, 3), (2, 3), (3, 3), (4, 3)]
    assert {name.rsplit("_", 1)[0] for *_, name in reads} == {"prefdata-read"}
    assert result.read().equals(in_memory(make_pools(30), stages())[0])


SHARD_ONE_DONE = threading.Event()


@dataclass(frozen=True)
class SignalShardOne(Stage):
    """Passes pools through; sets ``SHARD_ONE_DONE`` when it has run on shard 1."""

    def process(self, table: pa.Table) -> pa.Table:
        if table.num_rows and int(row_index(table)[0].as_py()) // 7 == 1:
            SHARD_ONE_DONE.set()
        return table


def test_small_writes_do_not_wait_behind_a_slow_export(tmp_path):
    """What waits to be written is bounded by bytes (about three input shards), not by
    count: while shard 0's export is still running, shard 1 runs through every stage and
    submits its small writes. A bound of three pending writes would stop the stages there,
    and the export, which waits for shard 1, would wait in vain (20 s)."""
    SHARD_ONE_DONE.clear()
    waited = []

    def sink(shard, table):
        if shard == 0:
            waited.append(SHARD_ONE_DONE.wait(timeout=20))

    job = [*stages(), SignalShardOne()]
    result = LocalExecutor(tmp_path / "w", shard_rows=7).run(job, make_pools(30), sink=sink)
    assert waited == [True]
    assert result.read().equals(in_memory(make_pools(30), stages())[0])


def test_a_fresh_run_that_fails_while_copying_its_input_can_be_rerun(tmp_path):
    """Input copied into shard files (here: no stages) lands in a folder that already reads
    as a work directory, so a run that dies half-way is simply run again."""
    src = tmp_path / "in"
    src.mkdir()
    pq.write_table(make_pools(12), src / "a.parquet")
    pq.write_table(make_pools(12, 12).drop_columns(["metadata"]), src / "b.parquet")
    with pytest.raises(KeyError, match="metadata"):
        LocalExecutor(tmp_path / "w", shard_rows=5).run([], src)
    assert (tmp_path / "w" / "input").is_dir()  # half the input copied
    pq.write_table(make_pools(12, 12), src / "b.parquet")
    result = LocalExecutor(tmp_path / "w", shard_rows=5).run([], src)
    assert result.read().num_rows == 24


def test_a_hash_done_before_the_input_is_copied_is_still_recorded(tmp_path, monkeypatch):
    """A copied input (a table) is marked as a work directory before its shard files are
    written; that early manifest write must not use up a background hash that is already
    done, or the plan would record no digest and a rerun would start over."""
    import prefdata.execute.inputs as inputs

    class Quick(inputs.BackgroundDigest):
        def __init__(self, *args):
            super().__init__(*args)
            assert self.done.wait(10)  # finished before the planning goes on

    monkeypatch.setattr(inputs, "BackgroundDigest", Quick)
    table = make_pools(30)
    LocalExecutor(tmp_path / "w", shard_rows=7).run(stages(), table)
    assert open_workdir(tmp_path / "w").input["digest"] == source_digest(table, 7)


def test_a_write_that_does_not_store_the_table_does_not_hold_it(tmp_path, monkeypatch):
    """Under checkpoint="auto" a cheap stage's write only records the shard, so the write
    waiting in the queue gets an empty table with the kept count: memory is not held for
    outputs nobody writes."""
    seen, real = [], LocalExecutor._write

    def spy(self, manifest, key, shard, rows_in, out, row_offset, store):
        seen.append((store, out.table.num_rows, out.kept))
        return real(self, manifest, key, shard, rows_in, out, row_offset, store)

    monkeypatch.setattr(LocalExecutor, "_write", spy)
    result = LocalExecutor(tmp_path / "w", shard_rows=7).run(stages(), make_pools(30))
    kept = {e.stage: e.rows_out for e in result.funnel.entries}
    assert {s for s, *_ in seen} == {True, False}
    assert all(rows == 0 for store, rows, _ in seen if not store)
    assert sum(k for store, _, k in seen if not store) == kept["CountCandidates"] + kept["Slow"]
    assert sum(rows for store, rows, _ in seen if store) == result.read().num_rows


def test_auto_checkpoint_keeps_costly_stages_and_recomputes_cheap_ones(tmp_path):
    """Under checkpoint="auto" only costly stages and the last stage keep their output;
    a changed cheap stage reruns from the last kept output, never repeating a costly one."""
    table, log, work = make_pools(53), tmp_path / "calls.tsv", tmp_path / "w"
    job = [CostlyCount(log=str(log)), *stages(log=str(log))[1:]]
    LocalExecutor(work, shard_rows=5).run(job, table)
    stored = {p.parent.name for p in (work / "stages").glob("*/shard-*.arrow")}
    assert sorted(d.split("-")[1] for d in stored) == ["CostlyCount", "DropEvery"]
    assert len(list((work / "stages").glob("*/rejects/shard-*.arrow"))) == 33
    manifest = json.loads((work / MANIFEST).read_text())
    slow = manifest["stages"][manifest["pipeline"][1]]["shards"]
    assert all(rec["stored"] is False for rec in slow.values()) and len(slow) == 11

    before = calls(log)
    changed = [job[0], Slow(suffix="?", log=str(log)), job[2]]
    result = LocalExecutor(work, shard_rows=5).run(changed, table)
    redone = calls(log) - before
    assert {stage for stage, _ in redone} == {"Slow", "DropEvery"} and sum(redone.values()) == 22
    assert result.read().equals(in_memory(table, changed)[0])

    # a cheap stage changed after another cheap one: both rerun, from the costly output
    before = calls(log)
    LocalExecutor(work, shard_rows=5).run([*changed[:2], DropEvery(every=2, log=str(log))], table)
    redone = calls(log) - before
    assert {stage for stage, _ in redone} == {"Slow", "DropEvery"} and sum(redone.values()) == 22
    assert set(files(work)) >= manifest_files(work)


def test_checkpoint_mode_is_checked(tmp_path):
    with pytest.raises(ValueError, match="checkpoint must be one of"):
        LocalExecutor(tmp_path / "w", checkpoint="some")


def test_default_shard_size_follows_the_pipeline_and_the_workdir(tmp_path, monkeypatch):
    """shard_rows=None: 10,000 rows with a costly stage; a cheap pipeline gets about
    CHEAP_SHARD_BYTES of input per shard (here lowered so 53 small pools make shards);
    a work directory keeps the size it was planned with, so nothing is recomputed."""
    import prefdata.execute.inputs as inputs

    table, log = make_pools(53), tmp_path / "calls.tsv"
    src = tmp_path / "pools.parquet"
    pq.write_table(table, src, row_group_size=20)
    costly = [CostlyCount(log=str(log)), *stages(log=str(log))[1:]]
    LocalExecutor(tmp_path / "costly").run(costly, src)
    assert open_workdir(tmp_path / "costly").input["shard_rows"] == inputs.COSTLY_SHARD_ROWS

    meta = pq.ParquetFile(src).metadata
    per_row = sum(meta.row_group(g).total_byte_size for g in range(meta.num_row_groups)) / 53
    monkeypatch.setattr(inputs, "COSTLY_SHARD_ROWS", 4)
    monkeypatch.setattr(inputs, "CHEAP_SHARD_BYTES", int(per_row * 12.5))
    cheap = LocalExecutor(tmp_path / "cheap").run(stages(log=str(log)), src)
    assert open_workdir(tmp_path / "cheap").input["shards"] == [12] * 4 + [5]
    assert cheap.read().equals(in_memory(table, stages())[0])

    LocalExecutor(tmp_path / "seven", shard_rows=7).run(stages(log=str(log)), src)
    before = calls(log)
    again = LocalExecutor(tmp_path / "seven").run(stages(log=str(log)), src)
    assert calls(log) == before and open_workdir(tmp_path / "seven").input["shards"][0] == 7
    assert again.read().equals(cheap.read())


def test_iter_shards_is_exact_and_keeps_order():
    table = make_pools(23)
    shards = list(iter_shards(table, 5))
    assert [s.num_rows for s in shards] == [5, 5, 5, 5, 3]
    assert pa.concat_tables(shards).equals(from_parquet_layout(table))


@pytest.mark.parametrize("checkpoint", ["all", "auto"])
def test_resume_after_stage_error(tmp_path, checkpoint):
    """ "all" keeps every stage's shards, so the rerun starts each shard at its first
    unfinished stage; "auto" keeps only the last stage's (these stages are cheap), so a
    shard is recorded whole or not at all and reruns from its input."""
    table, log, work = make_pools(53), tmp_path / "calls.tsv", tmp_path / "w"
    executor = LocalExecutor(work, shard_rows=5, checkpoint=checkpoint)
    with pytest.raises(StageError, match=r"stage 1 Slow failed in shard 3") as err:
        executor.run(stages(fail_on="p00017", log=str(log)), table)
    assert err.value.shard == 3 and isinstance(err.value.__cause__, RuntimeError)
    info = open_workdir(work)
    assert not info.complete
    first_count = 4 if checkpoint == "all" else 3
    assert [s["shards_done"] for s in info.stages] == [first_count, 3, 3]
    # a file without a manifest record (as a kill between rename and record leaves) is redone
    stray = work / info.stages[1]["dir"] / "shard-00003.arrow"
    stray.write_bytes(b"not parquet")

    first = calls(log)
    result = executor.run(stages(log=str(log)), table)
    rerun = calls(log) - first
    assert set(rerun) == (
        {("CountCandidates", s) for s in range(first_count, 11)}
        | {("Slow", s) for s in range(3, 11)}
        | {("DropEvery", s) for s in range(3, 11)}
    )
    assert max(rerun.values()) == 1
    out, rejects, funnel = in_memory(table, stages())
    assert result.read().equals(out) and result.rejects().equals(rejects)
    assert result.funnel.to_list() == funnel and result.info.complete


def test_config_change_recomputes_that_stage_and_later_only(tmp_path):
    table, log, work = make_pools(53), tmp_path / "calls.tsv", tmp_path / "w"
    first = LocalExecutor(work, shard_rows=5, checkpoint="all").run(
        stages(suffix="!", log=str(log)), table
    )
    stage0 = {p: p.stat().st_mtime_ns for p in (work / "stages").glob("00-*/**/*.arrow")}
    assert len(stage0) == 22  # 11 outputs and 11 rejects
    before = calls(log)

    second = LocalExecutor(work, shard_rows=5).run(stages(suffix="?", log=str(log)), table)
    redone = calls(log) - before
    assert {stage for stage, _ in redone} == {"Slow", "DropEvery"}
    assert sum(redone.values()) == 22
    assert {p: p.stat().st_mtime_ns for p in stage0} == stage0
    assert first.output_paths[0].parent != second.output_paths[0].parent
    assert set(second.read()["source"].to_pylist()) == {"synthetic?"}

    # switching back reuses the first run's shards: nothing runs at all
    before = calls(log)
    third = LocalExecutor(work, shard_rows=5).run(stages(suffix="!", log=str(log)), table)
    assert calls(log) == before
    assert third.read().equals(first.read()) and third.funnel.to_list() == first.funnel.to_list()


def test_changed_input_recomputes_everything(tmp_path):
    log, work = tmp_path / "calls.tsv", tmp_path / "w"
    LocalExecutor(work, shard_rows=5).run(stages(log=str(log)), make_pools(20))
    digest = open_workdir(work).input["digest"]
    changed = make_pools(20).set_column(2, "source", pa.array(["other"] * 20))
    before = calls(log)
    result = LocalExecutor(work, shard_rows=5).run(stages(log=str(log)), changed)
    assert sum((calls(log) - before).values()) == 12  # 3 stages x 4 shards
    assert open_workdir(work).input["digest"] != digest
    assert set(result.read()["source"].to_pylist()) == {"other!"}
    assert set(files(work)) == manifest_files(work)  # nothing of the old input is left


def test_two_fresh_runs_are_byte_identical(tmp_path):
    table = make_pools(53)
    a = LocalExecutor(tmp_path / "a", shard_rows=7).run(stages(), table)
    b = LocalExecutor(tmp_path / "b", shard_rows=7).run(stages(), table)
    assert files(tmp_path / "a") == files(tmp_path / "b")
    assert [p.read_bytes() for p in a.output_paths] == [p.read_bytes() for p in b.output_paths]
    ma, mb = (json.loads((tmp_path / d / MANIFEST).read_text()) for d in "ab")
    assert ma == mb


def test_empty_input_gives_empty_output_with_schema(tmp_path):
    result = LocalExecutor(tmp_path / "w").run(stages(), empty_pools(["rm"]))
    out = result.read()
    assert out.num_rows == 0 and "n_candidates" in out.column_names
    assert out.schema == in_memory(make_pools(3), stages())[0].schema
    assert result.funnel.to_list() == [
        {"stage": s, "rows_in": 0, "rows_out": 0, "rows_rejected": 0}
        for s in ("CountCandidates", "Slow", "DropEvery")
    ]
    assert result.rejects().num_rows == 0


def test_no_stages_passes_the_input_through(tmp_path):
    table = make_pools(12)
    result = LocalExecutor(tmp_path / "w", shard_rows=5).run([], table)
    assert result.read().equals(from_parquet_layout(table)) and result.funnel.to_list() == []


def test_missing_column_fails_before_any_work(tmp_path):
    with pytest.raises(MissingColumnsError, match="DropEvery requires"):
        LocalExecutor(tmp_path / "w").run([DropEvery()], make_pools(5))
    assert not (tmp_path / "w").exists()


def test_refuses_a_folder_that_is_not_a_workdir(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a prefdata work directory"):
        LocalExecutor(tmp_path).run(stages(), make_pools(5))
    assert (tmp_path / "notes.txt").exists()


def test_one_run_at_a_time(tmp_path):
    work = tmp_path / "w"
    LocalExecutor(work).run(stages(), make_pools(5))
    with workdir_lock(work), pytest.raises(RuntimeError, match="in use by another run"):
        LocalExecutor(work).run(stages(), make_pools(5))


def test_progress_bar_on_request_only(tmp_path, capsys):
    LocalExecutor(tmp_path / "a", shard_rows=5, progress=True).run(stages(), make_pools(12))
    err = capsys.readouterr().err
    assert "prefdata" in err and "12/12" in err and "rows/s" in err
    LocalExecutor(tmp_path / "b", shard_rows=5).run(stages(), make_pools(12))
    assert capsys.readouterr().err == ""  # not a terminal here


def test_open_workdir_matches_the_result(tmp_path):
    result = LocalExecutor(tmp_path / "w", shard_rows=5).run(stages(), make_pools(23))
    info = open_workdir(tmp_path / "w")
    assert info.complete and info.num_shards == 5
    assert info.outputs == result.output_paths and info.rejects == result.rejects_paths
    assert info.funnel.to_list() == result.funnel.to_list()
    assert [s["name"] for s in info.stages] == ["CountCandidates", "Slow", "DropEvery"]
    assert info.stages[1]["config"] == {"suffix": "!"}
    assert info.read().equals(result.read()) and info.read_rejects().equals(result.rejects())
    with pytest.raises(FileNotFoundError, match="not a prefdata work directory"):
        open_workdir(tmp_path)


def _done(workdir: Path, stage_index: int) -> set[int]:
    """Shards the manifest records as done for a stage of the latest pipeline."""
    try:
        m = json.loads((workdir / MANIFEST).read_text())
    except FileNotFoundError:
        return set()
    if len(m["pipeline"]) <= stage_index:
        return set()
    return {int(s) for s in m["stages"][m["pipeline"][stage_index]]["shards"]}


@pytest.mark.parametrize("checkpoint", ["all", "auto"])
def test_sigkill_then_rerun_gives_exactly_the_uninterrupted_rows(tmp_path, checkpoint):
    """A real subprocess is killed with SIGKILL mid-run; the rerun must finish with the same
    files, rows and funnel as an uninterrupted run, recomputing only unrecorded shards."""
    table = make_pools(200)  # 40 shards of 5
    src = tmp_path / "pools.parquet"
    pq.write_table(table, src, row_group_size=16)
    killed, ref = tmp_path / "killed", tmp_path / "ref"
    job = [sys.executable, str(JOB), "--input", str(src), "--shard-rows", "5"]
    job += ["--checkpoint", checkpoint]

    # hold_from_row blocks the stage at shard 30, so the run cannot finish before the kill
    proc = subprocess.Popen(
        [
            *job,
            "--workdir",
            str(killed),
            "--sleep",
            "0.02",
            "--hold-from-row",
            "150",
            "--log",
            str(tmp_path / "killed.tsv"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while len(_done(killed, 2)) < 5:
            assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
            assert time.monotonic() < deadline, "the job made no progress"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()

    at_kill = {i: _done(killed, i) for i in range(3)}
    assert 5 <= len(at_kill[2]) < 40
    # a temp file as a kill mid-write leaves it; the rerun must neither count nor keep it
    stage_dir = next((killed / "stages").glob("02-*"))
    (stage_dir / ".shard-00039.arrow.x1y2.tmp").write_bytes(b"partial")

    log = tmp_path / "rerun.tsv"
    done = subprocess.run(
        [*job, "--workdir", str(killed), "--log", str(log)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rerun = calls(log)
    for i, name in enumerate(["CountCandidates", "Slow", "DropEvery"]):
        assert {s for st, s in rerun if st == name} == set(range(40)) - at_kill[i], name
    assert max(rerun.values()) == 1

    uninterrupted = LocalExecutor(ref, shard_rows=5, checkpoint=checkpoint).run(stages(), src)
    resumed = open_workdir(killed)
    assert resumed.complete and list(killed.rglob("*.tmp")) == []
    assert set(files(killed)) == manifest_files(killed)  # every file on disk is recorded
    assert files(killed) == files(ref)  # same paths (same keys), same bytes
    assert resumed.read().equals(uninterrupted.read())
    assert resumed.read_rejects().equals(uninterrupted.rejects())
    assert resumed.funnel.to_list() == uninterrupted.funnel.to_list()
    assert resumed.funnel.entries[-1].rows_out == 200 - 67
    assert uninterrupted.read().equals(in_memory(table, stages())[0])


@pytest.mark.parametrize("stage", [CountCandidates(), Slow()])
def test_runtime_fields_do_not_change_the_fingerprint(stage):
    """The kill test relies on this: the killed and the rerun job differ only in them."""
    import dataclasses

    changed = dataclasses.replace(stage, log="x")
    assert changed.fingerprint == stage.fingerprint


def test_dataset_level_fits_run_over_every_shard(tmp_path):
    """Six pools share one long response: as one table it is repeated across prompts, as two
    shards of three it is not. Fitted per shard, the flags would depend on shard_rows, so
    the executor fits the unfitted stage over every shard first (one fit pass), and the
    output is the one-shard output, as with a stage fitted by hand."""
    from prefdata.filter.degenerate import FlagDegenerate, RepeatedResponsesFit

    same = "the very same long response, word for word"
    table = make_pools(6)
    cands = [[{**c, "response": same} for c in row] for row in table["candidates"].to_pylist()]
    col = pa.array(cands, table.schema.field("candidates").type)
    table = table.set_column(table.schema.get_field_index("candidates"), "candidates", col)
    by_executor = LocalExecutor(tmp_path / "a", shard_rows=3).run([FlagDegenerate()], table)
    assert len(by_executor.output_paths) == 2
    whole = LocalExecutor(tmp_path / "b", shard_rows=6).run([FlagDegenerate()], table).read()
    assert by_executor.read().equals(whole)
    fitted = FlagDegenerate(repeated=RepeatedResponsesFit().update(table).finalize())
    sharded = LocalExecutor(tmp_path / "c", shard_rows=3).run([fitted], table).read()
    assert sharded.equals(whole)
    flags = [f for row in sharded["candidates"].to_pylist() for c in row for f in c["flags"]]
    assert flags.count("repeated_across_prompts") == sum(len(r) for r in cands)


def test_internal_shards_are_arrow_ipc_files_and_a_resumed_run_reads_them(tmp_path):
    """Input copies, stage outputs and rejects, and ingest pool shards are Arrow IPC files
    (record batches of at most 64k rows), their sizes recorded; a rerun with a stage added
    resumes from them and gives the in-memory result."""
    from prefdata.execute.ingest import Ingest, run_ingest

    table, work = make_pools(53), tmp_path / "w"
    first = LocalExecutor(work, shard_rows=7, checkpoint="all").run(stages()[:2], table)
    written = sorted(p for p in (work / "stages").rglob("*") if p.is_file())
    written += sorted((work / "input").glob("*"))
    assert written and all(p.suffix == ".arrow" for p in written)
    for p in written:
        assert p.read_bytes()[:6] == b"ARROW1"
        pa.ipc.open_file(p).read_all()  # the file format, with its footer
    m = json.loads((work / MANIFEST).read_text())
    for rec in m["stages"].values():
        for s, counts in rec["shards"].items():
            out, rejects = (
                work / rec["dir"] / f"shard-{s}.arrow",
                work / rec["dir"] / "rejects" / f"shard-{s}.arrow",
            )
            assert counts["bytes"] == [out.stat().st_size, rejects.stat().st_size]
    assert all(p.suffix == ".arrow" for p in first.output_paths)

    log = tmp_path / "calls.tsv"
    resumed = LocalExecutor(work, shard_rows=7).run(stages(log=str(log)), table)
    assert {stage for stage, _ in calls(log)} == {"DropEvery"}  # read from the shards
    out, rejects, funnel = in_memory(table, stages())
    assert resumed.read().equals(out) and resumed.rejects().equals(rejects)
    assert resumed.funnel.to_list() == funnel

    src = tmp_path / "pairs.parquet"
    pq.write_table(
        pa.table({"prompt": ["a", "b"], "chosen": ["x", "y"], "rejected": ["z", "w"]}), src
    )
    ingested = run_ingest(Ingest(src, "pairs"), tmp_path / "ingest")
    assert [p.suffix for p in ingested.pool_paths] == [".arrow"]
    assert pa.ipc.open_file(ingested.pool_paths[0]).num_record_batches >= 1


@dataclass(frozen=True)
class ThreadOf(Stage):
    """Records the thread each shard ran on (a list passed in, not fingerprinted)."""

    seen: list = field(default_factory=list, metadata={"fingerprint": False}, compare=False)

    def process(self, table: pa.Table) -> pa.Table:
        time.sleep(0.05)  # long enough for a second lane to take the next shard
        self.seen.append((table["prompt_id"][0].as_py(), threading.current_thread().name))
        return table


@dataclass(frozen=True)
class ThreadOfAlone(ThreadOf):
    concurrent = False


@pytest.mark.skipif(
    len(os.sched_getaffinity(0)) < 2, reason="one core: shards run one at a time anyway"
)
def test_cheap_shards_run_on_several_threads_with_the_sequential_output(tmp_path):
    """Cheap stages run several shards at once (one lane per core), and the files, rejects
    and funnel are those of one shard at a time; a stage that is not ``concurrent`` keeps
    every shard on the calling thread (as ``checkpoint="all"`` does)."""
    table = make_pools(53)
    seen: list = []
    together = LocalExecutor(tmp_path / "a", shard_rows=5).run([*stages(), ThreadOf(seen)], table)
    assert {name for _, name in seen} >= {"prefdata-stage_0", "prefdata-stage_1"}
    alone: list = []
    one_lane = LocalExecutor(tmp_path / "b", shard_rows=5).run(
        [*stages(), ThreadOfAlone(alone)], table
    )
    assert {name for _, name in alone} == {threading.main_thread().name}
    assert len(alone) == len(seen) == 11
    kept: list = []
    LocalExecutor(tmp_path / "c", shard_rows=5, checkpoint="all").run(
        [*stages(), ThreadOf(kept)], table
    )
    assert {name for _, name in kept} == {threading.main_thread().name}

    def shared(work: Path) -> dict[str, bytes]:  # the last stage's folder is named for it
        return {k: v for k, v in files(work).items() if "ThreadOf" not in k}

    assert len(shared(tmp_path / "a")) == 11 + 3 * 11  # input shards, 3 stages' rejects
    assert shared(tmp_path / "a") == shared(tmp_path / "b")
    assert together.funnel.to_list()[:-1] == one_lane.funnel.to_list()[:-1]
    assert together.read().equals(in_memory(table, stages())[0])


def test_a_stale_output_list_is_not_taken_for_the_rewritten_files(tmp_path):
    """A finished run's ``output_paths`` carry its identity (a run over them hashes
    nothing), but a list kept from before its producer reran on changed input (the same
    paths, rewritten) is hashed byte by byte: the next run sees the new rows."""
    a = LocalExecutor(tmp_path / "a", shard_rows=7)
    kept = a.run(stages(), make_pools(20)).output_paths
    b = LocalExecutor(tmp_path / "b", shard_rows=7)
    before = b.run([Slow(suffix="?")], kept).read()
    again = a.run(stages(), make_pools(20, start=100))
    assert [str(p) for p in again.output_paths] == [str(p) for p in kept]  # same paths
    after = b.run([Slow(suffix="?")], kept).read()
    assert not after.equals(before)
    assert after.equals(Pipeline([Slow(suffix="?")]).run(again.read()).table)
