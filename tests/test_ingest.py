"""Ingest inside the executor: a raw source and its layout become pool shards in two
streamed passes (read batches into partitioned spill files, build one pool shard per
partition), with the same pools, rejects and funnel as the in-memory conversion, byte
for byte the same on a rerun, and resumable after SIGKILL without recomputing what was
finished."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from prefdata.execute import Ingest, LocalExecutor
from prefdata.execute.ingest import run_ingest
from prefdata.filter.degenerate import FlagDegenerate
from prefdata.io import readers
from prefdata.io.readers import read_batches, read_pools, read_records
from prefdata.io.shards import read_files

ROOT = Path(__file__).resolve().parents[1]
ALPACA = dict(
    prompt_col="instruction",
    response_col="output",
    generator_col="generator",
    score_cols=["judge_pref"],
)


def pairs_table(n: int = 300) -> pa.Table:
    """Pairs with merges (prompts in several rows), margins, per-side scores and bad rows."""
    rows = []
    for i in range(n):
        prompt = f"question {i % (n // 3)}"
        rows.append(
            {
                "prompt": None if i % 97 == 5 else prompt,
                "chosen": f"good {i}",
                "rejected": "" if i % 50 == 7 else f"bad {i}",
                "m": float("nan") if i % 61 == 3 else i / 7,
                "sc": float(i),
                "sr": None if i % 11 == 0 else i - 0.5,
            }
        )
    return pa.Table.from_pylist(rows)


PAIRS = dict(margin_col="m", chosen_score_col="sc", rejected_score_col="sr")


def by_prompt(table: pa.Table) -> dict:
    return {row["prompt_id"]: row for row in table.to_pylist()}


def sorted_rejects(table: pa.Table) -> list:
    return sorted(table.to_pylist(), key=lambda r: (r["row"], r["stage"]))


def ingest(tmp_path: Path, source, layout: str, name: str = "w", **options):
    result = LocalExecutor(tmp_path / name).run([], Ingest(source, layout, **options))
    return result, result.read(), result.rejects()


@pytest.mark.parametrize("partition_bytes", [64 << 20, 4096])
def test_pairs_ingest_gives_the_in_memory_pools(tmp_path, partition_bytes):
    raw = pairs_table()
    path = tmp_path / "pairs.parquet"
    pq.write_table(raw, path, row_group_size=64)  # five batches
    ref = read_pools(path, "pairs", **PAIRS)
    result, pools, rejects = ingest(
        tmp_path, path, "pairs", partition_bytes=partition_bytes, **PAIRS
    )
    plan = json.loads((tmp_path / "w" / "ingest" / "manifest.json").read_text())
    assert (plan["partitions"] > 1) == (partition_bytes == 4096)
    if plan["partitions"] == 1:
        assert pools.equals(ref.table)  # one partition: the very same table
    assert by_prompt(pools) == by_prompt(ref.table)
    assert sorted_rejects(rejects) == sorted_rejects(ref.rejects)
    assert result.funnel.to_list()[:2] == ref.funnel.to_list()
    merged = [
        json.loads(p["metadata"]) for p in pools.to_pylist() if "pairs" in (p["metadata"] or "")
    ]
    assert merged and all(len(m["pairs"]) >= 2 for m in merged)


@pytest.mark.shared_data
@pytest.mark.parametrize("partition_bytes", [64 << 20, 1 << 20])
def test_shared_data_ingest_gives_the_in_memory_pools(tmp_path, shared_data, partition_bytes):
    alpaca = shared_data / "alpaca_eval_pool.parquet"
    ref = read_pools(alpaca, "long", **ALPACA)
    result, pools, rejects = ingest(
        tmp_path, alpaca, "long", partition_bytes=partition_bytes, **ALPACA
    )
    assert by_prompt(pools) == by_prompt(ref.table)
    assert result.funnel.to_list() == ref.funnel.to_list()
    hh = shared_data / "hh_rlhf_harmless_test.jsonl.gz"
    ref = read_pools(hh, "hh")
    result, pools, rejects = ingest(tmp_path, hh, "hh", "hh", partition_bytes=partition_bytes)
    assert by_prompt(pools) == by_prompt(ref.table)
    assert sorted_rejects(rejects) == sorted_rejects(ref.rejects)
    assert result.funnel.to_list() == ref.funnel.to_list()


def test_given_ids_that_clash_across_partitions_are_rejected_with_their_record(tmp_path):
    """A given prompt id naming two prompts: the later rows are rejected wherever they are,
    with the input row as the record, exactly as in memory."""
    rows = [
        {
            "id": f"q{i % 40}",
            "prompt": f"p{i % 40}" if i < 150 else f"other {i}",
            "response": f"r{i}",
        }
        for i in range(200)
    ]
    raw = pa.Table.from_pylist(rows)
    ref = read_pools(raw, "long", id_col="id")
    assert ref.rejects.num_rows == 50
    result, pools, rejects = ingest(tmp_path, raw, "long", partition_bytes=512, id_col="id")
    assert by_prompt(pools) == by_prompt(ref.table)
    assert sorted_rejects(rejects) == sorted_rejects(ref.rejects)


def test_ultrafeedback_ingest(tmp_path):
    comp = lambda r, s: {"response": r, "model": "m", "overall_score": s}  # noqa: E731
    raw = pa.Table.from_pylist(
        [
            {"instruction": f"q{i % 7}", "completions": [comp(f"a{i}", i), comp(f"b{i}", None)]}
            for i in range(30)
        ]
        + [{"instruction": "lonely", "completions": []}]
    )
    ref = read_pools(raw, "ultrafeedback")
    result, pools, _ = ingest(tmp_path, raw, "ultrafeedback", partition_bytes=256)
    assert by_prompt(pools) == by_prompt(ref.table)
    assert result.funnel.to_list() == ref.funnel.to_list()


def test_jsonl_is_streamed_in_batches_with_the_same_rows_and_rejects(tmp_path, monkeypatch):
    path = tmp_path / "long.jsonl.gz"
    lines = []
    for i in range(120):
        if i % 17 == 3:
            lines.append("{not json")
        elif i % 23 == 4:
            lines.append("")
        else:
            lines.append(json.dumps({"prompt": f"q{i % 9}", "response": f"r{i}", "rm": i}))
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    monkeypatch.setattr(readers, "BATCH_BYTES", 300)
    batches = list(read_batches(path))
    assert len(batches) > 5
    raw, bad = read_records(path)
    assert pa.concat_tables([b.table for b in batches]).equals(raw)
    assert pa.concat_tables([b.rejects for b in batches]).equals(bad)
    ref = read_pools(path, "long", score_cols=["rm"])
    result, pools, rejects = ingest(tmp_path, path, "long", score_cols=["rm"])
    assert pools.equals(ref.table)
    assert sorted_rejects(rejects) == sorted_rejects(ref.rejects)
    assert result.funnel.to_list() == ref.funnel.to_list()


def test_a_batch_whose_rows_lack_a_column_reads_it_as_nulls(tmp_path, monkeypatch):
    """JSON rows may all lack a key in one batch (a file joined from two sources, the
    prompt named otherwise in the second half). The read gives that batch the earlier
    batches' columns as nulls, as a whole read does: its rows are rejected by the layout
    ("missing prompt"), where the batch's own columns stopped the whole ingest before
    (``KeyError: no prompt column``)."""
    path = tmp_path / "joined.jsonl"
    rows = [{"prompt": f"q{i % 7}", "response": f"r{i}", "rm": i} for i in range(40)]
    rows += [{"instruction": f"i{i}", "response": f"s{i}", "rm": i} for i in range(30)]
    rows += [
        {"prompt": f"q{i % 7}", "response": f"t{i}", "rm": i, "generator": "g"} for i in range(20)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setattr(readers, "BATCH_BYTES", 300)
    batches = list(read_batches(path))
    assert len(batches) > 8
    own = [b.table.column_names for b in readers._json_line_batches([path])]
    assert ["instruction", "response", "rm"] in own  # a batch without the prompt key
    raw, bad = read_records(path)
    assert pa.concat_tables([b.table for b in batches], promote_options="default").equals(raw)
    ref = read_pools(path, "long", score_cols=["rm"])
    assert sum(r["field"] == "prompt" for r in ref.rejects.to_pylist()) == 30
    result, pools, rejects = ingest(tmp_path, path, "long", score_cols=["rm"])
    assert pools.equals(ref.table)
    assert without_nulls(rejects) == without_nulls(ref.rejects)
    assert result.funnel.to_list() == ref.funnel.to_list()


def without_nulls(rejects: pa.Table) -> list:
    """Sorted rejects, their records without null fields: a streamed reject's record has
    the columns known up to its batch, a whole read's every column of the file."""
    rows = sorted_rejects(rejects)
    for r in rows:
        r["record"] = {k: v for k, v in json.loads(r["record"]).items() if v is not None}
    return rows


@pytest.mark.parametrize("batch_bytes", [300, 64 << 20])
def test_every_reject_names_its_input_line(tmp_path, monkeypatch, batch_bytes):
    """Read rejects and layout rejects use one numbering, the 0-based input line, in
    streamed batches as in memory (a layout reject after bad lines is not shifted up)."""
    path = tmp_path / "long.jsonl"
    lines, want = [], {}
    for i in range(60):
        if i % 13 == 2:
            lines.append("{not json")
            want[i] = "read"
        elif i % 19 == 5:
            lines.append("   ")  # blank: not a row, but it keeps its line number
        elif i % 11 == 7:
            lines.append(json.dumps({"prompt": "", "response": f"r{i}", "rm": i}))
            want[i] = "layout:long"
        else:
            lines.append(json.dumps({"prompt": f"q{i % 5}", "response": f"r{i}", "rm": i}))
    path.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(readers, "BATCH_BYTES", batch_bytes)
    _, _, rejects = ingest(tmp_path, path, "long", score_cols=["rm"])
    got = {r["row"]: r["stage"] for r in rejects.to_pylist()}
    assert got == want
    layout = [r for r in rejects.to_pylist() if r["stage"] == "layout:long"]
    assert {r["row"] for r in layout} == {7, 18, 29, 40, 51}
    ref = read_pools(path, "long", score_cols=["rm"])
    assert {r["row"]: r["stage"] for r in ref.rejects.to_pylist()} == want


def files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def test_a_rerun_is_byte_identical_and_recomputes_nothing(tmp_path):
    path = tmp_path / "pairs.parquet"
    pq.write_table(pairs_table(), path, row_group_size=64)
    source = Ingest(path, "pairs", partition_bytes=4096, **PAIRS)
    first = run_ingest(source, tmp_path / "a")
    run_ingest(source, tmp_path / "b")
    assert files(tmp_path / "a") == files(tmp_path / "b")
    stamps = {p: p.stat().st_mtime_ns for p in first.pool_paths}
    again = run_ingest(source, tmp_path / "a")
    assert {p: p.stat().st_mtime_ns for p in again.pool_paths} == stamps


KILLER = """
import os, signal, sys
from pathlib import Path
import prefdata.execute.ingest as ing
from prefdata.io.shards import write_shard as real_write

calls = {"n": 0}
kill_at = int(sys.argv[3])

def write_shard(table, path):
    calls["n"] += 1
    if calls["n"] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return real_write(table, path)

ing.write_shard = write_shard
source = ing.Ingest(Path(sys.argv[1]), "pairs", partition_bytes=4096, margin_col="m",
                    chosen_score_col="sc", rejected_score_col="sr")
ing.run_ingest(source, Path(sys.argv[2]))
"""


@pytest.mark.parametrize("kill_at", [5, 8, 13])
def test_sigkill_during_ingest_then_rerun_gives_the_uninterrupted_output(tmp_path, kill_at):
    """Killed at the kill_at-th file write (in the read pass or the build pass), a rerun
    finishes with exactly the files of an uninterrupted run, and what was recorded before
    the kill is not written again."""
    path = tmp_path / "pairs.parquet"
    pq.write_table(pairs_table(), path, row_group_size=64)
    script = tmp_path / "killer.py"
    script.write_text(textwrap.dedent(KILLER))
    work = tmp_path / "killed"
    proc = subprocess.run(
        [sys.executable, str(script), str(path), str(work), str(kill_at)],
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    plan = json.loads((work / "manifest.json").read_text())
    done = [work / "rejects" / f"read-{b}.arrow" for b in plan["batches"]]
    done += [work / "pools" / f"shard-{p}.arrow" for p in plan["built"]]
    assert done  # something was recorded before the kill
    stamps = {p: p.stat().st_mtime_ns for p in done}
    source = Ingest(path, "pairs", partition_bytes=4096, **PAIRS)
    run_ingest(source, work)
    run_ingest(source, tmp_path / "clean")
    assert files(work) == files(tmp_path / "clean")
    assert {p: p.stat().st_mtime_ns for p in done} == stamps


def test_a_changed_source_starts_over(tmp_path):
    path = tmp_path / "pairs.parquet"
    pq.write_table(pairs_table(60), path)
    first = run_ingest(Ingest(path, "pairs"), tmp_path / "w")
    pq.write_table(pairs_table(90), path)
    second = run_ingest(Ingest(path, "pairs"), tmp_path / "w")
    assert second.funnel.entries[0].rows_in == 90 != first.funnel.entries[0].rows_in
    assert read_files(second.pool_paths).num_rows == read_pools(path, "pairs").table.num_rows


@pytest.mark.shared_data
def test_stages_after_ingest_see_every_pool(tmp_path, shared_data):
    alpaca = shared_data / "alpaca_eval_pool.parquet"
    source = Ingest(alpaca, "long", partition_bytes=1 << 20, **ALPACA)
    result = LocalExecutor(tmp_path / "w", shard_rows=300).run([FlagDegenerate()], source)
    names = [e["stage"] for e in result.funnel.to_list()]
    assert names == ["read", "layout:long", "FlagDegenerate"]
    assert result.read().num_rows == 805


def test_a_damaged_checkpoint_is_noticed_and_computed_again(tmp_path):
    """A pool shard or a stage's output cut short after it was recorded (a full disk, a
    partial copy): the rerun notices the size, computes it again and ends with the files
    of an undamaged run."""
    path = tmp_path / "pairs.parquet"
    pq.write_table(pairs_table(), path, row_group_size=64)
    source = Ingest(path, "pairs", partition_bytes=4096, **PAIRS)
    stages = [FlagDegenerate(repeated_min_prompts=None)]
    clean = LocalExecutor(tmp_path / "clean", shard_rows=40).run(stages, source)
    work = tmp_path / "damaged"
    first = LocalExecutor(work, shard_rows=40).run(stages, source)
    for victim in (first.output_paths[1], work / "ingest" / "pools" / "shard-00002.arrow"):
        data = victim.read_bytes()
        victim.write_bytes(data[: len(data) // 2])
        again = LocalExecutor(work, shard_rows=40).run(stages, source)
        assert again.read().equals(clean.read())
        assert again.funnel.to_list() == clean.funnel.to_list()
    assert files(work / "ingest" / "pools") == files(tmp_path / "clean" / "ingest" / "pools")


@pytest.mark.parametrize("partition_bytes", [64 << 20, 256])
def test_contradictory_pairs_are_rejected_wherever_their_rows_are(tmp_path, partition_bytes):
    """A over B in one row and B over A in another, for one prompt, teach nothing: both
    rows are rejected naming each other (in memory, and in a streamed ingest whose
    batches hold the two rows apart); the prompt's other pairs are kept."""
    from prefdata.construct.recorded import RecordedPairs

    rows = [{"prompt": f"other {i}", "chosen": f"c{i}", "rejected": f"r{i}"} for i in range(40)]
    rows[3] = {"prompt": "Q", "chosen": "A", "rejected": "B"}
    rows[10] = {"prompt": "Q", "chosen": "C", "rejected": "D"}
    rows[37] = {"prompt": "Q", "chosen": "B", "rejected": "A"}
    rows[20] = {"prompt": "Q", "chosen": "A", "rejected": "B"}  # the same preference again
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ref = read_pools(path, "pairs")
    result = LocalExecutor(tmp_path / "w").run(
        [RecordedPairs()], Ingest(path, "pairs", partition_bytes=partition_bytes)
    )
    rejects = result.rejects()
    layout = [r for r in rejects.to_pylist() if r["stage"] == "layout:pairs"]
    assert [(r["row"], r["reason"]) for r in layout] == [
        (3, "contradicts row 37, which prefers this row's rejected response to its chosen one"),
        (20, "contradicts row 37, which prefers this row's rejected response to its chosen one"),
        (37, "contradicts row 3, which prefers this row's rejected response to its chosen one"),
    ]
    assert sorted_rejects(ref.rejects) == sorted_rejects(
        rejects.filter(pc.equal(rejects["stage"], "layout:pairs"))
    )
    pairs = result.read()
    q = pairs.filter(pc.equal(pairs["chosen"], "C")).to_pylist()
    assert len(q) == 1 and q[0]["rejected"] == "D"
    assert pairs.num_rows == 37 and result.funnel.entries[1].rows_rejected == 3


@pytest.mark.parametrize("partition_bytes", [64 << 20, 2048])
def test_a_saved_datasets_folder_streams_its_arrow_files(tmp_path, monkeypatch, partition_bytes):
    """A ``save_to_disk`` folder (a Dataset, or a split of a DatasetDict; rows selected and
    shuffled first) is read from its Arrow files in batches, without ``datasets``, with the
    same rows as ``datasets.load_from_disk`` and the same pools, rejects and funnel as the
    in-memory conversion."""
    datasets = pytest.importorskip("datasets")
    raw = pairs_table(300)
    ds = datasets.Dataset(raw).shuffle(seed=3).select(range(250))
    dd = datasets.DatasetDict({"train": ds, "test": datasets.Dataset(raw.slice(0, 20))})
    ds.save_to_disk(str(tmp_path / "one"), num_shards=3)  # several Arrow files
    dd.save_to_disk(str(tmp_path / "two"))
    assert len(readers.saved_dataset_files(tmp_path / "one")) > 2
    monkeypatch.setattr(readers, "BATCH_ROWS", 64)
    for source, split, want in [(tmp_path / "one", None, ds), (tmp_path / "two", "train", ds)]:
        batches = list(read_batches(source, split=split))
        assert len(batches) > 2
        got = pa.concat_tables([b.table for b in batches])
        assert json.dumps(got.to_pylist()) == json.dumps(want.with_format("arrow")[:].to_pylist())
        ref = read_pools(source, "pairs", split=split, **PAIRS)
        name = f"w-{split}-{partition_bytes}"
        result = LocalExecutor(tmp_path / name).run(
            [], Ingest(source, "pairs", split=split, partition_bytes=partition_bytes, **PAIRS)
        )
        assert by_prompt(result.read()) == by_prompt(ref.table)
        assert sorted_rejects(result.rejects()) == sorted_rejects(ref.rejects)
        assert result.funnel.to_list() == ref.funnel.to_list()
        plan = json.loads((tmp_path / name / "ingest" / "manifest.json").read_text())
        assert (plan["partitions"] > 1) == (partition_bytes < 1 << 20)  # streamed, partitioned
    with pytest.raises(ValueError, match=r"has splits \['train', 'test'\]; pass split="):
        next(read_batches(tmp_path / "two"))
    with pytest.raises(KeyError, match="no split 'dev'"):
        next(read_batches(tmp_path / "two", split="dev"))


def test_reading_a_saved_datasets_folder_does_not_import_datasets(tmp_path):
    pytest.importorskip("datasets")
    import datasets

    datasets.Dataset(pairs_table(30)).save_to_disk(str(tmp_path / "ds"))
    code = (
        "import sys; from prefdata.io.readers import read_batches; "
        f"n = sum(b.table.num_rows for b in read_batches({str(tmp_path / 'ds')!r})); "
        "print(n, 'datasets' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["30", "False"]


def test_a_damaged_saved_datasets_folder_is_one_clear_error(tmp_path):
    """What ``save_to_disk`` would not write is named: a state.json that is not JSON, a data
    file it lists that is gone, splits that are not a list of names."""
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "ds"
    datasets.Dataset(pairs_table(30)).save_to_disk(str(folder))
    state = (folder / "state.json").read_text()
    (folder / "state.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"ds/state.json: not valid JSON"):
        read_records(folder)
    (folder / "state.json").write_text(state)
    listed = json.loads(state)["_data_files"][0]["filename"]
    (folder / listed).rename(folder / "moved.arrow")
    with pytest.raises(FileNotFoundError, match=f"state.json lists {listed}, which is not there"):
        read_records(folder)
    (tmp_path / "dd").mkdir()
    (tmp_path / "dd" / "dataset_dict.json").write_text('{"splits": "train"}')
    with pytest.raises(ValueError, match="'splits' is not a list of names"):
        next(read_batches(tmp_path / "dd", split="train"))


def run_watching_opens(work: Path, stages: list, source: Ingest) -> tuple:
    """One run, and every file opened through ``builtins.open`` meanwhile (the way
    ``source_digest`` reads the bytes it hashes; shards are memory-mapped by Arrow)."""
    import builtins

    opened: list[Path] = []
    real_open = builtins.open

    def spy(file, *args, **kwargs):
        opened.append(Path(file))
        return real_open(file, *args, **kwargs)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(builtins, "open", spy)
        result = LocalExecutor(work, shard_rows=40).run(stages, source)
    return result, opened


def pairs_ingest(tmp_path: Path) -> Ingest:
    path = tmp_path / "pairs.parquet"
    pq.write_table(pairs_table(), path, row_group_size=64)
    return Ingest(path, "pairs", partition_bytes=4096, **PAIRS)


def test_runs_over_an_ingest_do_not_hash_its_pools_again(tmp_path):
    """The pools are a function of the ingest's digest (source, layout, options): the
    fit's identity and the pipeline's input digest come from it, and no pool file is
    read byte by byte (before, 565 MB of SHA-256 for long 200k x 8, twice)."""
    source = pairs_ingest(tmp_path)
    stages = [FlagDegenerate(repeated_min_prompts=2)]  # fitted over the pools
    first, opened = run_watching_opens(tmp_path / "w", stages, source)
    pools = tmp_path / "w" / "ingest" / "pools"
    assert len(list(pools.glob("*.arrow"))) > 1
    assert not [p for p in opened if pools in p.parents]
    assert source.source in opened  # the raw source is hashed, once per ingest
    again = LocalExecutor(tmp_path / "w", shard_rows=40).run(stages, source)
    assert again.read().equals(first.read())
    fits = list((tmp_path / "w" / "pipeline" / "fits").glob("*.fit"))
    assert len(fits) == 1  # the rerun loaded the fit: the same identity


def test_a_later_fit_does_not_hash_the_segment_before_it(tmp_path):
    """A second fitting stage fits over the first segment's outputs: their identity is
    the segment's own (stage keys and input digest), so no output file is read byte by
    byte for it, and a rerun loads both fits."""
    from prefdata.annotate import Normalise
    from prefdata.filter import DropFlagged

    source = pairs_ingest(tmp_path)
    stages = [FlagDegenerate(repeated_min_prompts=2), DropFlagged(), Normalise()]
    first, opened = run_watching_opens(tmp_path / "w", stages, source)
    segment = tmp_path / "w" / "pipeline" / "segments" / "01"
    assert list(segment.rglob("shard-*.arrow"))
    assert not [p for p in opened if segment in p.parents and p.suffix == ".arrow"]
    again = LocalExecutor(tmp_path / "w", shard_rows=40).run(stages, source)
    assert again.read().equals(first.read())
    assert len(list((tmp_path / "w" / "pipeline" / "fits").glob("*.fit"))) == 2


def test_known_files_are_identified_by_their_producers_digest(tmp_path):
    """The producer's digest stands for the bytes while the files are the ones it made; a
    file rewritten since is hashed byte by byte (a stale list after a rerun on changed
    input must not pass for the new files)."""
    from prefdata.execute.inputs import KnownFiles, source_digest

    path = tmp_path / "shard-00000.arrow"
    path.write_bytes(b"first")
    a = source_digest(KnownFiles([path], digest="a" * 32), 0)
    assert a == source_digest(KnownFiles([path], digest="a" * 32), 0)
    assert a != source_digest(KnownFiles([path], digest="b" * 32), 0)
    assert a != source_digest(KnownFiles([path], digest="a" * 32), 10)
    stale = KnownFiles([path], digest="a" * 32)
    (tmp_path / "new").write_bytes(b"second")
    os.replace(tmp_path / "new", path)  # how shards are rewritten: a new file renamed in
    assert not stale.current()
    assert source_digest(stale, 0) == source_digest([path], 0) != a


@pytest.fixture
def fresh_hub_cache():
    readers.hub_dataset.cache_clear()
    yield
    readers.hub_dataset.cache_clear()


def test_a_hub_dataset_streams_from_the_arrow_files_datasets_keeps(
    tmp_path, monkeypatch, fresh_hub_cache
):
    """The Hub cannot be reached here (a fake at the network's boundary):
    ``datasets.load_dataset("org/pairs")`` becomes the same call on a local Parquet file,
    so what follows the download is datasets' own code. The ingest reads the Arrow files
    datasets keeps, in partitions (memory bounded by a partition, not the dataset), loads
    the dataset once, and gives the pools and rejects of reading the name whole."""
    import datasets

    path = tmp_path / "pairs.parquet"
    pq.write_table(pairs_table(), path, row_group_size=64)
    real, calls = datasets.load_dataset, []

    def load_dataset(name, split=None, **kwargs):
        calls.append((name, split))
        assert name == "org/pairs" and not kwargs
        return real("parquet", data_files={"train": str(path)}, split=split,
                    cache_dir=str(tmp_path / "cache"))  # fmt: skip

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    source = Ingest("org/pairs", "pairs", split="train", partition_bytes=4096, **PAIRS)
    files = source.files()
    assert files and all(f.suffix == ".arrow" and f.is_relative_to(tmp_path) for f in files)
    assert source.estimate()[1] > 4096  # several partitions
    result = LocalExecutor(tmp_path / "w").run([], source)
    assert len(list((tmp_path / "w" / "ingest" / "pools").glob("*.arrow"))) > 1
    assert calls == [("org/pairs", "train")]
    ref = read_pools("org/pairs", "pairs", split="train", **PAIRS)  # the name, read whole
    assert by_prompt(result.read()) == by_prompt(ref.table)
    assert {r["source"] for r in ref.table.to_pylist()} == {"org/pairs:train"}
    assert sorted_rejects(result.rejects()) == sorted_rejects(ref.rejects)
    assert result.funnel.to_list() == ref.funnel.to_list()


def test_a_dataset_streams_only_when_its_rows_are_its_files(tmp_path):
    """A ``datasets.Dataset`` made from files streams them; a view (selected, shuffled,
    renamed) or one held in memory is read whole, with the rows the view has."""
    import datasets

    path = tmp_path / "pairs.parquet"
    pq.write_table(pairs_table(), path)
    ds = datasets.load_dataset("parquet", data_files=str(path), cache_dir=str(tmp_path / "c"))
    assert Ingest(ds, "pairs", split="train").files() == readers.dataset_files(ds["train"])
    assert readers.dataset_files(ds["train"]) is not None
    train = ds["train"]
    views = [
        train.select(range(30)),
        train.shuffle(seed=0),
        train.shuffle(seed=0, keep_in_memory=True),  # the same rows, in another order
        train.rename_column("chosen", "better"),
        datasets.Dataset.from_dict(train[:40]),
    ]
    assert [readers.dataset_files(v) for v in views] == [None] * 5
    result, pools, _ = ingest(tmp_path, views[0], "pairs", **PAIRS)
    assert by_prompt(pools) == by_prompt(read_pools(views[0], "pairs", **PAIRS).table)
