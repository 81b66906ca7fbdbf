"""Ensemble preference strength, label flipping and soft labels.

Secrets of RLHF in LLMs, Part II: for a pair and M scorers, ``d_m = r_m(chosen) -
r_m(rejected)``; ``strength_mean = mean_m d_m`` and ``strength_std`` = the *population*
standard deviation of the ``d_m`` (scorers that did not score both responses are left out;
no scorer at all gives nulls). Scores on different scales should be normalised first
(:class:`prefdata.annotate.Normalise`, then ``scorers=("rm.z", "judge.z")``).

Flipping (``flip=``): ``"negative"`` swaps pairs whose ``strength_mean < 0``; ``"below"``
swaps pairs whose ``strength_mean`` is below ``flip_below``: a dataset quantile computed
in a first pass by :func:`strength_quantile` (the paper's bottom ~20%). A swap exchanges
chosen/rejected text, ids, generators and per-scorer scores, negates ``margin``, the
``margins`` struct and ``strength_mean``, and sets the ``flipped`` column to true.

Soft label (Margin Matching Preference Optimization): ``p_chosen = sigmoid(gamma * x)``
with ``x`` = ``strength_mean`` (``soft_label_from="strength_mean"``) or the pair's
``margin`` column (``"margin"``). ``swap_below_half=True`` swaps pairs whose ``p_chosen <
0.5`` (then ``p_chosen`` becomes ``1 - p_chosen``), as the MMPO code does.

>>> import pyarrow as pa
>>> pairs = pa.table({"prompt_id": ["p"], "chosen": ["A"], "rejected": ["B"],
...     "chosen_scores": [{"a": 3.0, "b": 1.0}], "rejected_scores": [{"a": 1.0, "b": 1.0}]})
>>> row = Strength(gamma=2.0)(pairs).table.to_pylist()[0]
>>> row["strength_mean"], row["strength_std"], round(row["p_chosen"], 4)
(1.0, 1.0, 0.8808)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prefdata.annotate.columns import (
    CHOSEN_SCORES,
    REJECTED_SCORES,
    pair_differences,
    pair_scorers,
    sigmoid,
)
from prefdata.annotate.margins import MARGINS
from prefdata.arrow import float_array, set_column, to_float
from prefdata.pipeline import Stage

FLIPPED = "flipped"
_SWAP = [
    ("chosen", "rejected"),
    ("chosen_id", "rejected_id"),
    ("chosen_generator", "rejected_generator"),
    ("chosen_score", "rejected_score"),
    (CHOSEN_SCORES, REJECTED_SCORES),
]


def ensemble_strength(diffs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population std over scorers (columns) of a margin matrix, NaN-aware.

    >>> m, s = ensemble_strength(np.array([[1.0, 3.0, np.nan]]))
    >>> m.tolist(), s.tolist()
    ([2.0], [1.0])
    """
    n = np.sum(~np.isnan(diffs), axis=1)
    total = np.nansum(diffs, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, total / n, np.nan)
        sq = np.nansum((diffs - mean[:, None]) ** 2, axis=1)
        std = np.where(n > 0, np.sqrt(sq / n), np.nan)
    return mean, std


def swap_pairs(table: pa.Table, swap: np.ndarray) -> pa.Table:
    """Swap chosen and rejected where ``swap`` is true (text, ids, generators, scores),
    negate ``margin``, ``margins`` and ``strength_mean``, and toggle ``flipped``."""
    mask = pa.array(np.asarray(swap, dtype=bool))
    for a, b in _SWAP:
        if a in table.column_names and b in table.column_names:
            ca, cb = table[a], table[b]
            table = set_column(table, a, pc.if_else(mask, cb, ca))
            table = set_column(table, b, pc.if_else(mask, ca, cb))
    for col in ("margin", "strength_mean"):
        if col in table.column_names:
            table = set_column(table, col, pc.if_else(mask, pc.negate(table[col]), table[col]))
    if MARGINS in table.column_names and table.schema.field(MARGINS).type.num_fields:
        m = table[MARGINS].combine_chunks()
        fields = [f.name for f in m.type]
        neg = pa.StructArray.from_arrays(
            [
                pc.if_else(mask, pc.negate(pc.struct_field(m, f)), pc.struct_field(m, f))
                for f in fields
            ],
            names=fields,
        )
        table = set_column(table, MARGINS, neg)
    prev = (
        table[FLIPPED].combine_chunks().fill_null(False)
        if FLIPPED in table.column_names
        else pa.array(np.zeros(table.num_rows, dtype=bool))
    )
    return set_column(table, FLIPPED, pc.xor(prev, mask))


def strength_quantile(
    pairs: Iterable[pa.Table], q: float = 0.2, scorers: Sequence[str] = ()
) -> float:
    """First pass for ``Strength(flip="below")``: the ``q`` quantile of ``strength_mean``
    over every batch (exact; it keeps one float per pair). NaN when no pair is scored.

    >>> t = pa.table({"prompt_id": list("abcde"), "chosen": list("abcde"),
    ...     "rejected": list("abcde"),
    ...     "chosen_scores": [{"s": float(v)} for v in range(5)],
    ...     "rejected_scores": [{"s": 0.0}] * 5})
    >>> strength_quantile([t], 0.25)
    1.0
    """
    parts = []
    for t in pairs:
        names = pair_scorers(t, scorers)
        parts.append(ensemble_strength(pair_differences(t, names))[0])
    x = np.concatenate(parts) if parts else np.array([])
    x = x[~np.isnan(x)]
    return float(np.quantile(x, q, method="linear")) if x.size else float("nan")


@dataclass(frozen=True)
class Strength(Stage):
    """Ensemble strength, optional flipping and the soft label (module docstring)."""

    scorers: tuple[str, ...] = ()
    flip: Literal["none", "negative", "below"] = "none"
    flip_below: float | None = None
    gamma: float = 1.0
    soft_label_from: Literal["strength_mean", "margin"] = "strength_mean"
    swap_below_half: bool = False
    requires: ClassVar[tuple[str, ...]] = ("prompt_id", CHOSEN_SCORES, REJECTED_SCORES)
    provides: ClassVar[tuple[str, ...]] = ("strength_mean", "strength_std", "p_chosen", FLIPPED)

    def __post_init__(self) -> None:
        if self.flip not in ("none", "negative", "below"):
            raise ValueError(f"flip must be none, negative or below, not {self.flip!r}")
        if self.flip == "below" and self.flip_below is None:
            raise ValueError("flip='below' needs flip_below (see strength_quantile)")
        if self.soft_label_from not in ("strength_mean", "margin"):
            raise ValueError("soft_label_from must be strength_mean or margin")

    def process(self, table: pa.Table) -> pa.Table:
        names = pair_scorers(table, self.scorers)
        mean, std = ensemble_strength(pair_differences(table, names))
        table = set_column(table, "strength_mean", float_array(mean))
        table = set_column(table, "strength_std", float_array(std))
        if FLIPPED not in table.column_names:
            table = set_column(table, FLIPPED, pa.array(np.zeros(table.num_rows, dtype=bool)))
        if self.flip != "none":
            cut = 0.0 if self.flip == "negative" else float(self.flip_below)
            flip = np.nan_to_num(mean, nan=np.inf) < cut
            if flip.any():
                table = swap_pairs(table, flip)
        if self.soft_label_from == "margin":
            if "margin" not in table.column_names:
                raise KeyError("soft_label_from='margin' needs a margin column")
            x = to_float(table["margin"])
        else:
            x = to_float(table["strength_mean"])
        p = np.where(np.isnan(x), np.nan, sigmoid(np.nan_to_num(self.gamma * x)))
        if self.swap_below_half:
            low = np.nan_to_num(p, nan=1.0) < 0.5
            if low.any():
                table = swap_pairs(table, low)
                p = np.where(low, 1.0 - p, p)
        return set_column(table, "p_chosen", float_array(p))


__all__ = ["FLIPPED", "Strength", "ensemble_strength", "strength_quantile", "swap_pairs"]
