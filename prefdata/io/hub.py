"""A Hugging Face Hub dataset folder, written locally, and its upload.

:func:`write_hub_folder` writes what ``Dataset.push_to_hub`` (datasets 5.2,
``arrow_dataset.py``) would put in the repository: for each config and split,
``{data_dir}/{split}-{index:05d}-of-{num_shards:05d}.parquet`` where ``data_dir`` is ``data``
for the ``default`` config and the config name otherwise; the shard count is
``int(nbytes / max_shard_size) + 1`` and shards are contiguous; each shard is written by
``Dataset.to_parquet`` (row groups sized by ``datasets``, the ``huggingface`` features in the
schema metadata). The README.md front matter holds ``configs`` (``data_files`` with
``path: "{data_dir}/{split}-*"``) and ``dataset_info`` built with the same helpers
(``MetadataConfigs``, ``DatasetInfosDict``) that ``push_to_hub`` uses, plus license,
language, task_categories, tags, size_categories and pretty_name; the body comes from
:mod:`prefdata.report.card`. ``datasets.load_dataset(folder, config)`` reads it back.

:func:`push_to_hub` uploads a folder with ``huggingface_hub`` (private by default).

>>> import tempfile
>>> folder = write_hub_folder(tempfile.mkdtemp(), {"default": {"train": pa.table({"x": [1]})}},
...                           card={"pretty_name": "Demo"})
>>> sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
['README.md', 'data/train-00000-of-00001.parquet']
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa

from prefdata.io.atomic import atomic_path
from prefdata.report.card import CardInfo, card_metadata, render_body

log = logging.getLogger(__name__)

DEFAULT_MAX_SHARD_SIZE = "500MB"
_CONFIG_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def data_dir_for(config_name: str) -> str:
    """Where ``push_to_hub`` puts a config's files.

    >>> data_dir_for("default"), data_dir_for("kto")
    ('data', 'kto')
    """
    return "data" if config_name == "default" else config_name


def shard_paths(config_name: str, split: str, num_shards: int) -> list[str]:
    """Repository paths of a split's shards, as ``push_to_hub`` names them.

    >>> shard_paths("default", "train", 2)
    ['data/train-00000-of-00002.parquet', 'data/train-00001-of-00002.parquet']
    """
    d = data_dir_for(config_name)
    return [f"{d}/{split}-{i:05d}-of-{num_shards:05d}.parquet" for i in range(num_shards)]


def _check_names(configs: Mapping[str, Mapping[str, pa.Table]]) -> None:
    if not configs:
        raise ValueError("no configs to write")
    for cfg, splits in configs.items():
        if not _CONFIG_NAME.match(cfg) or cfg in ("data", "README.md"):
            raise ValueError(f"bad config name {cfg!r}")
        if not splits:
            raise ValueError(f"config {cfg!r} has no splits")
        for split in splits:
            if not re.match(r"^\w+(\.\w+)*$", split):
                raise ValueError(f"bad split name {split!r} in config {cfg!r}")


def write_hub_folder(
    out_dir: str | os.PathLike,
    configs: Mapping[str, Mapping[str, pa.Table]],
    *,
    card: CardInfo | Mapping[str, Any],
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
) -> Path:
    """Write a Hub-ready dataset folder (Parquet shards per config and split, README.md).

    ``configs`` maps config name -> split name -> table (written as given: use
    :func:`prefdata.io.export.hub_table` for TRL's conversational layout with the extra
    columns kept). The folder's previous ``data``/config directories are replaced so stale
    shards cannot linger. Same tables and card give byte-identical files.
    """
    from datasets import Dataset, DatasetInfo, Features
    from datasets.arrow_writer import (
        get_writer_batch_size_from_data_size,
        get_writer_batch_size_from_features,
    )
    from datasets.info import DatasetInfosDict
    from datasets.splits import SplitDict, SplitInfo
    from datasets.utils.metadata import MetadataConfigs
    from datasets.utils.py_utils import convert_file_size_to_int
    from huggingface_hub import DatasetCardData

    _check_names(configs)
    info = CardInfo.of(card)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    max_bytes = convert_file_size_to_int(max_shard_size)

    infos: dict[str, Any] = {}
    metadata_configs: dict[str, Any] = {}
    files: dict[str, dict[str, list[str]]] = {}
    for cfg, splits in configs.items():
        target = out / data_dir_for(cfg)
        if target.exists():
            shutil.rmtree(target)
        features: Features | None = None
        split_dict = SplitDict()
        download_size = dataset_size = 0
        files[cfg] = {}
        for split, table in splits.items():
            ds = Dataset(table)
            if features is not None and ds.features != features:
                raise ValueError(
                    f"config {cfg!r}: split {split!r} has features {ds.features}, "
                    f"other splits have {features}"
                )
            features = ds.features
            nbytes = ds.data.nbytes  # what push_to_hub's _estimate_nbytes returns here
            num_shards = int(nbytes / max_bytes) + 1
            batch = get_writer_batch_size_from_features(
                ds.features
            ) or get_writer_batch_size_from_data_size(len(ds), nbytes)
            files[cfg][split] = shard_paths(cfg, split, num_shards)
            for index, rel in enumerate(files[cfg][split]):
                shard = ds.shard(num_shards=num_shards, index=index, contiguous=True)
                write = lambda p, s=shard, b=batch: s.to_parquet(str(p), batch_size=b)  # noqa: E731
                atomic_path(out / rel, write)
                download_size += (out / rel).stat().st_size
            split_dict.add(SplitInfo(name=split, num_bytes=nbytes, num_examples=len(ds)))
            dataset_size += nbytes
        infos[cfg] = DatasetInfo(
            config_name=cfg,
            features=features,
            splits=split_dict,
            download_size=download_size,
            dataset_size=dataset_size,
        )
        metadata_configs[cfg] = {
            "data_files": [
                {"split": split, "path": f"{data_dir_for(cfg)}/{split}-*"} for split in splits
            ]
        }

    card_data = DatasetCardData(**card_metadata(configs, info))
    DatasetInfosDict(infos).to_dataset_card_data(card_data)
    MetadataConfigs(metadata_configs).to_dataset_card_data(card_data)
    text = f"---\n{card_data.to_yaml()}\n---\n\n{render_body(configs, info, files=files)}"
    atomic_path(out / "README.md", lambda p: p.write_text(text, encoding="utf-8"))
    return out


def _resolve_token(token: str | None) -> str | None:
    return token if token is not None else (os.environ.get("HF_TOKEN") or None)


def _folder_contains(folder: Path, secret: str) -> Path | None:
    needle = secret.encode("utf-8")
    for p in sorted(folder.rglob("*")):
        if p.is_file() and needle in p.read_bytes():
            return p
    return None


def push_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = True,
    revision: str | None = None,
    commit_message: str = "Upload dataset built with prefdata",
) -> Any:
    """Upload a folder written by :func:`write_hub_folder` to the dataset repo ``repo_id``.

    Creates the repo if needed (``HfApi.create_repo(repo_type="dataset", private=private,
    exist_ok=True)``), the branch ``revision`` if given, then ``HfApi.upload_folder``. The
    token comes from ``token`` or the ``HF_TOKEN`` environment variable (else
    huggingface_hub's own login); it is passed to ``HfApi`` only, never logged or written,
    and the upload is refused if any file in the folder contains it. Returns the
    ``CommitInfo`` of the upload.

    In tests only the network calls (``HfApi.create_repo``, ``create_branch``,
    ``upload_folder``) are replaced; everything else runs for real.
    """
    from huggingface_hub import HfApi

    folder = Path(folder)
    if not (folder / "README.md").is_file():
        raise FileNotFoundError(f"{folder} has no README.md; write it with write_hub_folder")
    secret = _resolve_token(token)
    if secret:
        leaked = _folder_contains(folder, secret)
        if leaked is not None:
            raise ValueError(f"refusing to upload: {leaked.name} contains the Hub token")
    api = HfApi(token=secret, library_name="prefdata")
    log.info("creating dataset repo %s (private=%s)", repo_id, private)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    if revision is not None:
        api.create_branch(repo_id, branch=revision, repo_type="dataset", exist_ok=True)
    log.info("uploading %s to %s", folder, repo_id)
    return api.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        repo_type="dataset",
        revision=revision,
        commit_message=commit_message,
    )


__all__ = ["data_dir_for", "push_to_hub", "shard_paths", "write_hub_folder"]
