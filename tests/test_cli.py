"""The ``prefdata`` command: convert, inspect, validate and sql, run as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prefdata.cli import main, rejects_path
from prefdata.io.parquet import read_parquet, write_parquet
from prefdata.schema import pool_schema


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "prefdata.cli", *args], capture_output=True, text=True
    )


@pytest.fixture
def long_jsonl(tmp_path):
    rows = [
        {"prompt": "Hi", "response": "Hello", "generator": "a", "rm": 1.0},
        {"prompt": "Hi", "response": "Hey", "generator": "b", "rm": None},
        {"prompt": "Bye", "response": "Goodbye", "generator": "a", "rm": 0.5},
        {"prompt": "", "response": "orphan", "generator": "a", "rm": 0.1},
    ]
    path = tmp_path / "long.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n{not json\n")
    return path


def test_convert_writes_pools_rejects_and_a_funnel_line(long_jsonl, tmp_path):
    out = tmp_path / "pools.parquet"
    proc = _cli(
        "convert",
        str(long_jsonl),
        "--layout",
        "long",
        "--score-col",
        "rm",
        "--generator-col",
        "generator",
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.strip()
    assert "\n" not in line
    assert "2 pools, 3 candidates" in line and "2 rejects" in line
    pools = read_parquet(out)
    assert pools.num_rows == 2
    scores = [[c["scores"]["rm"] for c in cs] for cs in pools["candidates"].to_pylist()]
    assert scores == [[1.0, None], [0.5]]
    rejects = pq.read_table(rejects_path(out)).to_pylist()
    reasons = sorted(r["stage"] + ":" + (r["field"] or "") for r in rejects)
    assert reasons == ["layout:long:prompt", "read:"]  # empty prompt; invalid JSON line
    assert any("line 5" in r["reason"] and "invalid JSON" in r["reason"] for r in rejects)


def test_convert_pairs_with_per_side_scores(tmp_path, capsys):
    """ultrafeedback_binarized's shape: score_chosen / score_rejected land on their side."""
    rows = []
    for prompt, chosen, rejected, sc, sr in [
        ("Q1", "good", "bad", 8.0, 3.5),
        ("Q2", "fine", "poor", None, 1.0),
        ("Q3", "ok", "meh", float("nan"), 2.0),
    ]:
        u = {"role": "user", "content": prompt}
        rows.append(
            {
                "prompt": prompt,
                "chosen": [u, {"role": "assistant", "content": chosen}],
                "rejected": [u, {"role": "assistant", "content": rejected}],
                "score_chosen": sc,
                "score_rejected": sr,
            }
        )
    src = tmp_path / "ufb.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "pools.parquet"
    args = ["convert", str(src), "--layout", "pairs", "--out", str(out)]
    side = ["--chosen-score-col", "score_chosen", "--rejected-score-col", "score_rejected"]
    assert main([*args, *side, "--score-name", "rating"]) == 0
    assert "2 pools, 4 candidates" in capsys.readouterr().out
    scores = [
        [(c["response"], c["scores"]) for c in cs]
        for cs in read_parquet(out)["candidates"].to_pylist()
    ]
    assert scores == [
        [("good", {"preference": 1.0, "rating": 8.0}), ("bad", {"preference": 0.0, "rating": 3.5})],
        [
            ("fine", {"preference": 1.0, "rating": None}),
            ("poor", {"preference": 0.0, "rating": 1.0}),
        ],
    ]
    rejects = pq.read_table(rejects_path(out)).to_pylist()
    assert [(r["row"], r["field"]) for r in rejects] == [(2, "score_chosen")]
    # one side alone is refused with a clear message, before anything is written
    out2 = tmp_path / "one_side.parquet"
    assert main(["convert", str(src), "--layout", "pairs", "--out", str(out2), *side[:2]]) == 2
    assert "chosen_score_col needs rejected_score_col" in capsys.readouterr().err
    assert not out2.exists()


def test_inspect_reports_scores_and_json(long_jsonl, tmp_path, capsys):
    out = tmp_path / "pools.parquet"
    assert (
        main(
            ["convert", str(long_jsonl), "--layout", "long", "--score-col", "rm", "--out", str(out)]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["inspect", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["pools"] == 2 and report["candidates"] == 3
    assert report["scores"]["rm"] == {
        "count": 2,
        "nulls": 1,
        "mean": 0.75,
        "std": pytest.approx(0.353553, rel=1e-5),
        "min": 0.5,
        "max": 1.0,
    }
    assert main(["inspect", str(out)]) == 0
    assert "score rm: count=2" in capsys.readouterr().out


def test_validate_exit_status(tmp_path, capsys):
    good = pa.Table.from_pylist(
        [
            {
                "prompt_id": "p",
                "prompt": [{"role": "user", "content": "Q"}],
                "candidates": [
                    {"candidate_id": "c", "response": "A", "scores": {"rm": 1.0}, "flags": []}
                ],
            }
        ],
        schema=pool_schema(["rm"]),
    )
    bad = pa.Table.from_pylist(
        [
            {
                "prompt_id": "p",
                "prompt": [{"role": "assistant", "content": "Q"}],
                "candidates": [
                    {"candidate_id": "c", "response": None, "scores": {"rm": float("nan")}}
                ],
            }
        ],
        schema=pool_schema(["rm"]),
    )
    write_parquet(good, tmp_path / "good.parquet")
    write_parquet(bad, tmp_path / "bad.parquet")
    assert main(["validate", str(tmp_path / "good.parquet")]) == 0
    capsys.readouterr()
    assert main(["validate", str(tmp_path / "bad.parquet")]) == 1
    out = capsys.readouterr().out
    assert "row 0, field prompt" in out
    assert "candidates[0].response" in out and "candidates[0].scores.rm" in out


def test_sql_over_pools_and_rejects(long_jsonl, tmp_path, capsys):
    out = tmp_path / "pools.parquet"
    main(["convert", str(long_jsonl), "--layout", "long", "--out", str(out)])
    capsys.readouterr()
    assert main(["sql", str(out), "SELECT count(*) = 2 AS two_pools FROM pools"]) == 0
    assert "true" in capsys.readouterr().out
    assert main(["sql", str(out), "SELECT stage FROM rejects ORDER BY stage"]) == 0
    text = capsys.readouterr().out
    assert "layout:long" in text and "read" in text
    # queries cannot touch files
    assert main(["sql", str(out), "SELECT * FROM read_csv('/etc/passwd')"]) != 0


def test_sql_and_inspect_over_a_workdir(tmp_path, capsys):
    from prefdata.execute import LocalExecutor
    from prefdata.sql import Sql

    pools = pa.Table.from_pylist(
        [
            {
                "prompt_id": f"p{i}",
                "prompt": [{"role": "user", "content": f"Q{i}"}],
                "candidates": [{"candidate_id": "c", "response": "A", "scores": {"rm": float(i)}}],
            }
            for i in range(10)
        ],
        schema=pool_schema(["rm"]),
    )
    stage = Sql("SELECT * FROM pools WHERE candidates[1].scores.rm >= 4")
    LocalExecutor(tmp_path / "work", shard_rows=3).run([stage], pools)
    assert main(["inspect", str(tmp_path / "work"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["kind"] == "workdir" and report["pools"] == 6
    assert report["funnel"] == [{"stage": "Sql", "rows_in": 10, "rows_out": 6, "rows_rejected": 4}]
    sql = "SELECT count(*) = 4 AS four_rejects FROM rejects"
    assert main(["sql", str(tmp_path / "work"), sql]) == 0
    assert "true" in capsys.readouterr().out


def test_validate_pairs_and_refuse_trainer_exports(tmp_path, capsys):
    from prefdata.schema import PAIR_SCHEMA

    q = [{"role": "user", "content": "Q"}]
    pairs = pa.Table.from_pylist(
        [
            {"prompt_id": "p", "prompt": q, "chosen": "A", "rejected": "B", "strategy": "s"},
            {
                "prompt_id": "r",
                "prompt": [{"role": "assistant", "content": "Q"}],
                "chosen": "A",
                "rejected": None,
                "strategy": "s",
            },
        ],
        schema=PAIR_SCHEMA,
    )
    write_parquet(pairs, tmp_path / "pairs.parquet")
    assert main(["validate", str(tmp_path / "pairs.parquet")]) == 1
    out = capsys.readouterr().out
    assert "row 1, field prompt" in out and "row 1, field rejected" in out
    assert "2 pair rows, 2 errors" in out
    write_parquet(pairs.slice(0, 1), tmp_path / "ok.parquet")
    assert main(["validate", str(tmp_path / "ok.parquet")]) == 0
    trl = pa.table(
        {
            "prompt": [q],
            "chosen": [[{"role": "assistant", "content": "A"}]],
            "rejected": [[{"role": "assistant", "content": "B"}]],
        }
    )
    pq.write_table(trl, tmp_path / "trl.parquet")
    assert main(["validate", str(tmp_path / "trl.parquet")]) == 2
    assert "not a prefdata record table" in capsys.readouterr().err


def test_damaged_files_are_one_line_and_status_2(tmp_path, capsys):
    """A corrupt Parquet file and a duplicated column name: one line naming the problem
    (and the file), exit status 2, no traceback. A .jsonl.gz cut in half keeps the lines
    before the break and rejects the rest as one row."""
    import gzip

    good = gzip.compress(
        b"".join(b'{"prompt": "Q%d", "response": "A%d"}\n' % (i, i * 7) for i in range(2000))
    )
    truncated = tmp_path / "cut.jsonl.gz"
    truncated.write_bytes(good[: len(good) // 2])
    corrupt = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"prompt": ["Q"] * 50, "response": ["A"] * 50}), corrupt)
    data = bytearray(corrupt.read_bytes())
    data[4:40] = b"\x00" * 36  # the first data page
    corrupt.write_bytes(bytes(data))
    dup = tmp_path / "dup.parquet"
    names = ["prompt", "response", "response"]
    pq.write_table(
        pa.Table.from_arrays([pa.array(["Q"]), pa.array(["A"]), pa.array(["B"])], names=names), dup
    )
    out = tmp_path / "cut.parquet"
    assert main(["convert", str(truncated), "--layout", "long", "--out", str(out)]) == 0
    rejects = pq.read_table(tmp_path / "cut.rejects.parquet").to_pylist()
    assert len(rejects) == 1 and "cut.jsonl.gz breaks off here" in rejects[0]["reason"]
    assert pq.read_metadata(out).num_rows == rejects[0]["row"] > 0  # the lines before it
    capsys.readouterr()
    for path, expected in [(corrupt, "bad.parquet: "), (dup, "'response' appears 2 times")]:
        code = main(
            ["convert", str(path), "--layout", "long", "--out", str(tmp_path / "o.parquet")]
        )
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2, (path, err)
        assert len(err) == 1 and err[0].startswith("prefdata convert: error: "), err
        assert expected in err[0]


def test_inspect_and_sql_over_a_recipe_run(tmp_path, capsys):
    """The folder binarize.py checkpoints in (an ingest, then segments of two runs) is
    inspected as one run: the funnel from the input rows to the pairs, the pairs queryable,
    every rejects file (empty ones included) readable."""
    import importlib.util
    from pathlib import Path

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "binarize.py"
    spec = importlib.util.spec_from_file_location("binarize_for_cli", recipe)
    binarize = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(binarize)
    out = tmp_path / "out"
    assert binarize.main(["--sample", "--format", "trl-dpo", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["inspect", str(out / "work"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    stages = [e["stage"] for e in report["funnel"]]
    assert stages[:3] == ["read", "layout:long", "FlagDegenerate"] and "Pairs" in stages
    assert report["funnel"][0]["rows_in"] == 41 and report["rows"] == 12
    assert main(["sql", str(out / "work"), "SELECT count(*) AS n FROM pairs"]) == 0
    assert "12" in capsys.readouterr().out
    assert main(["sql", str(out / "work"), "SELECT count(*) AS n FROM rejects"]) == 0


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback_of_a_user_error(tmp_path, monkeypatch, capsys, how):
    """Without --debug a missing file is one line and status 2; with --debug (or
    PREFDATA_DEBUG=1) the exception propagates, traceback and all."""
    argv = ["convert", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o.parquet")]
    assert main(argv) == 2
    assert capsys.readouterr().err.count("\n") == 1
    if how == "flag":
        argv.append("--debug")
    else:
        monkeypatch.setenv("PREFDATA_DEBUG", "1")
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        main(argv)


@pytest.mark.parametrize("recipe", ["binarize.py", "sample_and_score.py"])
def test_every_recipe_has_the_error_boundary(tmp_path, recipe):
    """A recipe run on a missing input, as a user runs it: one line on stderr, status 2;
    with --debug, the traceback."""
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "recipes" / recipe
    flags = (
        ["--input", str(tmp_path / "nope.jsonl")]
        if recipe == "binarize.py"
        else ["--prompts", str(tmp_path / "nope.jsonl"), "--model", "m", "--reward-model", "r"]
    )
    cmd = [sys.executable, str(script), *flags, "--out", str(tmp_path / "out")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    name = recipe.removesuffix(".py")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"{name}: error: no such file or folder: {flags[1]}"]
    done = subprocess.run([*cmd, "--debug"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback (most recent call last)" in done.stderr


def test_convert_streams_through_the_ingest_and_leaves_nothing_behind(tmp_path, capsys):
    """Any layout but pool goes through the executor's ingest (batches, partitions, pool
    shards copied into the output row group by row group): the same pools and rejects as
    reading in memory, and its scratch folder is removed."""
    from prefdata.io.readers import read_pools

    rows = [{"prompt": f"q{i % 7}", "response": f"r{i}", "rm": float(i)} for i in range(60)]
    rows[5]["prompt"] = ""
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out" / "pools.parquet"
    argv = ["convert", str(src), "--layout", "long", "--score-col", "rm", "--out", str(out)]
    assert main(argv) == 0
    ref = read_pools(src, "long", score_cols=["rm"])
    assert read_parquet(out).equals(ref.table)
    assert pq.read_table(rejects_path(out)).equals(ref.rejects)
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "pools.parquet",
        "pools.rejects.parquet",
    ]
    assert "7 pools, 59 candidates" in capsys.readouterr().out
