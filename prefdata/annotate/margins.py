"""Per-scorer margins of pairs: ``score(chosen) - score(rejected)`` under each scorer.

Reads ``chosen_scores`` / ``rejected_scores`` (see :mod:`prefdata.annotate.pair_scores`) and
writes a ``margins`` column, ``struct<name: float64, ...>``, null where a scorer did not
score both responses. ``margin_from`` also sets the canonical ``margin`` column from one
scorer (the construction scorer usually sets it already).

>>> import pyarrow as pa
>>> pairs = pa.table({"prompt_id": ["p"], "chosen": ["A"], "rejected": ["B"],
...     "chosen_scores": [{"rm": 2.0, "judge": 7.0}],
...     "rejected_scores": [{"rm": 0.5, "judge": 8.0}]})
>>> Margins(margin_from="rm")(pairs).table.select(["margin", "margins"]).to_pylist()
[{'margin': 1.5, 'margins': {'rm': 1.5, 'judge': -1.0}}]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pyarrow as pa

from prefdata.annotate.columns import CHOSEN_SCORES, REJECTED_SCORES, pair_differences, pair_scorers
from prefdata.arrow import float_array, set_column
from prefdata.pipeline import Stage
from prefdata.schema import empty_scores

MARGINS = "margins"


def margin_matrix(pairs: pa.Table, scorers: Sequence[str] = ()) -> tuple[list[str], np.ndarray]:
    """The scorers used and the (rows x scorers) matrix of margins (NaN = unscored)."""
    names = pair_scorers(pairs, scorers)
    return names, pair_differences(pairs, names)


def margins_struct(names: Sequence[str], diffs: np.ndarray) -> pa.StructArray:
    arrays = [float_array(diffs[:, j]) for j in range(len(names))]
    if not arrays:
        return empty_scores(diffs.shape[0])
    return pa.StructArray.from_arrays(arrays, names=list(names))


@dataclass(frozen=True)
class Margins(Stage):
    """Add the ``margins`` struct (one field per scorer); optionally set ``margin``."""

    scorers: tuple[str, ...] = ()
    margin_from: str | None = None
    requires: ClassVar[tuple[str, ...]] = ("prompt_id", CHOSEN_SCORES, REJECTED_SCORES)
    provides: ClassVar[tuple[str, ...]] = (MARGINS,)

    def provided_columns(self) -> tuple[str, ...]:
        return self.provides + (("margin",) if self.margin_from else ())

    def process(self, table: pa.Table) -> pa.Table:
        names, diffs = margin_matrix(table, self.scorers)
        table = set_column(table, MARGINS, margins_struct(names, diffs))
        if self.margin_from:
            if self.margin_from not in names:
                raise KeyError(f"margin_from {self.margin_from!r} is not among {names}")
            table = set_column(
                table, "margin", float_array(diffs[:, names.index(self.margin_from)])
            )
        return table


__all__ = ["MARGINS", "Margins", "margin_matrix", "margins_struct"]
