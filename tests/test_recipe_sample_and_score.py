"""recipes/sample_and_score.py on the tiny in-process models: real sampling, real reward
models, checkpointed, deterministic."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from prefdata.io.shards import read_files

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "sample_and_score.py"


def _load():
    spec = importlib.util.spec_from_file_location("sample_and_score", RECIPE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sample_score_pair_export(tiny_models, tmp_path, capsys):
    recipe = _load()
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(
            json.dumps({"prompt": p}) + "\n"
            for p in (
                "Write a poem about the sea",
                "What is the capital of France?",
                "Give me three tips for staying productive",
            )
        )
    )
    args = [
        "--prompts",
        str(prompts),
        "--model",
        str(tiny_models["causal"]),
        "--n",
        "3",
        "--max-tokens",
        "8",
        "--reward-model",
        str(tiny_models["reward"]),
        "--reward-model",
        str(tiny_models["reward_multi"]),
        "--drop-flag",
        "empty",  # random weights never stop early: keep truncated ones
        "--shard-rows",
        "2",
    ]
    assert recipe.main([*args, "--out", str(tmp_path / "a"), "--report"]) == 0
    printed = capsys.readouterr().out
    assert "pairs: 3" in printed
    page = (tmp_path / "a" / "report.html").read_text()
    assert "<h2>Score distributions</h2>" in page and "Sample[" in page  # both runs' funnel
    work = tmp_path / "a" / "work"
    sampled = read_files(sorted(work.glob("stages/00-Sample-*/shard-00000.arrow"))[0])
    cands = sampled["candidates"].to_pylist()
    assert [len(c) for c in cands] == [3, 3]
    assert all(c["seed"] is not None and c["num_tokens"] == 8 for p in cands for c in p)
    assert all(
        c["finish_reason"] == "length" and "truncated" in c["flags"] for p in cands for c in p
    )

    pairs = pq.read_table(tmp_path / "a" / "hub" / "data" / "train-00000-of-00001.parquet")
    assert pairs.num_rows == 3
    for row in pairs.to_pylist():
        assert row["chosen"] != row["rejected"]
        assert row["chosen_scores"]["rm0"] > row["rejected_scores"]["rm0"]
        assert set(row["chosen_scores"]) == {"rm0", "rm1.0", "rm1.1", "rm1.2", "rm1.3", "rm1.4"}

    # Same seed in a fresh folder: byte-identical data. Rerun in place: nothing recomputed.
    recipe.main([*args, "--out", str(tmp_path / "b")])
    name = "trl-dpo/train.parquet"
    assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    before = {p: p.stat().st_mtime_ns for p in work.rglob("shard-*.arrow")}
    recipe.main([*args, "--out", str(tmp_path / "a")])
    assert {p: p.stat().st_mtime_ns for p in work.rglob("shard-*.arrow")} == before


def test_generator_names_are_given_per_model_and_must_differ(tiny_models, tmp_path):
    """--generator-name names each --model's generator; two models recording one name, or a
    count that does not match, are refused in one line before anything runs."""
    recipe = _load()
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "Hi"}\n')
    base = ["--prompts", str(prompts), "--layout", "long", "--prompt-col", "prompt"]
    base += ["--reward-model", str(tiny_models["reward"]), "--out", str(tmp_path / "o")]
    model = str(tiny_models["causal"])
    args = recipe.build_parser().parse_args(
        [
            *base,
            "--model",
            model,
            "--model",
            model,
            "--generator-name",
            "x",
            "--generator-name",
            "y",
        ]
    )
    assert recipe._generator_names(args) == ["x", "y"]
    for extra, message in [
        (["--model", model, "--model", model], "two --model flags record the generator"),
        (
            ["--model", model, "--generator-name", "a", "--generator-name", "b"],
            "one --generator-name per --model",
        ),
    ]:
        args = recipe.build_parser().parse_args([*base, *extra])
        with pytest.raises(ValueError, match=message):
            recipe._generator_names(args)
