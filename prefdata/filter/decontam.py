"""Decontamination: drop prompts whose word n-grams overlap a benchmark's prompts.

Both sides are normalised (:func:`prefdata.filter.text.normalise_text`: NFKC, lower case,
punctuation to spaces) and cut into word ``n``-grams (a text shorter than ``n`` words is
one gram of all its words). A prompt is contaminated when, for some benchmark item, the
share of the prompt's n-grams found in that item is at least ``threshold``
(``relative_to="prompt"``; or the share of the *item's* n-grams found in the prompt with
``relative_to="benchmark"``, for long prompts that quote a short test question). The
matched item with the largest overlap is recorded in the reason:
``"contaminated: <benchmark>#<index> (<share> of 8-grams) <first 60 characters>"``.

Benchmark file: ``.txt`` (one prompt per line), ``.jsonl``/``.json``/``.jsonl.gz``
(field ``field``, default the first of prompt/instruction/question/input/text present),
``.parquet``; or pass ``texts`` directly. Row-local once the benchmark index is loaded in
``setup()``; the n-gram join is columnar (polars), no Python per prompt.

>>> import pyarrow as pa
>>> from prefdata.schema import pool_schema
>>> rows = [{"prompt_id": "p", "prompt": [{"role": "user", "content": c}], "candidates": []}
...         for c in ["What is the capital city of France?", "Write a haiku about rain"]]
>>> stage = Decontaminate(texts=("what is the capital city of France",), n=3)
>>> out = stage(pa.Table.from_pylist(rows, schema=pool_schema()))
>>> out.rejects["reason"].to_pylist()
['contaminated: benchmark#0 (1.00 of 3-grams) what is the capital city of France']
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from prefdata.arrow import parents_of
from prefdata.filter.minhash import shingle_hashes
from prefdata.filter.text import normalise_text, prompt_text
from prefdata.pipeline import Stage, StageOutput, split

_FIELDS = ("prompt", "instruction", "question", "input", "text")


def read_benchmark(path: str | Path, field: str | None = None) -> list[str]:
    """Benchmark prompts from a txt, jsonl(.gz), json or parquet file."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith(".parquet"):
        table = pq.read_table(path)
        col = field or next((f for f in _FIELDS if f in table.column_names), None)
        if col is None:
            raise KeyError(f"{path}: no column among {_FIELDS}; pass field=")
        return [str(x) for x in table[col].to_pylist() if x is not None]
    opener = gzip.open if name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        if name.endswith(".txt") or name.endswith(".txt.gz"):
            return [line.rstrip("\n") for line in fh if line.strip()]
        text = fh.read()
    if name.endswith(".json") or name.endswith(".json.gz"):
        records = json.loads(text)
    else:
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
    out = []
    for i, rec in enumerate(records):
        if isinstance(rec, str):
            out.append(rec)
            continue
        col = field or next((f for f in _FIELDS if f in rec), None)
        if col is None or not isinstance(rec.get(col), str):
            raise KeyError(f"{path}: record {i} has no string field {field or _FIELDS}")
        out.append(rec[col])
    return out


def _grams(texts: pa.Array, n: int) -> pl.DataFrame:
    """Distinct (row, gram hash) pairs and each row's gram count."""
    h, off = shingle_hashes(normalise_text(texts), n)
    rows = parents_of(np.diff(off))
    return pl.DataFrame({"row": rows, "g": h}).unique()


@dataclass(frozen=True)
class Decontaminate(Stage):
    """Drop prompts overlapping benchmark prompts (module docstring)."""

    path: str | None = None
    texts: tuple[str, ...] = ()
    field: str | None = None
    benchmark_name: str = "benchmark"
    n: int = 8
    threshold: float = 0.5
    relative_to: Literal["prompt", "benchmark"] = "prompt"
    requires: ClassVar[tuple[str, ...]] = ("prompt_id", "prompt")

    def __post_init__(self) -> None:
        if not (self.path or self.texts):
            raise ValueError("Decontaminate needs a benchmark path or texts")
        if not 0 < self.threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], not {self.threshold}")

    def setup(self) -> None:
        items = list(self.texts) + (read_benchmark(self.path, self.field) if self.path else [])
        grams = _grams(pa.array(items, pa.string()), self.n).rename({"row": "item"})
        sizes = grams.group_by("item").agg(pl.len().alias("item_grams"))
        self.resources["items"] = items
        self.resources["grams"] = grams.join(sizes, on="item")

    def process(self, table: pa.Table) -> StageOutput:
        if "grams" not in self.resources:
            self.setup()
        items, bench = self.resources["items"], self.resources["grams"]
        mine = _grams(prompt_text(table), self.n)
        sizes = mine.group_by("row").agg(pl.len().alias("row_grams"))
        hits = (
            mine.join(bench, on="g")
            .group_by("row", "item")
            .agg(pl.len().alias("shared"), pl.col("item_grams").first())
            .join(sizes, on="row")
        )
        denom = "row_grams" if self.relative_to == "prompt" else "item_grams"
        best = (
            hits.with_columns((pl.col("shared") / pl.col(denom)).alias("share"))
            .sort(["row", "share", "item"], descending=[False, True, False])
            .group_by("row", maintain_order=True)
            .first()
            .filter(pl.col("share") >= self.threshold)
        )
        keep = np.ones(table.num_rows, dtype=bool)
        reasons = [""] * table.num_rows
        for row, item, share in best.select("row", "item", "share").iter_rows():
            keep[row] = False
            reasons[row] = (
                f"contaminated: {self.benchmark_name}#{item} ({share:.2f} of {self.n}-grams) "
                f"{items[item][:60]}"
            )
        return split(table, keep, self.name, reasons, field="prompt")


__all__ = ["Decontaminate", "read_benchmark"]
