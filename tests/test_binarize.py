"""recipes/binarize.py end to end: the README's main job on the bundled sample, and the
alpaca_eval pool through every strategy, read back by the real clients (datasets, TRL's
data utilities)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "binarize.py"
ALL_FORMATS = [
    "trl-dpo",
    "trl-reward",
    "trl-kto",
    "openrlhf",
    "llamafactory",
    "axolotl",
    "nemo-rl",
    "listwise",
    "hub",
]


@pytest.fixture(scope="module")
def binarize():
    spec = importlib.util.spec_from_file_location("binarize", RECIPE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _formats(*names: str) -> list[str]:
    return [a for n in names for a in ("--format", n)]


def test_help_documents_every_flag(binarize):
    text = binarize.build_parser().format_help()
    assert "(default: None)" not in text
    for flag in (
        "--input",
        "--layout",
        "--prompt-col",
        "--response-col",
        "--generator-col",
        "--score-col",
        "--strategy",
        "--min-margin",
        "--vote",
        "--format",
        "--out",
        "--workdir",
        "--seed",
        "--push-to-hub",
    ):
        assert flag in text
    for action in binarize.build_parser()._actions:
        assert action.help, f"{action.option_strings} has no help"


def test_main_job_on_the_bundled_sample(binarize, tmp_path, capsys):
    from datasets import load_dataset
    from trl.data_utils import is_conversational

    out = tmp_path / "sample"
    assert (
        binarize.main(["--sample", "--out", str(out), "--vote", "2", *_formats(*ALL_FORMATS)]) == 0
    )
    printed = capsys.readouterr().out
    assert "candidates dropped: 1 x flagged: empty" in printed
    assert "candidates dropped: 1 x flagged: judge_injection" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pairs"] == 12
    for e in summary["funnel"]:
        assert e["rows_in"] == e["rows_out"] + e["rows_rejected"], e
    assert set(summary["outputs"]) == set(ALL_FORMATS)

    dpo = load_dataset("parquet", data_files=str(out / "trl-dpo" / "train.parquet"))["train"]
    assert dpo.num_rows == 12 and is_conversational(dpo[0])
    assert dpo[0]["prompt"][-1]["role"] == "user"
    assert dpo[0]["chosen"][0]["role"] == "assistant"
    hub = load_dataset(str(out / "hub"), "default")["train"]
    assert hub.num_rows == 12 and "margin" in hub.column_names
    card = (out / "hub" / "README.md").read_text()
    assert "dpo" in card and "FlagDegenerate" in card and "Vote" in card

    # Rerunning into a fresh folder gives byte-identical outputs.
    again = tmp_path / "again"
    binarize.main(["--sample", "--out", str(again), "--vote", "2", *_formats(*ALL_FORMATS)])
    for f in ("trl-dpo/train.parquet", "openrlhf/train.jsonl", "listwise/train.jsonl"):
        assert (out / f).read_bytes() == (again / f).read_bytes(), f


@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("strategy", "extra"),
    [
        ("best-worst", []),
        ("best-random", []),
        ("sweet-spot", []),
        ("curriculum", ["--max-pairs-per-prompt", "4"]),
        ("all-pairs", ["--min-margin", "0.5", "--max-pairs-per-prompt", "8"]),
        (
            "by-generator",
            ["--chosen-generator", "gpt4_1106_preview", "--rejected-generator", "alpaca-7b"],
        ),
        ("by-correctness", ["--threshold", "0.5", "--max-pairs-per-prompt", "4"]),
    ],
)
def test_alpaca_eval_every_strategy(binarize, shared_data, tmp_path, strategy, extra, capsys):
    import pyarrow.parquet as pq

    out = tmp_path / strategy
    formats = {"best-worst": ALL_FORMATS, "by-generator": ["trl-dpo", "trl-reward"]}.get(
        strategy, ["trl-dpo"]
    )
    binarize.main(
        [
            "--input",
            str(shared_data / "alpaca_eval_pool.parquet"),
            "--layout",
            "long",
            "--prompt-col",
            "instruction",
            "--response-col",
            "output",
            "--generator-col",
            "generator",
            "--score-col",
            "judge_pref",
            "--strategy",
            strategy,
            *extra,
            "--out",
            str(out),
            *_formats(*formats),
        ]
    )
    summary = json.loads((out / "summary.json").read_text())
    # The judge's reference answers repeat across all 805 prompts: flagged and dropped.
    assert "805 x flagged: repeated_across_prompts" in capsys.readouterr().out
    funnel = {e["stage"]: e for e in summary["funnel"]}
    assert funnel["layout:long"]["rows_out"] == 16094
    assert funnel["Pairs"]["rows_in"] == 805
    assert funnel["Pairs"]["rows_out"] + funnel["Pairs"]["rows_rejected"] == 805
    dpo = pq.read_table(out / "trl-dpo" / "train.parquet")
    assert dpo.num_rows == summary["pairs"] > 0
    expected = {"best-worst": 805, "best-random": 805, "sweet-spot": 805}
    if strategy in expected:
        assert summary["pairs"] == expected[strategy]
    if strategy == "by-generator":
        # no ranking score: the reward export has no margin column, and loses no row
        reward = pq.read_table(out / "trl-reward" / "train.parquet")
        assert reward.num_rows == dpo.num_rows and "margin" not in reward.column_names


def test_pairs_layout_keeps_every_recorded_pair(binarize, tmp_path):
    """Pairs sharing a prompt merge into one pool; the recorded strategy (the default for
    pairs and hh) still emits each recorded pair, not one per pool."""
    import pyarrow.parquet as pq

    rows = [
        {"prompt": "Rate it", "chosen": "Good answer", "rejected": "Bad answer"},
        {"prompt": "Rate it", "chosen": "Great answer", "rejected": "Good answer"},
        {"prompt": "Other", "chosen": "Answer A", "rejected": "Answer B", "margin": 2.0},
    ]
    src = tmp_path / "pairs.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    binarize.main(
        ["--input", str(src), "--layout", "pairs", "--out", str(out), "--format", "trl-dpo"]
    )
    got = pq.read_table(out / "trl-dpo" / "train.parquet").to_pylist()
    pairs = sorted((r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in got)
    assert pairs == [
        ("Answer A", "Answer B"),
        ("Good answer", "Bad answer"),
        ("Great answer", "Good answer"),
    ]


@pytest.mark.shared_data
def test_hh_recorded_pairs(binarize, shared_data, tmp_path):
    out = tmp_path / "hh"
    binarize.main(
        [
            "--input",
            str(shared_data / "hh_rlhf_harmless_test.jsonl.gz"),
            "--layout",
            "hh",
            "--out",
            str(out),
            "--format",
            "trl-dpo",
        ]
    )
    summary = json.loads((out / "summary.json").read_text())
    funnel = {e["stage"]: e for e in summary["funnel"]}
    assert funnel["layout:hh"] == {
        "stage": "layout:hh",
        "rows_in": 2312,
        "rows_out": 2312,  # the 9 rows with a repeated "Assistant:" turn are joined, kept
        "rows_rejected": 0,
    }
    # 4 pools lose their empty chosen answer to DropFlagged; every other recorded pair stays
    assert funnel["DropFlagged"]["rows_rejected"] == 4
    assert summary["pairs"] == 2312 - 4


def test_streamed_export_equals_the_whole_table_export(binarize, tmp_path):
    """With only shard-by-shard formats asked for, the pairs are exported as each shard is
    computed (never read whole): several shards give train-00000.parquet, ... with the
    rows of the whole-table export; one shard is named train.parquet."""
    import pyarrow.parquet as pq
    from datasets import load_dataset

    common = ["--sample", "--seed", "3"]
    assert (
        binarize.main(
            [*common, "--shard-rows", "5", *_formats("trl-dpo"), "--out", str(tmp_path / "s")]
        )
        == 0
    )
    files = sorted((tmp_path / "s" / "trl-dpo").glob("train-*.parquet"))
    assert [f.name for f in files] == [f"train-{i:05d}.parquet" for i in range(3)]
    assert (
        binarize.main([*common, *_formats("trl-dpo", "openrlhf"), "--out", str(tmp_path / "w")])
        == 0
    )
    whole = pq.read_table(tmp_path / "w" / "trl-dpo" / "train.parquet")
    streamed = load_dataset("parquet", data_files=[str(f) for f in files])["train"]
    assert streamed.num_rows == whole.num_rows == 12
    assert streamed.to_list() == whole.to_pylist()
    assert binarize.main([*common, *_formats("trl-dpo"), "--out", str(tmp_path / "o")]) == 0
    assert [p.name for p in (tmp_path / "o" / "trl-dpo").iterdir()] == ["train.parquet"]
    assert pq.read_table(tmp_path / "o" / "trl-dpo" / "train.parquet").equals(whole)


def test_a_users_mistake_is_one_line_and_status_2(binarize, tmp_path, capsys):
    """A misspelt score column, a missing input, an impossible flag: one line naming the
    problem on stderr and exit status 2, no traceback."""
    raw = tmp_path / "long.jsonl"
    raw.write_text('{"prompt": "Q", "response": "A", "rm": 1.0}\n')
    cases = [
        (["--input", str(raw), "--score-col", "rmm"], "score column 'rmm' not found"),
        (["--input", str(tmp_path / "nope.parquet")], "no such file or folder"),
        (["--input", str(raw), "--score-col", "rm", "--vote", "2"], "--vote 2 needs at least 2"),
        (["--input", str(raw), "--score-col", "rm", "--strategy", "by-correctness"], "--threshold"),
    ]
    for i, (flags, expected) in enumerate(cases):
        assert binarize.main([*flags, "--out", str(tmp_path / f"o{i}")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("binarize: error: "), err
        assert expected in err[0]


def test_hub_only_rejects_what_it_cannot_hold_and_an_empty_input_finishes(binarize, tmp_path):
    """--format hub alone: a pair the Hub table cannot hold (two candidates of one text
    recorded as a preference, in a pool input) is a reject with a reason and a funnel
    line, not a silent loss. An input with no usable row finishes with 0 pairs and the
    funnel."""
    import pyarrow.parquet as pq

    def pool(pid, texts):
        return {
            "prompt_id": pid,
            "prompt": [{"role": "user", "content": f"question {pid}"}],
            "candidates": [
                {"candidate_id": f"{pid}-{i}", "response": t, "scores": {"preference": s}}
                for i, (t, s) in enumerate(zip(texts, (1.0, 0.0), strict=True))
            ],
        }

    raw = tmp_path / "pools.jsonl"
    raw.write_text("".join(json.dumps(p) + "\n" for p in [pool("a", "AB"), pool("b", "XX")]))
    out = tmp_path / "hub"
    flags = ["--input", str(raw), "--layout", "pool", "--strategy", "recorded"]
    assert binarize.main([*flags, "--format", "hub", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    hub = [e for e in summary["funnel"] if e["stage"] == "export:hub"]
    assert hub == [{"stage": "export:hub", "rows_in": 2, "rows_out": 1, "rows_rejected": 1}]
    rejects = pq.read_table(out / "rejects.parquet").to_pylist()
    assert len(rejects) == 1 and rejects[0]["prompt_id"] == "b", rejects
    assert pq.read_table(next((out / "hub" / "data").glob("*.parquet"))).num_rows == 1

    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    assert (
        binarize.main(["--input", str(empty), "--score-col", "rm", "--out", str(tmp_path / "e")])
        == 0
    )
    summary = json.loads((tmp_path / "e" / "summary.json").read_text())
    assert summary["pairs"] == 0 and summary["funnel"][0]["rows_in"] == 0


def test_damaged_or_busy_work_directories_and_stale_temp_files(binarize, tmp_path, capsys):
    """A garbage manifest and a work directory held by another run are one line and exit
    status 2 (the first says what to delete); temp files a killed export left beside the
    outputs are removed by the next run."""
    from prefdata.execute.workdir import workdir_lock

    out = tmp_path / "o"
    assert binarize.main(["--sample", "--format", "trl-dpo", "--out", str(out)]) == 0
    stale = out / "trl-dpo" / ".train.parquet.x1y2.tmp"
    stale.write_bytes(b"half a file")
    assert binarize.main(["--sample", "--format", "trl-dpo", "--out", str(out)]) == 0
    assert not stale.exists()
    capsys.readouterr()

    manifest = sorted((out / "work" / "pools").rglob("manifest.json"))[-1]
    manifest.write_text("{not json")
    assert binarize.main(["--sample", "--format", "trl-dpo", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "manifest.json is damaged" in err[0] and "delete the work" in err[0]
    manifest.unlink()

    with workdir_lock(out / "work" / "pools" / "ingest"):
        assert binarize.main(["--sample", "--format", "trl-dpo", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "in use by another run" in err[0]


def test_funnel_notes_with_several_formats(binarize, tmp_path, capsys):
    """Every export reads the pairs: trl-kto's two rows per pair are its own count, not
    pools becoming pairs again."""
    out = tmp_path / "o"
    assert (
        binarize.main(["--sample", *_formats("trl-dpo", "trl-kto", "openrlhf"), "--out", str(out)])
        == 0
    )
    printed = capsys.readouterr().out
    assert "(12 -> 24: trl-kto counts its own rows)" in printed
    assert "pools become pairs" not in printed  # the sample's pools give one pair each


def test_the_card_states_version_date_input_digest_and_candidate_drops(
    binarize, tmp_path, monkeypatch
):
    """The dataset card says which prefdata built the data, when (SOURCE_DATE_EPOCH pins
    the date for a byte-identical rebuild), the SHA-256 of the input file, and the
    candidates dropped inside pools, which no row count shows."""
    import hashlib

    from prefdata import __version__
    from prefdata.data import sample_path

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    out = tmp_path / "card"
    assert binarize.main(["--sample", "--format", "hub", "--out", str(out)]) == 0
    card = (out / "hub" / "README.md").read_text()
    sha = hashlib.sha256(sample_path().read_bytes()).hexdigest()
    assert f"- built with prefdata {__version__}" in card
    assert "- created: 2023-11-14" in card
    assert f"- input file `sample_long.jsonl`: SHA-256 `{sha}`" in card
    assert "| flagged: empty | 1 |" in card and "| flagged: judge_injection | 1 |" in card


def test_several_scores_rank_by_their_ensemble_unless_told(binarize, tmp_path, capsys):
    """With several --score-col and no --score the pairs rank by the z-scored mean
    (the quality benchmark's winner); --score NAME or ensemble:min|uwo choose; a bad
    ensemble name is one line and status 2."""
    runs = {}
    for label, extra in [("default", []), ("one", ["--score", "rm_quality"]),
                         ("min", ["--score", "ensemble:min"])]:  # fmt: skip
        out = tmp_path / label
        assert binarize.main(["--sample", "--format", "trl-dpo", "--out", str(out), *extra]) == 0
        runs[label] = json.loads((out / "summary.json").read_text())
    stages = lambda r: [e["stage"] for e in r["funnel"]]  # noqa: E731
    assert "Ensemble[ensemble.mean]" in stages(runs["default"])
    assert not any(s.startswith("Ensemble") for s in stages(runs["one"]))
    assert "Ensemble[ensemble.min]" in stages(runs["min"])
    capsys.readouterr()
    assert (
        binarize.main(["--sample", "--score", "ensemble:median", "--out", str(tmp_path / "x")]) == 2
    )
    assert "expected ensemble:mean, ensemble:min or ensemble:uwo" in capsys.readouterr().err
