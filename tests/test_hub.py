"""The Hub folder (layout, features, card) read back with ``datasets.load_dataset`` and
compared with what ``datasets``' own ``push_to_hub`` code writes; and ``push_to_hub``, where
only the network calls of ``huggingface_hub.HfApi`` (create_repo, create_branch,
upload_folder) are replaced by recorders, since there is no network here."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from prefdata.io.export import hub_table  # noqa: E402
from prefdata.io.hub import push_to_hub, shard_paths, write_hub_folder  # noqa: E402
from prefdata.pipeline import Funnel, Stage  # noqa: E402
from prefdata.schema import LIST_SCHEMA, PAIR_SCHEMA, UNPAIRED_SCHEMA, pool_schema  # noqa: E402

U = {"role": "user", "content": "What is 2+2?"}


def _pairs(n: int = 40) -> pa.Table:
    rows = [
        {
            "prompt_id": f"p{i % 30}",
            "prompt": [{"role": "user", "content": f"Question {i}: what is {i}+{i}?"}],
            "chosen": f"{2 * i}. " + "Because addition. " * (i % 5),
            "rejected": f"{2 * i + 1}",
            "margin": float(i % 7) / 2,
            "chosen_generator": "strong" if i % 3 else "human",
            "rejected_generator": "weak",
            "strategy": "best-worst" if i % 2 else "sweet-spot",
        }
        for i in range(n)
    ]
    t = pa.Table.from_pylist(rows, schema=PAIR_SCHEMA)
    # Per-scorer scores, as a construction stage may carry them (for scorer agreement).
    cs = pa.array([{"rm": 1.0 + i, "judge": 1.0 if i % 4 else -1.0} for i in range(n)])
    rs = pa.array([{"rm": 0.0 + i, "judge": 0.0} for i in range(n)])
    return t.append_column("chosen_scores", cs).append_column("rejected_scores", rs)


def _unpaired() -> pa.Table:
    rows = [
        {"prompt_id": f"u{i}", "prompt": [U], "completion": str(i), "label": i == 4}
        for i in range(6)
    ]
    return pa.Table.from_pylist(rows, schema=UNPAIRED_SCHEMA)


def _lists() -> pa.Table:
    rows = [
        {
            "prompt_id": "l0",
            "prompt": [U],
            "responses": [
                {"candidate_id": "a", "response": "4", "generator": "g", "score": 1.0, "rank": 1},
                {"candidate_id": "b", "response": "5", "generator": "h", "score": 0.0, "rank": 2},
            ],
            "scorer": "rm",
        }
    ]
    return pa.Table.from_pylist(rows, schema=LIST_SCHEMA)


def _pools() -> pa.Table:
    cands = [
        {
            "candidate_id": f"c{j}",
            "response": str(j),
            "generator": f"g{j % 2}",
            "scores": {"rm": float(j), "judge": float(j if j != 2 else -5)},
            "flags": [],
        }
        for j in range(4)
    ]
    row = {"prompt_id": "p", "prompt": [U], "source": "t", "metadata": None, "candidates": cands}
    return pa.Table.from_pylist([row], schema=pool_schema(["rm", "judge"]))


@dataclass(frozen=True)
class PickBest(Stage):
    """A real (tiny) stage, only for its name, config and fingerprint."""

    k: int = 2


def _card(**kw) -> dict:
    funnel = Funnel()
    funnel.add("PickBest", 50, 40, 10)
    return {
        "pretty_name": "Demo preferences",
        "license": "apache-2.0",
        "stages": [PickBest(k=3)],
        "funnel": funnel,
        "pools": _pools(),
        "seed": 7,
        "source_datasets": ["tatsu-lab/alpaca_eval"],
        **kw,
    }


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("hub")
    configs = {
        "default": {"train": hub_table(_pairs()).table, "test": hub_table(_pairs(8)).table},
        "kto": {"train": hub_table(_unpaired()).table},
        "lists": {"train": hub_table(_lists()).table},
    }
    return write_hub_folder(out, configs, card=_card())


def _front_matter(folder) -> dict:
    text = (folder / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_layout_matches_push_to_hub_naming(folder):
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert files == [
        "README.md",
        "data/test-00000-of-00001.parquet",
        "data/train-00000-of-00001.parquet",
        "kto/train-00000-of-00001.parquet",
        "lists/train-00000-of-00001.parquet",
    ]
    for f in files[1:]:
        meta = pq.read_schema(folder / f).metadata
        assert "features" in json.loads(meta[b"huggingface"])["info"]


@pytest.mark.parametrize("config", ["default", "kto", "lists"])
def test_load_dataset_reads_each_config_with_types(folder, config, tmp_path):
    from datasets import List, Value, load_dataset

    ds = load_dataset(str(folder), config, cache_dir=str(tmp_path))
    message = {"role": Value("string"), "content": Value("string")}
    feats = ds["train"].features
    assert feats["prompt"] == List(message)
    if config == "default":
        assert set(ds) == {"train", "test"}
        assert ds["train"].num_rows == 40 and ds["test"].num_rows == 8
        assert feats["chosen"] == List(message) and feats["margin"] == Value("float64")
        assert ds["train"][3]["chosen"] == [
            {"role": "assistant", "content": "6. " + "Because addition. " * 3}
        ]
        assert ds["train"]["margin"] == _pairs()["margin"].to_pylist()
    elif config == "kto":
        assert feats["label"] == Value("bool")
        assert ds["train"]["label"] == [False] * 4 + [True, False]
    else:
        assert ds["train"][0]["responses"][0]["rank"] == 1


def test_card_yaml_is_what_push_to_hub_writes(tmp_path):
    """Our ``configs`` and ``dataset_info`` equal the card that datasets' push_to_hub code
    (``_get_updated_dataset_card``, datasets 5.2) builds for the same split and files."""
    import datasets.arrow_dataset as ad
    from datasets import Dataset
    from datasets.splits import SplitInfo
    from fsspec.implementations.dirfs import DirFileSystem
    from fsspec.implementations.local import LocalFileSystem

    # datasets is pinned <6: if this private helper moves, the comparison must be redone,
    # so the test fails rather than skipping.
    assert hasattr(ad, "_get_updated_dataset_card"), "datasets moved its push_to_hub card code"
    table = hub_table(_pairs()).table
    out = write_hub_folder(tmp_path / "f", {"default": {"train": table}}, card=_card())
    ds = Dataset(table)
    shard = out / "data/train-00000-of-00001.parquet"
    empty = tmp_path / "empty"
    empty.mkdir()
    card, _ = ad._get_updated_dataset_card(
        fs=DirFileSystem(path=str(empty), fs=LocalFileSystem()),
        config_name="default",
        splits_info=[SplitInfo(name="train", num_bytes=ds.data.nbytes, num_examples=len(ds))],
        features=ds.features,
        data_dir="data",
        set_default=None,
        uploaded_sizes=[shard.stat().st_size],
        deleted_sizes=[0],
        remove_other_splits=False,
    )
    theirs = card.data.to_dict()
    ours = _front_matter(out)
    assert ours["configs"] == theirs["configs"]
    assert ours["dataset_info"] == theirs["dataset_info"]


def test_card_metadata_and_body(folder):
    meta = _front_matter(folder)
    assert meta["license"] == "apache-2.0"
    assert meta["task_categories"] == ["text-generation"]
    assert {"dpo", "kto", "listwise", "preference"} <= set(meta["tags"])
    assert meta["size_categories"] == ["n<1K"]
    assert meta["pretty_name"] == "Demo preferences"
    assert [c["config_name"] for c in meta["configs"]] == ["default", "kto", "lists"]
    assert meta["configs"][0]["data_files"] == [
        {"split": "train", "path": "data/train-*"},
        {"split": "test", "path": "data/test-*"},
    ]
    body = (folder / "README.md").read_text(encoding="utf-8").split("---\n", 2)[2]
    assert "| default | train | 40 | 30 | 1 |" in body
    margins = [(i % 7) / 2 for i in range(40)]
    mean = sum(margins) / 40
    assert f"| margin | 40 | 0 | {mean:.4g} |" in body
    # judge disagrees with rm on i % 4 == 0 (10 of 40 pairs)
    assert "| default / train | rm vs judge | 40 | 0.75 |" in body
    # pools: 4 candidates -> 6 pairs; candidate 2 (judge -5) flips 2 of them: (0,2), (1,2)
    assert "| pools (all candidate pairs) | rm vs judge | 6 | 0.6667 |" in body
    assert "| strong | 26 |" in body and "| human | 14 |" in body
    stage = PickBest(k=3)
    assert f"| 1 | PickBest | `{stage.fingerprint}` |" in body and '{"k": 3}' in body
    assert "| PickBest | 50 | 40 | 10 |" in body
    assert "Seed: 7" in body and "tatsu-lab/alpaca_eval" in body


def test_shards_split_by_size_and_keep_order(tmp_path):
    from datasets import load_dataset

    table = hub_table(_pairs()).table
    out = write_hub_folder(
        tmp_path / "f",
        {"default": {"train": table}},
        card=_card(),
        max_shard_size=table.nbytes // 3,
    )
    files = sorted(p.relative_to(out).as_posix() for p in (out / "data").iterdir())
    assert files == shard_paths("default", "train", 4)  # int(nbytes / max) + 1
    ds = load_dataset(str(out), "default", split="train", cache_dir=str(tmp_path / "c"))
    assert ds["prompt_id"] == table["prompt_id"].to_pylist()
    # Rewriting with one shard removes the stale ones.
    write_hub_folder(out, {"default": {"train": table}}, card=_card())
    assert [p.name for p in (out / "data").iterdir()] == ["train-00000-of-00001.parquet"]


def test_hub_folder_is_byte_identical(tmp_path):
    configs = {"default": {"train": hub_table(_pairs()).table}}
    a = write_hub_folder(tmp_path / "a", configs, card=_card())
    b = write_hub_folder(tmp_path / "b", configs, card=_card())
    for p in sorted(a.rglob("*")):
        if p.is_file():
            assert p.read_bytes() == (b / p.relative_to(a)).read_bytes(), p


def test_bad_configs_are_refused(tmp_path):
    t = hub_table(_pairs()).table
    with pytest.raises(ValueError, match="bad config name"):
        write_hub_folder(tmp_path, {"../x": {"train": t}}, card=_card())
    with pytest.raises(ValueError, match="features"):
        write_hub_folder(
            tmp_path, {"default": {"train": t, "test": hub_table(_unpaired()).table}}, card=_card()
        )
    with pytest.raises(TypeError, match="unknown card fields"):
        write_hub_folder(tmp_path, {"default": {"train": t}}, card={"pretty_name": "x", "tok": 1})


# ------------------------------------------------------------------ push_to_hub

SECRET = "hf_TESTSECRETtoken0123456789abcdefXYZ"


@pytest.fixture
def fake_hub(monkeypatch):
    """Replace only HfApi's network calls; record what they were asked to do."""
    from huggingface_hub import HfApi

    calls: list[tuple[str, dict]] = []

    def record(name):
        def method(self, *args, **kwargs):
            calls.append((name, {"token": self.token, "args": args, **kwargs}))
            return f"commit:{name}"

        return method

    for name in ("create_repo", "create_branch", "upload_folder"):
        monkeypatch.setattr(HfApi, name, record(name))
    return calls


def test_push_to_hub_private_by_default_token_from_env(folder, fake_hub, monkeypatch, caplog):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    caplog.set_level(logging.DEBUG)
    result = push_to_hub(folder, "me/prefs", revision="v1", commit_message="first")
    assert result == "commit:upload_folder"
    names = [c[0] for c in fake_hub]
    assert names == ["create_repo", "create_branch", "upload_folder"]
    create = fake_hub[0][1]
    assert create["args"] == ("me/prefs",)
    assert create["repo_type"] == "dataset" and create["private"] is True
    assert create["exist_ok"] is True and create["token"] == SECRET
    upload = fake_hub[2][1]
    assert upload["folder_path"] == str(folder) and upload["repo_type"] == "dataset"
    assert upload["revision"] == "v1" and upload["commit_message"] == "first"
    # The token reaches HfApi and nothing else: not the files, not the logs.
    for p in folder.rglob("*"):
        if p.is_file():
            assert SECRET.encode() not in p.read_bytes()
    assert SECRET not in caplog.text
    assert caplog.records  # it did log


def test_push_to_hub_token_argument_public_and_refusal(tmp_path, fake_hub, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    out = write_hub_folder(
        tmp_path / "f", {"default": {"train": hub_table(_pairs()).table}}, card=_card()
    )
    push_to_hub(out, "me/prefs", token=SECRET, private=False)
    assert fake_hub[0][1]["private"] is False and fake_hub[0][1]["token"] == SECRET
    assert [c[0] for c in fake_hub] == ["create_repo", "upload_folder"]  # no branch asked
    # A card that (wrongly) contains the token is never uploaded.
    leaky = write_hub_folder(
        tmp_path / "g",
        {"default": {"train": hub_table(_pairs()).table}},
        card=_card(description=f"token {SECRET}"),
    )
    fake_hub.clear()
    with pytest.raises(ValueError, match="contains the Hub token") as err:
        push_to_hub(leaky, "me/prefs", token=SECRET)
    assert SECRET not in str(err.value)
    assert fake_hub == []
    with pytest.raises(FileNotFoundError):
        push_to_hub(tmp_path / "nowhere", "me/prefs", token=SECRET)


def test_scorer_agreement_skips_a_scorer_against_its_own_normalised_copy():
    from prefdata.report.stats import scorer_agreement

    t = pa.table(
        {
            "chosen_scores": [{"a": 2.0, "a.z": 1.0, "b": 1.0}, {"a": 1.0, "a.z": 0.0, "b": 0.0}],
            "rejected_scores": [
                {"a": 1.0, "a.z": 0.0, "b": 0.0},
                {"a": 2.0, "a.z": 1.0, "b": -1.0},
            ],
        }
    )
    assert scorer_agreement(t) == {"a vs b": {"pairs": 2, "agreement": 0.5}}
