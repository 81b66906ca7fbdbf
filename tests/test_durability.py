"""What is synced to disk (prefdata/io/atomic.py): the exports a user keeps, not the work
directory's files, which a resumed run verifies by the sizes its manifests record and
computes again when a machine's crash cut one short."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pipeline_job import make_pools, stages

import prefdata.io.atomic as atomic
from prefdata.construct.recorded import RecordedPairs
from prefdata.execute import Ingest, LocalExecutor
from prefdata.io.export import ShardedExport


@pytest.fixture
def small_batches(monkeypatch):
    """Read batches of 50 rows (a row group each), so an ingest has several."""
    from prefdata.io import readers

    monkeypatch.setattr(readers, "BATCH_ROWS", 50)


def pairs_file(tmp_path: Path, n: int = 400) -> Path:
    path = tmp_path / "pairs.parquet"
    rows = [
        {"prompt": f"question {i % (n // 4)}", "chosen": f"good {i}", "rejected": f"bad {i}"}
        for i in range(n)
    ]
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=50)
    return path


def test_exports_are_synced_and_work_files_are_not(tmp_path, monkeypatch):
    synced: list[Path] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(Path(os.readlink(f"/proc/self/fd/{fd}")))
        real(fd)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    out, work = tmp_path / "out", tmp_path / "work"
    sink = ShardedExport("trl-dpo", out)
    source = Ingest(pairs_file(tmp_path), "pairs", partition_bytes=4096)
    LocalExecutor(work, shard_rows=60).run([RecordedPairs()], source, sink=sink)
    exported = sink.result().paths
    assert len(exported) > 1 and len(list(work.rglob("*.arrow"))) > 10
    # each export's temp file, synced before it took the export's name
    assert sorted(p.parent for p in synced) == sorted(p.parent for p in exported)
    assert sorted(p.name.split(".")[1] for p in synced) == sorted(p.stem for p in exported)


def cut_short(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_a_cut_short_ingest_rejects_file_starts_the_ingest_over(tmp_path, small_batches):
    source = Ingest(pairs_file(tmp_path), "pairs", partition_bytes=4096)
    clean = LocalExecutor(tmp_path / "clean").run([], source)
    work = tmp_path / "w"
    LocalExecutor(work).run([], source)
    victim = work / "ingest" / "rejects" / "read-00001.arrow"
    assert victim.exists()
    cut_short(victim)
    again = LocalExecutor(work).run([], source)
    assert victim.read_bytes() == (tmp_path / "clean" / victim.relative_to(work)).read_bytes()
    assert again.rejects().equals(clean.rejects()) and again.read().equals(clean.read())


def test_a_cut_short_input_copy_is_copied_again(tmp_path):
    """The stages' files lost too, so the rerun needs the input copies."""
    table, work = make_pools(40), tmp_path / "w"
    clean = LocalExecutor(tmp_path / "clean", shard_rows=10).run(stages(), table)
    LocalExecutor(work, shard_rows=10).run(stages(), table)
    shutil.rmtree(work / "stages")
    cut_short(work / "input" / "shard-00001.arrow")
    again = LocalExecutor(work, shard_rows=10).run(stages(), table)
    assert again.read().equals(clean.read()) and again.rejects().equals(clean.rejects())


def test_a_cut_short_spill_file_starts_the_ingest_over(tmp_path, monkeypatch, small_batches):
    """Stopped after the read pass, a spill file cut short: the rerun notices it by its
    recorded size and ingests again, ending with the files of an uninterrupted run."""
    import prefdata.execute.ingest as ing

    source = Ingest(pairs_file(tmp_path), "pairs", partition_bytes=4096)
    clean = ing.run_ingest(source, tmp_path / "clean")

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(ing, "_build_pass", stop)
        with pytest.raises(KeyboardInterrupt):
            ing.run_ingest(source, tmp_path / "w")
    spills = sorted((tmp_path / "w" / "spill").glob("*.arrow"))
    assert len(spills) > 1
    cut_short(spills[1])
    again = ing.run_ingest(source, tmp_path / "w")
    for got, want in zip(
        again.pool_paths + again.rejects_paths,
        clean.pool_paths + clean.rejects_paths,
        strict=True,
    ):
        assert got.read_bytes() == want.read_bytes()
    assert not (tmp_path / "w" / "spill").exists()
    assert not any(
        k.startswith("spill/")
        for k in json.loads((tmp_path / "w" / "manifest.json").read_text())["files"]
    )
