"""Use an existing column of an imported dataset as a score.

>>> from prefdata.score.base import pools_from_texts
>>> t = pools_from_texts(["Q"], [["a", "b"]], columns={"ratings": [[4.5, 2.0]], "pool_q": [0.7]})
>>> out = FromColumn("ratings", name="uf")(t).table
>>> out = FromColumn("pool_q")(out).table
>>> [c["scores"] for c in out["candidates"].to_pylist()[0]]
[{'uf': 4.5, 'pool_q': 0.7}, {'uf': 2.0, 'pool_q': 0.7}]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prefdata.arrow import list_lengths
from prefdata.score.base import Scorer, candidates_view, with_scores

__all__ = ["FromColumn"]


@dataclass(frozen=True)
class FromColumn(Scorer):
    """Copy a numeric column into ``candidates.scores.<name>`` (``name`` defaults to the
    column name).

    ``column`` may be a pool-level column, either a list with one value per candidate
    (aligned with ``candidates``; a length mismatch raises naming the row and column) or a
    scalar given to every candidate of the pool, or ``scores.<field>`` to copy an existing
    score under a new name. Booleans become 1.0 / 0.0; null and NaN stay null (not scored).
    Strings are refused (cast them first), so nothing is parsed silently.
    """

    column: str
    name: str = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.name is None:
            object.__setattr__(self, "name", self.column.removeprefix("scores."))

    def required_columns(self) -> tuple[str, ...]:
        return (*self.requires, self.column)

    def source(self) -> dict[str, Any]:
        return {"column": self.column, "function": "prefdata.score.column.FromColumn"}

    def _numeric(self, arr: pa.Array) -> pa.Array:
        t = arr.type
        if (
            pa.types.is_boolean(t)
            or pa.types.is_integer(t)
            or pa.types.is_floating(t)
            or (pa.types.is_decimal(t) or pa.types.is_null(t))
        ):
            return pc.cast(arr, pa.float64())
        raise TypeError(f"FromColumn({self.column!r}): values of type {t} are not numeric")

    def process(self, table: pa.Table) -> pa.Table:
        view = candidates_view(table)
        if self.column.startswith("scores."):
            vals = view.struct.field("scores").field(self.column.removeprefix("scores."))
            return with_scores(table, {self.name: self._numeric(vals)})
        col = table[self.column].combine_chunks()
        if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
            lengths = list_lengths(col)
            counts = np.diff(view.offsets)
            bad = np.flatnonzero(lengths != counts)
            if len(bad):
                r = int(bad[0])
                raise ValueError(
                    f"FromColumn: row {r} (prompt_id {table['prompt_id'][r].as_py()!r}): "
                    f"column {self.column!r} has {int(lengths[r])} values for "
                    f"{int(counts[r])} candidates ({len(bad)} rows mismatch)"
                )
            vals = self._numeric(pc.list_flatten(col))
        else:
            vals = self._numeric(col).take(pa.array(view.row, pa.int64()))
        return with_scores(table, {self.name: vals})
