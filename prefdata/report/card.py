"""The dataset card (README.md) of a Hub folder: YAML metadata and a Markdown body with
counts, margin and score statistics, scorer agreement, generators, the pipeline's stages
(configs and fingerprints) and the funnel.

The YAML front matter itself (configs, dataset_info) is assembled in
:mod:`prefdata.io.hub` with the ``datasets`` library's own card helpers, exactly as
``push_to_hub`` writes it; this module supplies the rest of the metadata and the body.

Inputs the card takes (all optional but ``pretty_name``), as a :class:`CardInfo` or a dict
with the same keys:

- ``stages``: the pipeline's stages, either :class:`prefdata.pipeline.Stage` objects or dicts
  ``{"name": str, "config": dict, "fingerprint": str}``;
- ``funnel``: a :class:`prefdata.pipeline.Funnel` or its ``to_list()`` form, a list of dicts
  ``{"stage", "rows_in", "rows_out", "rows_rejected"}``;
- ``pools``: the pool table the data was built from (scorer agreement across all candidate
  pairs, and pool-level generator counts);
- ``license``, ``language``, ``task_categories``, ``tags`` (added to those derived from the
  content), ``description``, ``source_datasets``, ``seed``, ``extra`` (a dict listed as is);
- ``input_digests``: ``{file name: SHA-256}`` of the input files (:func:`file_digests`:
  what ``sha256sum`` prints), so a reader can check they hold the same input;
- ``created``: the date the data was built (``YYYY-MM-DD``; :func:`build_date`).

The card always states the prefdata version that built the data, and, with ``pools``, the
candidates dropped inside pools by reason (flagged responses, collapsed duplicates), which
no row count shows.

>>> info = CardInfo(pretty_name="Demo", stages=[{"name": "Read", "config": {"n": 1},
...                                              "fingerprint": "abc"}])
>>> "| 1 | Read | `abc` |" in render_body({"default": {"train": pa.table({"x": [1]})}}, info)
True
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from prefdata.report.stats import (
    dropped_counts,
    scorer_agreement,
    size_category,
    table_stats,
    value_counts,
)

PIPELINE_NAME = "prefdata"


@dataclass
class CardInfo:
    """What the card says beyond what the tables show (see the module docstring)."""

    pretty_name: str
    license: str = "other"
    language: list[str] = field(default_factory=lambda: ["en"])
    task_categories: list[str] = field(default_factory=lambda: ["text-generation"])
    tags: list[str] = field(default_factory=list)
    description: str = ""
    source_datasets: list[str] = field(default_factory=list)
    stages: Sequence[Any] = field(default_factory=list)
    funnel: Any = None
    pools: pa.Table | None = None
    seed: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    input_digests: dict[str, str] = field(default_factory=dict)
    created: str | None = None

    @classmethod
    def of(cls, card: CardInfo | Mapping[str, Any]) -> CardInfo:
        if isinstance(card, CardInfo):
            return card
        unknown = set(card) - set(cls.__dataclass_fields__)
        if unknown:
            raise TypeError(f"unknown card fields {sorted(unknown)}")
        return cls(**card)


def build_date() -> str:
    """Today's date (UTC), or that of ``SOURCE_DATE_EPOCH`` when set (the reproducible
    builds convention: set it to rebuild a card byte for byte on another day).

    >>> import os; os.environ["SOURCE_DATE_EPOCH"] = "0"; build_date()
    '1970-01-01'
    >>> del os.environ["SOURCE_DATE_EPOCH"]
    """
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    moment = datetime.fromtimestamp(int(epoch), UTC) if epoch else datetime.now(UTC)
    return moment.strftime("%Y-%m-%d")


def file_digests(paths: Sequence[str | os.PathLike]) -> dict[str, str]:
    """``{name: SHA-256 hex}`` of each file (a folder: each file in it, by relative path).

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.txt"; _ = p.write_bytes(b"abc")
    >>> file_digests([p])["a.txt"][:16]
    'ba7816bf8f01cfea'
    """
    out = {}
    for path in map(Path, paths):
        files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
        for f in files:
            h = hashlib.sha256()
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
            out[str(f.relative_to(path)) if path.is_dir() else f.name] = h.hexdigest()
    return out


def stage_records(stages: Sequence[Any]) -> list[dict[str, Any]]:
    """Stages as ``{"name", "config", "fingerprint"}`` dicts.

    >>> stage_records([{"name": "S", "config": {}, "fingerprint": "f"}])[0]["name"]
    'S'
    """
    out = []
    for s in stages:
        if isinstance(s, Mapping):
            missing = {"name", "fingerprint"} - set(s)
            if missing:
                raise ValueError(f"stage record {s!r} lacks {sorted(missing)}")
            out.append(
                {
                    "name": s["name"],
                    "config": dict(s.get("config") or {}),
                    "fingerprint": s["fingerprint"],
                }
            )
        else:  # a Stage object
            out.append({"name": s.name, "config": s.config(), "fingerprint": s.fingerprint})
    return out


def funnel_records(funnel: Any) -> list[dict[str, Any]]:
    """A funnel (``Funnel`` or its ``to_list()``) as a checked list of dicts."""
    if funnel is None:
        return []
    items = funnel.to_list() if hasattr(funnel, "to_list") else list(funnel)
    for e in items:
        if e["rows_in"] != e["rows_out"] + e["rows_rejected"]:
            raise ValueError(f"funnel entry {e!r} does not add up")
    return items


def content_tags(configs: Mapping[str, Mapping[str, pa.Table]]) -> list[str]:
    """Tags the content calls for: ``dpo`` and ``preference`` for pairs, ``kto`` for unpaired
    rows, ``listwise`` for ranked lists, ``rationale`` when rationales are present,
    ``synthetic`` when responses come from models."""
    tags = {PIPELINE_NAME}
    for splits in configs.values():
        for t in splits.values():
            names = set(t.column_names)
            if {"chosen", "rejected"} <= names:
                tags |= {"dpo", "preference", "reward-modeling"}
            if {"completion", "label"} <= names:
                tags |= {"kto", "preference"}
            if "responses" in names:
                tags |= {"listwise", "ranking", "preference"}
            if "rationale" in names and t["rationale"].null_count < t.num_rows:
                tags.add("rationale")
            if any(n.endswith("generator") for n in names) or "responses" in names:
                tags.add("synthetic")
    return sorted(tags)


def card_metadata(configs: Mapping[str, Mapping[str, pa.Table]], info: CardInfo) -> dict[str, Any]:
    """The YAML keys other than ``configs`` / ``dataset_info``."""
    largest = max((sum(t.num_rows for t in s.values()) for s in configs.values()), default=0)
    meta: dict[str, Any] = {
        "license": info.license,
        "language": list(info.language),
        "task_categories": list(info.task_categories),
        "tags": sorted(set(content_tags(configs)) | set(info.tags)),
        "size_categories": [size_category(largest)],
        "pretty_name": info.pretty_name,
    }
    if info.source_datasets:
        meta["source_datasets"] = list(info.source_datasets)
    return meta


def _fmt(x: Any) -> str:
    if x is None:
        return ""
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _numeric_table(numeric: Mapping[str, Mapping[str, Any]]) -> list[str]:
    cols = ["count", "nulls", "mean", "std", "min", "p25", "median", "p75", "max"]
    lines = ["| column | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, s in numeric.items():
        lines.append(f"| {name} | " + " | ".join(_fmt(s.get(c)) for c in cols) + " |")
    return lines


def _counts(title: str, counts: Mapping[str, int], limit: int = 30) -> list[str]:
    lines = [f"**{title}**", "", "| value | rows |", "|---|---|"]
    items = list(counts.items())
    for k, v in items[:limit]:
        lines.append(f"| {_md_escape(k)} | {v} |")
    if len(items) > limit:
        lines.append(f"| ({len(items) - limit} more) | {sum(v for _, v in items[limit:])} |")
    return lines + [""]


def render_body(
    configs: Mapping[str, Mapping[str, pa.Table]],
    info: CardInfo,
    *,
    files: Mapping[str, Mapping[str, list[str]]] | None = None,
) -> str:
    """The Markdown body of the card."""
    out = [f"# {info.pretty_name}", ""]
    if info.description:
        out += [info.description.strip(), ""]
    out += [
        f"Preference data built with `{PIPELINE_NAME}`. Pair configs use TRL's conversational "
        "layout with an explicit prompt (`prompt`, `chosen`, `rejected` message lists); extra "
        "columns such as `margin` are kept and ignored by TRL's trainers.",
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        f'ds = load_dataset("<repo id or this folder>", "{next(iter(configs), "default")}")',
        "```",
        "",
        "## Configs and splits",
        "",
        "| config | split | rows | prompts | files |",
        "|---|---|---|---|---|",
    ]
    stats: dict[tuple[str, str], dict[str, Any]] = {}
    for cfg, splits in configs.items():
        for split, table in splits.items():
            s = stats[(cfg, split)] = table_stats(table)
            n_files = len((files or {}).get(cfg, {}).get(split, [])) or ""
            out.append(f"| {cfg} | {split} | {s['rows']} | {_fmt(s.get('prompts'))} | {n_files} |")
    out.append("")

    out += ["## Statistics", ""]
    for (cfg, split), s in stats.items():
        out += [f"### {cfg} / {split}", ""]
        if s["numeric"]:
            out += ["Margin and score statistics:", ""] + _numeric_table(s["numeric"]) + [""]
        if s.get("length_chars"):
            out += ["Response length (characters):", ""]
            out += _numeric_table(s["length_chars"]) + [""]
        if s.get("strategies"):
            out += _counts("Strategies", s["strategies"])
        if s.get("labels"):
            out += _counts("Labels", s["labels"])
        if "rationales" in s:
            out += [f"Rows with a rationale: {s['rationales']}", ""]

    out += ["## Scorer agreement", ""]
    agreement = {}
    for (cfg, split), _ in stats.items():
        a = scorer_agreement(configs[cfg][split])
        if a:
            agreement[f"{cfg} / {split}"] = a
    if info.pools is not None:
        a = scorer_agreement(info.pools)
        if a:
            agreement["pools (all candidate pairs)"] = a
    if agreement:
        out += [
            "Share of response pairs on which two scorers agree about which response is better "
            "(sign of the score difference).",
            "",
            "| data | scorers | pairs | agreement |",
            "|---|---|---|---|",
        ]
        for where, a in agreement.items():
            for pair, v in a.items():
                out.append(f"| {where} | {pair} | {v['pairs']} | {_fmt(v['agreement'])} |")
        out.append("")
    else:
        out += ["Not available: fewer than two score fields in the data.", ""]

    out += ["## Generators", ""]
    any_gen = False
    for (cfg, split), s in stats.items():
        for side, counts in (s.get("generators") or {}).items():
            out += _counts(f"{cfg} / {split}: {side}", counts)
            any_gen = True
    if info.pools is not None and "candidates" in info.pools.column_names:
        gens = (
            pl.from_arrow(info.pools.select(["candidates"]))
            .explode("candidates")
            .drop_nulls("candidates")
            .select(pl.col("candidates").struct.field("generator"))
            .to_series()
            .to_arrow()
        )
        out += _counts("pools: candidates per generator", value_counts(gens))
        any_gen = True
    if not any_gen:
        out += ["No generator columns in the data.", ""]

    out += ["## Pipeline", ""]
    stages = stage_records(info.stages)
    if stages:
        out += ["| # | stage | fingerprint | config |", "|---|---|---|---|"]
        for i, s in enumerate(stages, 1):
            cfg_json = json.dumps(s["config"], sort_keys=True, default=str)
            out.append(f"| {i} | {s['name']} | `{s['fingerprint']}` | `{_md_escape(cfg_json)}` |")
        out.append("")
    else:
        out += ["No stages recorded.", ""]
    if info.seed is not None:
        out += [f"Seed: {info.seed}", ""]

    out += ["## Funnel", ""]
    funnel = funnel_records(info.funnel)
    if funnel:
        out += ["| stage | rows in | rows out | rejected |", "|---|---|---|---|"]
        for e in funnel:
            out.append(
                f"| {e['stage']} | {e['rows_in']} | {e['rows_out']} | {e['rows_rejected']} |"
            )
        out.append("")
    else:
        out += ["No funnel recorded.", ""]

    if info.pools is not None:
        dropped = dropped_counts(info.pools)
        out += ["## Candidates dropped inside pools", ""]
        if dropped:
            out += [
                "Responses removed from their pool (the pool itself was kept, so the funnel's "
                "row counts do not show them):",
                "",
                "| reason | candidates |",
                "|---|---|",
            ]
            out += [f"| {_md_escape(r)} | {n} |" for r, n in dropped.items()]
            out.append("")
        else:
            out += ["None.", ""]

    from prefdata import __version__

    out += ["## Provenance", "", f"- built with prefdata {__version__}"]
    if info.created:
        out.append(f"- created: {info.created}")
    out += [f"- source: {s}" for s in info.source_datasets]
    out += [f"- input file `{name}`: SHA-256 `{d}`" for name, d in info.input_digests.items()]
    out += [f"- {k}: {_md_escape(json.dumps(v, default=str))}" for k, v in info.extra.items()]
    out.append("")
    out += ["## License", "", f"`{info.license}`", ""]
    return "\n".join(out)
