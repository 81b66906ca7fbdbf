"""Unpaired examples for KTO: a completion and a real bool label.

Two sources:

- :class:`Unpaired`, a row-local stage over pools: every usable candidate becomes one example,
  labelled ``score >= threshold``. A pool needs ``min_candidates`` usable candidates (default
  1: KTO needs no partner) or it is rejected with a reason.
- :func:`unpair`, over a pairs table: chosen -> True, rejected -> False (TRL's
  ``unpair_preference_dataset`` does the same). With ``dedupe=True`` (default) a candidate
  that appears with the same label in several pairs is kept once; a candidate chosen in one
  pair and rejected in another keeps both labels, as TRL would, and both rows say
  ``"conflicting_labels": true`` in their provenance.

>>> import pyarrow as pa
>>> from prefdata.schema import pool_schema
>>> cands = [{"candidate_id": c, "response": c, "generator": "g", "scores": {"rm": s}, "flags": []}
...          for c, s in [("a", 0.2), ("b", 0.9)]]
>>> pools = pa.Table.from_pylist([{"prompt_id": "p", "prompt": [{"role": "user", "content": "Q"}],
...     "source": None, "metadata": None, "candidates": cands}], schema=pool_schema(["rm"]))
>>> Unpaired(score="rm", threshold=0.5)(pools).table["label"].to_pylist()
[False, True]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import polars as pl
import pyarrow as pa

from prefdata.construct.candidates import (
    ConstructStage,
    changed_config,
    dumps,
    few_usable_reasons,
    flatten,
    pool_rejects,
    provenance_prefix,
)
from prefdata.construct.pairs import invalid_pools
from prefdata.schema import UNPAIRED_SCHEMA, conform_types


@dataclass(frozen=True)
class Unpaired(ConstructStage):
    """Label each usable candidate ``score >= threshold`` (see the module docstring)."""

    score: str = ""
    threshold: float = 0.0
    min_candidates: int = 1

    provides: ClassVar[tuple[str, ...]] = tuple(UNPAIRED_SCHEMA.names)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.score:
            raise ValueError("Unpaired needs score='<scorer name>'")
        if self.min_candidates < 1:
            raise ValueError("min_candidates must be at least 1")

    def construct(self, table: pa.Table) -> tuple[pa.Table, np.ndarray, pa.Table]:
        invalid, reasons, fields = invalid_pools(table)
        flat = flatten(table, self.score, self.exclude_flags)
        few, few_fields = few_usable_reasons(flat, self.score, self.min_candidates)
        idx = np.flatnonzero(flat.usable & ~(invalid | few)[flat.pool])
        what = (
            "no usable candidate"
            if self.min_candidates == 1
            else f"fewer than {self.min_candidates} usable candidates"
        )
        rejected = np.flatnonzero(invalid | few)  # only these get a reason (no loop over all)
        for i in rejected.tolist():
            if reasons[i] is None:
                reasons[i], fields[i] = what, few_fields[i]
        rejects = pool_rejects(table, self.name, reasons, fields, rejected)
        ii, src = pa.array(idx, pa.int64()), pa.array(flat.pool[idx], pa.int64())
        score = flat.score[idx]
        prov = dumps(
            provenance_prefix(
                self,
                rule="score >= threshold",
                score=self.score,
                threshold=self.threshold,
                config=changed_config(self),
            )
        )
        out = pa.Table.from_arrays(
            [
                table["prompt_id"].take(src).combine_chunks(),
                table["prompt"]
                .take(src)
                .combine_chunks()
                .cast(UNPAIRED_SCHEMA.field("prompt").type),
                flat.column("response").take(ii),
                flat.column("candidate_id").take(ii),
                pa.array(score >= self.threshold, pa.bool_()),
                pa.array(score, pa.float64()),
                pa.repeat(pa.scalar(prov), idx.size),
            ],
            schema=UNPAIRED_SCHEMA,
        )
        return out, flat.pool[idx], rejects


def unpair(pairs: pa.Table, *, dedupe: bool = True, chosen_first: bool = False) -> pa.Table:
    """KTO examples from a pairs table: chosen -> ``True``, rejected -> ``False``.

    Rows come pair by pair, chosen first (``chosen_first``: every chosen, then every
    rejected, the order of TRL's ``unpair_preference_dataset``). ``score`` is
    ``chosen_score``/``rejected_score`` when the pairs carry them, and ``annotator_id``
    rides along when they have it. Not a stage: a pairs table has no pools to reject.

    >>> t = pa.table({"prompt_id": ["p", "p"], "prompt": [[{"role": "user", "content": "Q"}]] * 2,
    ...               "chosen": ["a", "a"], "rejected": ["b", "c"], "chosen_id": ["a", "a"],
    ...               "rejected_id": ["b", "c"], "strategy": ["all-pairs"] * 2})
    >>> [(r["completion"], r["label"]) for r in unpair(t).to_pylist()]
    [('a', True), ('b', False), ('c', False)]
    """
    n = pairs.num_rows

    def col(name: str, typ: pa.DataType) -> pa.Array:
        if name in pairs.column_names:
            return pairs[name].combine_chunks().cast(typ)
        return pa.nulls(n, typ)

    strategy = col("strategy", pa.string())
    annotated = "annotator_id" in pairs.column_names  # who said so travels with each side
    sides = []
    for side, label in (("chosen", True), ("rejected", False)):
        sides.append(
            pl.from_arrow(
                pa.table(
                    {
                        "i": pa.array(
                            np.arange(n) + (0 if label else n)
                            if chosen_first
                            else np.arange(n) * 2 + (0 if label else 1),
                            pa.int64(),
                        ),
                        "prompt_id": col("prompt_id", pa.string()),
                        "prompt": pairs["prompt"].combine_chunks(),
                        "completion": col(side, pa.string()),
                        "candidate_id": col(f"{side}_id", pa.string()),
                        "label": pa.array([label] * n, pa.bool_()),
                        "score": col(f"{side}_score", pa.float64()),
                        "strategy": strategy,
                        **({"annotator_id": col("annotator_id", pa.string())} if annotated else {}),
                    }
                )
            )
        )
    df = pl.concat(sides).sort("i")
    key = [pl.col("prompt_id"), pl.coalesce("candidate_id", "completion")]
    if annotated:  # two annotators' labels of one response are two examples
        key.append(pl.col("annotator_id"))
    if dedupe:
        df = df.filter(pl.struct(*key, "label").is_first_distinct())
    conflicts = pl.col("label").n_unique().over(key) > 1
    df = df.with_columns(conflict=conflicts)
    # one JSON string per distinct (conflict, label, strategy): few, so built in Python
    kinds = df.select("conflict", "label", "strategy").unique(maintain_order=True)
    kinds = kinds.with_columns(
        provenance=pl.Series(
            [
                dumps(
                    {
                        "conflicting_labels": c,
                        "side": "chosen" if lab else "rejected",
                        "source_strategy": st,
                        "stage": "unpair",
                    }
                )
                for c, lab, st in kinds.iter_rows()
            ],
            dtype=pl.String,
        )
    )
    df = df.join(
        kinds,
        on=["conflict", "label", "strategy"],
        how="left",
        nulls_equal=True,
        maintain_order="left",
    )
    names = [*UNPAIRED_SCHEMA.names, *(["annotator_id"] if annotated else [])]
    out = conform_types(df.select(names).to_arrow())
    schema = UNPAIRED_SCHEMA
    if annotated:
        schema = schema.append(pa.field("annotator_id", pa.string()))
    return out.cast(schema)


__all__ = ["Unpaired", "unpair"]
