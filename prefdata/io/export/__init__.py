"""Training-ready exports: one writer per trainer format, registered in :data:`FORMATS`.

=====================  ==========  ========  =============================================
format                 input       file      columns
=====================  ==========  ========  =============================================
trl-dpo                pairs       Parquet   prompt, chosen, rejected (conversational)
trl-reward             pairs       Parquet   prompt, chosen, rejected, margin
trl-kto                unpaired    Parquet   prompt, completion, label (bool)
                       or pairs
openrlhf               pairs       JSONL     chosen, rejected (full conversations), margin
llamafactory           pairs       JSONL     conversations, chosen, rejected, system
                       unpaired              messages, label (kto_tag), system
llamafactory-alpaca    pairs       JSONL     instruction, input, chosen, rejected, system,
                                             history
axolotl                pairs       JSONL     messages, chosen, rejected (+ axolotl.yaml)
nemo-rl                pairs       JSONL     context, completions [{rank, completion}]
listwise               lists       JSONL     prefix, suffix, reward, sft_index, prompt, rank
=====================  ==========  ========  =============================================

TRL gets Parquet (with the ``huggingface`` features metadata, so ``label`` stays a bool and
``margin`` a float64 through ``load_dataset("parquet")``); the others read JSON best
(LLaMA-Factory's ``file_name``, NeMo-RL's ``load_dataset("json")``, PRO's JSON loader), so they
get JSON Lines. ``file_format`` overrides the default.

Rows a target cannot take are not dropped: :func:`export` returns an :class:`ExportResult`,
a ``list[Path]`` that also carries ``rejects`` (``REJECTS_SCHEMA``, one reason per row).

>>> import tempfile
>>> from prefdata.schema import PAIR_SCHEMA
>>> pairs = pa.Table.from_pylist([{"prompt_id": "p", "strategy": "best-worst",
...     "prompt": [{"role": "user", "content": "2+2?"}], "chosen": "4", "rejected": "5",
...     "margin": 1.0}], schema=PAIR_SCHEMA)
>>> out = export(pairs, "trl-dpo", tempfile.mkdtemp())
>>> [p.name for p in out], out.rejects.num_rows
(['train.parquet'], 0)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa

from prefdata.io.export._arrow import (
    Converted,
    ExportResult,
    table_kind,
    write_jsonl,
    write_parquet_hf,
)
from prefdata.io.export.axolotl import axolotl_table, to_axolotl, write_axolotl_yaml
from prefdata.io.export.listwise import listwise_table, to_listwise
from prefdata.io.export.llamafactory import (
    dataset_info_entry,
    llamafactory_alpaca_table,
    llamafactory_kto_table,
    llamafactory_table,
    to_llamafactory,
    to_llamafactory_alpaca,
    to_llamafactory_kto,
    write_dataset_info,
)
from prefdata.io.export.nemo_rl import nemo_rl_table, to_nemo_rl
from prefdata.io.export.openrlhf import openrlhf_table, to_openrlhf
from prefdata.io.export.trl import (
    to_trl_dpo,
    to_trl_kto,
    to_trl_reward,
    trl_dpo_table,
    trl_kto_table,
    trl_reward_table,
    unpair,
)
from prefdata.pipeline import Funnel, shift_reject_rows
from prefdata.schema import empty_rejects

FileFormat = Literal["jsonl", "parquet"]


@dataclass(frozen=True)
class ExportFormat:
    """One target format: which record types it takes, the table converter per type, the
    per-record converter (for docs and spot checks), its file format, and any side files."""

    name: str
    converters: dict[str, Callable[..., Converted]]
    records: dict[str, Callable[..., dict[str, Any]]]
    file_format: FileFormat
    description: str
    side_files: Callable[..., list[Path]] | None = field(default=None)

    def convert(self, table: pa.Table, **options: Any) -> Converted:
        kind = table_kind(table)
        if kind not in self.converters:
            raise ValueError(
                f"format {self.name!r} takes {sorted(self.converters)} tables, not a {kind} table"
            )
        return self.converters[kind](table, **options)


def _llamafactory_info(*, alpaca: bool):
    def side(out_dir: Path, data_file: Path, split: str, kind: str, options: dict) -> list:
        name = options.get("dataset_name") or f"prefdata_{split}"
        style = options.get("style", "sharegpt")
        entry = dataset_info_entry(data_file.name, kind="alpaca" if alpaca else kind, style=style)
        return [write_dataset_info(out_dir, name, entry)]

    return side


def _axolotl_side(out_dir: Path, data_file: Path, split: str, kind: str, options: dict) -> list:
    return [write_axolotl_yaml(out_dir, data_file)]


FORMATS: dict[str, ExportFormat] = {
    f.name: f
    for f in [
        ExportFormat(
            "trl-dpo",
            {"pair": trl_dpo_table},
            {"pair": to_trl_dpo},
            "parquet",
            "TRL DPOTrainer (also ORPO/CPO): explicit conversational prompt, chosen, rejected",
        ),
        ExportFormat(
            "trl-reward",
            {"pair": trl_reward_table},
            {"pair": to_trl_reward},
            "parquet",
            "TRL RewardTrainer: prompt, chosen, rejected and margin",
        ),
        ExportFormat(
            "trl-kto",
            {"unpaired": trl_kto_table, "pair": trl_kto_table},
            {"unpaired": to_trl_kto},
            "parquet",
            "TRL KTOTrainer: prompt, completion, label (bool); pairs are unpaired first",
        ),
        ExportFormat(
            "openrlhf",
            {"pair": openrlhf_table},
            {"pair": to_openrlhf},
            "jsonl",
            "OpenRLHF train_rm / train_dpo with --data.apply_chat_template",
        ),
        ExportFormat(
            "llamafactory",
            {"pair": llamafactory_table, "unpaired": llamafactory_kto_table},
            {"pair": to_llamafactory, "unpaired": to_llamafactory_kto},
            "jsonl",
            "LLaMA-Factory sharegpt ranking (DPO/RM) or KTO, with its dataset_info.json entry",
            _llamafactory_info(alpaca=False),
        ),
        ExportFormat(
            "llamafactory-alpaca",
            {"pair": llamafactory_alpaca_table},
            {"pair": to_llamafactory_alpaca},
            "jsonl",
            "LLaMA-Factory alpaca ranking, with its dataset_info.json entry",
            _llamafactory_info(alpaca=True),
        ),
        ExportFormat(
            "axolotl",
            {"pair": axolotl_table},
            {"pair": to_axolotl},
            "jsonl",
            "Axolotl rl: dpo with type chat_template.default (+ axolotl.yaml)",
            _axolotl_side,
        ),
        ExportFormat(
            "nemo-rl",
            {"pair": nemo_rl_table},
            {"pair": to_nemo_rl},
            "jsonl",
            "NeMo-RL DPO / RM rank format: context and two ranked completions",
        ),
        ExportFormat(
            "listwise",
            {"list": listwise_table},
            {"list": to_listwise},
            "jsonl",
            "PRO-style listwise JSONL: prefix, suffix best to worst, reward, sft_index",
        ),
    ]
}


def export(
    table: pa.Table,
    format: str,
    out_dir: str | os.PathLike,
    *,
    split: str = "train",
    file_format: FileFormat | None = None,
    funnel: Funnel | None = None,
    **options: Any,
) -> ExportResult:
    """Write ``table`` (pairs, lists or unpaired rows) in ``format`` to ``out_dir/{split}.*``.

    Returns the paths written (data file first, then side files such as
    ``dataset_info.json``) as an :class:`ExportResult` whose ``rejects`` hold every row the
    target cannot take, with a reason. ``options`` go to the format's table converter
    (``keep=[...]`` or ``"all"`` carries extra columns; ``margin``/``margin_scale`` for
    trl-reward; ``style="openai"`` and ``dataset_name`` for LLaMA-Factory;
    ``num_responses`` for listwise). ``funnel`` (if given) gets an ``export:<format>`` entry.
    Same input and options give byte-identical files.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; expected one of {sorted(FORMATS)}")
    if "/" in split or not split:
        raise ValueError(f"bad split name {split!r}")
    fmt = FORMATS[format]
    kind = table_kind(table)
    side_options = {k: options.pop(k) for k in ("dataset_name",) if k in options}
    if "style" in options:
        side_options["style"] = options["style"]
    converted = fmt.convert(table, **options)
    out = Path(out_dir)
    ff = file_format or fmt.file_format
    if ff == "jsonl":  # JSON has no NaN: such a row is rejected, not the whole file
        converted = converted.reject_non_finite()
    data_file = out / f"{split}.{ff}"
    if ff == "parquet":
        write_parquet_hf(converted.table, data_file)
    elif ff == "jsonl":
        write_jsonl(converted.table, data_file)
    else:
        raise ValueError(f"file_format must be 'jsonl' or 'parquet', not {ff!r}")
    paths = [data_file]
    if fmt.side_files is not None:
        paths += fmt.side_files(out, data_file, split, kind, side_options)
    result = ExportResult(paths, converted.rejects, converted.rows_in, converted.table.num_rows)
    if funnel is not None:
        funnel.add(f"export:{format}", result.rows_in, result.rows_written, result.rejects.num_rows)
    return result


class ShardedExport:
    """Export shard by shard: ``{split}-00000.{ext}``, ``{split}-00001.{ext}``, ... one
    file per call, so a run's output is written as it streams and never held whole. Pass
    it as the executor's ``sink``; :meth:`result` gives the paths and every reject, with
    ``row`` counted over all shards. ``load_dataset("parquet", data_files="out/train-*")``
    (or ``"json"``) reads the files back as one split.

    Formats with a side file naming one data file (``llamafactory``, ``axolotl``) need
    the whole table: use :func:`export`.

    >>> import tempfile
    >>> from prefdata.schema import PAIR_SCHEMA
    >>> pairs = pa.Table.from_pylist([{"prompt_id": "p", "strategy": "best-worst",
    ...     "prompt": [{"role": "user", "content": "2+2?"}], "chosen": "4", "rejected": "5"}],
    ...     schema=PAIR_SCHEMA)
    >>> sink = ShardedExport("trl-dpo", tempfile.mkdtemp())
    >>> sink(0, pairs); sink(1, pairs)
    >>> [p.name for p in sink.result()], sink.result().rows_written
    (['train-00000.parquet', 'train-00001.parquet'], 2)
    """

    def __init__(
        self,
        format: str,
        out_dir: str | os.PathLike,
        *,
        split: str = "train",
        file_format: FileFormat | None = None,
        **options: Any,
    ) -> None:
        if format not in FORMATS:
            raise ValueError(f"unknown format {format!r}; expected one of {sorted(FORMATS)}")
        if FORMATS[format].side_files is not None:
            raise ValueError(
                f"format {format!r} writes a side file naming one data file; "
                "export the whole table with export() instead"
            )
        self.format, self.out_dir, self.split = format, Path(out_dir), split
        self.file_format, self.options = file_format, options
        self._shards: dict[int, ExportResult] = {}

    def __call__(self, shard: int, table: pa.Table) -> None:
        self._shards[shard] = export(
            table,
            self.format,
            self.out_dir,
            split=f"{self.split}-{shard:05d}",
            file_format=self.file_format,
            **self.options,
        )

    def result(self, funnel: Funnel | None = None) -> ExportResult:
        """Every file written (shard order) and all rejects; ``funnel`` gets an
        ``export:<format>`` entry."""
        paths, rejects, offset, written = [], [], 0, 0
        for shard in sorted(self._shards):
            part = self._shards[shard]
            paths += part.paths
            if part.rejects.num_rows:
                rejects.append(shift_reject_rows(part.rejects, offset))
            # the export's own row count: trl-kto turns each pair into two rows
            offset += part.rows_in
            written += part.rows_written
        rejected = pa.concat_tables(rejects) if rejects else empty_rejects()
        result = ExportResult(paths, rejected, offset, written)
        if funnel is not None:
            funnel.add(
                f"export:{self.format}", result.rows_in, result.rows_written, rejected.num_rows
            )
        return result


def convert(table: pa.Table, format: str, **options: Any) -> Converted:
    """Convert without writing: the target-format table and the rejects."""
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; expected one of {sorted(FORMATS)}")
    return FORMATS[format].convert(table, **options)


def hub_table(table: pa.Table) -> Converted:
    """The table a Hub config should hold: TRL's conversational layout (pairs as trl-dpo,
    unpaired as trl-kto) with every other column kept (margin, generators, strategy, ...),
    which TRL's trainers ignore; lists keep their canonical layout."""
    kind = table_kind(table)
    if kind == "pair":
        return trl_dpo_table(table, keep="all")
    if kind == "unpaired":
        return trl_kto_table(table, keep="all")
    return Converted(table, empty_rejects(), table.num_rows)


__all__: Sequence[str] = [
    "FORMATS",
    "Converted",
    "ExportFormat",
    "ExportResult",
    "ShardedExport",
    "convert",
    "export",
    "hub_table",
    "unpair",
]
