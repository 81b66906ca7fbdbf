"""The published-pipeline recipes (recipes/*.py) run end to end on CPU, offline, on the
sample that ships with prefdata, as a user runs them (their main(argv)); each checks
what its method promises in the files it writes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from prefdata.io.shards import read_files

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pools_by_response(tmp_path) -> dict[str, dict]:
    """The sample's rows by response text (generator and scores)."""
    from prefdata.data import sample_path

    rows = [json.loads(line) for line in sample_path().read_text().splitlines() if line]
    return {r["response"]: r for r in rows}


def test_west_of_n_keeps_confident_best_worst_pairs(tmp_path):
    out = tmp_path / "won"
    assert load("west_of_n_rm").main(["--sample", "--quantile", "0.5", "--out", str(out)]) == 0
    rm = pq.read_table(out / "trl-reward" / "train.parquet")
    assert rm.column_names == ["prompt", "chosen", "rejected", "margin"]
    summary = json.loads((out / "summary.json").read_text())
    pairs = {e["stage"]: e for e in summary["funnel"]}["Pairs"]
    assert pairs["rows_in"] == 12 and pairs["rows_out"] == rm.num_rows == 6  # the upper half
    assert min(rm["margin"].to_pylist()) > 0


def test_delta_learning_chooses_the_strong_generator(tmp_path):
    out = tmp_path / "delta"
    argv = ["--sample", "--strong", "model-large", "--weak", "model-tiny", "--out", str(out)]
    assert load("delta_learning").main(argv) == 0
    dpo = pq.read_table(out / "trl-dpo" / "train.parquet").to_pylist()
    by_text = pools_by_response(tmp_path)
    assert dpo and all(
        by_text[r["chosen"][0]["content"]]["generator"] == "model-large"
        and by_text[r["rejected"][0]["content"]]["generator"] == "model-tiny"
        for r in dpo
    )
    rejects = pq.read_table(out / "rejects.parquet").to_pylist()
    assert len(dpo) + len([r for r in rejects if r["stage"] == "Pairs"]) == 12


def test_curriculum_writes_ordered_splits_easy_to_hard(tmp_path):
    out = tmp_path / "curry"
    assert load("curriculum_dpo").main(["--sample", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    stages = summary["stages"]
    assert list(stages) == ["stage1", "stage2", "stage3"] and stages["stage1"] == 12
    work = sorted((out / "work" / "curriculum").rglob("shard-00000.arrow"))[-1]
    pairs = read_files(work)
    mean_margin = [
        pc.mean(pairs.filter(pc.equal(pairs["curriculum_stage"], k))["margin"]).as_py()
        for k in (1, 2, 3)
    ]
    assert mean_margin[0] > mean_margin[1] > mean_margin[2]  # easy (large gaps) first
    for k in (1, 2, 3):
        assert (
            pq.read_metadata(out / "trl-dpo" / f"stage{k}.parquet").num_rows == stages[f"stage{k}"]
        )


def test_robust_rm_data_votes_peer_filters_and_keeps_soft_labels(tmp_path):
    out = tmp_path / "robust"
    assert load("robust_rm_data").main(["--sample", "--out", str(out), "--report"]) == 0
    rm = pq.read_table(out / "trl-reward" / "train.parquet")
    assert rm.column_names == ["prompt", "chosen", "rejected", "margin",
                               "strength_mean", "strength_std", "p_chosen"]  # fmt: skip
    assert all(0.5 < p <= 1 for p in rm["p_chosen"].to_pylist())  # every kept pair agreed
    funnel = {e["stage"]: e for e in json.loads((out / "summary.json").read_text())["funnel"]}
    assert funnel["PeerFilter"]["rows_rejected"] > 0
    assert (out / "report.html").exists()


@pytest.mark.parametrize(
    "name,argv,message",
    [
        ("delta_learning", ["--sample", "--strong", "a"], "give --strong and --weak"),
        ("robust_rm_data", ["--input", "x.jsonl", "--score-col", "a"], "at least 2 --score-col"),
        ("west_of_n_rm", ["--sample", "--quantile", "1.5"], "--quantile must be in"),
        ("curriculum_dpo", ["--input", "x.jsonl"], "give --score-col"),
    ],
)
def test_a_users_mistake_is_one_line(name, argv, message, tmp_path, capsys):
    assert load(name).main([*argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and err[0].startswith(f"{name}: error: ")


def test_verifiable_math_pairs_right_against_wrong(tmp_path):
    out = tmp_path / "math"
    argv = ["--sample", "--max-pairs-per-prompt", "1", "--out", str(out)]
    assert load("verifiable_math_dpo").main(argv) == 0
    dpo = pq.read_table(out / "trl-dpo" / "train.parquet").to_pylist()
    assert len(dpo) == 36  # one pair per problem
    from prefdata.data import math_path

    gold = {
        json.loads(line)["prompt"]: json.loads(line)["answer"]
        for line in math_path().read_text().splitlines()
    }
    for row in dpo:
        answer = gold[row["prompt"][-1]["content"]]
        assert row["chosen"][0]["content"].endswith(f"\\boxed{{{answer}}}.")
        assert not row["rejected"][0]["content"].endswith(f"\\boxed{{{answer}}}.")


def test_rationale_dpo_writes_a_rationale_per_pair(tiny_models, tmp_path):
    """The judge is the tiny random-weight model: real generation, meaningless text."""
    out = tmp_path / "rationale"
    argv = ["--sample", "--judge-model", str(tiny_models["causal"]), "--max-tokens", "8",
            "--out", str(out)]  # fmt: skip
    assert load("rationale_dpo").main(argv) == 0
    dpo = pq.read_table(out / "trl-dpo" / "train.parquet")
    assert dpo.column_names == ["prompt", "chosen", "rejected", "rationale"]
    assert dpo.num_rows == 12 and all(r for r in dpo["rationale"].to_pylist())


def test_verifiable_instructions_pair_the_response_that_meets_its_constraints(tmp_path):
    """Each bundled instruction carries its own constraints (Constraints(from_col=)): the
    chosen response meets them all, the rejected one breaks at least one."""
    out = tmp_path / "ifeval"
    argv = ["--sample", "--verifier", "constraints", "--out", str(out)]
    assert load("verifiable_math_dpo").main(argv) == 0
    dpo = pq.read_table(out / "trl-dpo" / "train.parquet").to_pylist()
    from prefdata.data import instructions_path

    rows = [json.loads(line) for line in instructions_path().read_text().splitlines()]
    follows = {c["response"] for r in rows for c in r["candidates"] if c["generator"] == "follows"}
    assert len(dpo) == 12
    assert all(r["chosen"][0]["content"] in follows for r in dpo)
    assert not any(r["rejected"][0]["content"] in follows for r in dpo)


def test_per_prompt_constraints_and_a_bad_spec():
    import pyarrow as pa

    from prefdata.schema import pool_schema
    from prefdata.score import Constraints

    pools = pa.Table.from_pylist(
        [
            {
                "prompt_id": "a",
                "prompt": [{"role": "user", "content": "q"}],
                "candidates": [{"candidate_id": "x", "response": "one two three", "flags": []}],
            },
            {
                "prompt_id": "b",
                "prompt": [{"role": "user", "content": "q"}],
                "candidates": [{"candidate_id": "y", "response": "one two three", "flags": []}],
            },
            {
                "prompt_id": "c",
                "prompt": [{"role": "user", "content": "q"}],
                "candidates": [{"candidate_id": "z", "response": "hi", "flags": []}],
            },
        ],
        schema=pool_schema(),
    ).append_column("spec", pa.array(['{"max_words": 2}', '{"max_words": 5}', '{"colour": 1}']))
    out = Constraints(from_col="spec")(pools).table
    got = [(c["scores"]["constraints"], c["flags"]) for p in out["candidates"].to_pylist()
           for c in p]  # fmt: skip
    assert got == [(0.0, ["constraints_fail:max_words"]), (1.0, []),
                   (None, ["constraints_bad_spec"])]  # fmt: skip
