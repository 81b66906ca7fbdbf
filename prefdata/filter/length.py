"""Length-bias control for pairs.

:func:`length_bias_report` says how often the chosen response is the longer one (judges
and reward models favour length, so a share far above 0.5 is a warning).

:class:`LengthControl` writes ``length_ratio`` = len(chosen) / len(rejected) (in words or
characters; an empty side counts as length 1), optionally a length-controlled margin
``margin_lc = margin - alpha * ln(len(chosen) / len(rejected))`` (``alpha > 0``), and with
``min_margin`` and ``max_ratio`` drops pairs whose margin is small (``|margin| <
min_margin``) while their lengths differ a lot (longer / shorter > ``max_ratio``; with
``only_chosen_longer`` the chosen must be the longer one). The margin is the ``margin``
column, or ``scorer``'s margin from ``chosen_scores``/``rejected_scores``.

Reject reason: ``"length: small margin, chosen 3.1x longer"``.

>>> import pyarrow as pa
>>> pairs = pa.table({"prompt_id": ["a", "b"], "margin": [0.1, 2.0],
...     "chosen": ["one two three four", "x y z w"], "rejected": ["one", "x"]})
>>> length_bias_report(pairs)["chosen_longer"]
1.0
>>> out = LengthControl(min_margin=0.5, max_ratio=2.0)(pairs)
>>> out.table["prompt_id"].to_pylist(), out.rejects["reason"].to_pylist()
(['b'], ['length: small margin, chosen 4.0x longer'])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prefdata.annotate.columns import CHOSEN_SCORES, REJECTED_SCORES, pair_differences
from prefdata.arrow import float_array, set_column, to_float
from prefdata.pipeline import Stage, StageOutput, split

Unit = Literal["words", "chars"]


def text_lengths(texts: pa.ChunkedArray | pa.Array, unit: Unit = "words") -> np.ndarray:
    """Length of each text in words (runs of non-space) or characters."""
    texts = pc.fill_null(texts, "")
    if unit == "words":
        n = pc.count_substring_regex(texts, r"\S+")
    elif unit == "chars":
        n = pc.utf8_length(texts)
    else:
        raise ValueError(f"unit must be words or chars, not {unit!r}")
    if isinstance(n, pa.ChunkedArray):
        n = n.combine_chunks() if n.num_chunks else pa.array([], pa.int64())
    return n.to_numpy(zero_copy_only=False).astype(np.int64)


def length_bias_report(pairs: pa.Table, unit: Unit = "words") -> dict[str, Any]:
    """Shares of pairs where the chosen is longer / shorter / equal, and length ratios.

    ``chosen_longer`` is the share among pairs of unequal length (0.5 = no bias).
    """
    lc = text_lengths(pairs["chosen"], unit)
    lr = text_lengths(pairs["rejected"], unit)
    n = len(lc)
    unequal = lc != lr
    ratio = np.maximum(lc, 1) / np.maximum(lr, 1)
    return {
        "pairs": n,
        "unit": unit,
        "chosen_longer": float((lc > lr).sum() / max(unequal.sum(), 1)),
        "share_chosen_longer": float((lc > lr).mean()) if n else float("nan"),
        "share_rejected_longer": float((lc < lr).mean()) if n else float("nan"),
        "share_equal": float((~unequal).mean()) if n else float("nan"),
        "median_length_ratio": float(np.median(ratio)) if n else float("nan"),
        "mean_chosen_length": float(lc.mean()) if n else float("nan"),
        "mean_rejected_length": float(lr.mean()) if n else float("nan"),
    }


@dataclass(frozen=True)
class LengthControl(Stage):
    """Length ratio, length-controlled margin and the small-margin/long-chosen drop."""

    unit: Unit = "words"
    scorer: str | None = None
    alpha: float = 0.0
    min_margin: float | None = None
    max_ratio: float | None = None
    only_chosen_longer: bool = True
    requires: ClassVar[tuple[str, ...]] = ("prompt_id", "chosen", "rejected")
    provides: ClassVar[tuple[str, ...]] = ("length_ratio", "margin_lc")

    def __post_init__(self) -> None:
        if (self.min_margin is None) != (self.max_ratio is None):
            raise ValueError("set both min_margin and max_ratio, or neither")
        if self.max_ratio is not None and self.max_ratio < 1:
            raise ValueError(f"max_ratio must be >= 1, not {self.max_ratio}")

    def required_columns(self) -> tuple[str, ...]:
        if self.scorer:
            return self.requires + (CHOSEN_SCORES, REJECTED_SCORES)
        needs_margin = self.alpha or self.min_margin is not None
        return self.requires + (("margin",) if needs_margin else ())

    def _margin(self, table: pa.Table) -> np.ndarray:
        if self.scorer:
            return pair_differences(table, [self.scorer])[:, 0]
        if "margin" in table.column_names:
            return to_float(table["margin"])
        return np.full(table.num_rows, np.nan)

    def process(self, table: pa.Table) -> StageOutput:
        lc = np.maximum(text_lengths(table["chosen"], self.unit), 1)
        lr = np.maximum(text_lengths(table["rejected"], self.unit), 1)
        ratio = lc / lr
        table = set_column(table, "length_ratio", float_array(ratio))
        margin = self._margin(table)
        if self.alpha:
            table = set_column(table, "margin_lc", float_array(margin - self.alpha * np.log(ratio)))
        keep = np.ones(table.num_rows, dtype=bool)
        reasons: list[str] | str = ""
        if self.min_margin is not None:
            spread = np.maximum(ratio, 1 / ratio)
            small = np.abs(np.nan_to_num(margin, nan=np.inf)) < self.min_margin
            lopsided = spread > self.max_ratio
            if self.only_chosen_longer:
                lopsided &= ratio > 1
            keep = ~(small & lopsided)
            reasons = [
                f"length: small margin, chosen {r:.1f}x longer"
                if r >= 1
                else f"length: small margin, rejected {1 / r:.1f}x longer"
                for r in ratio
            ]
        return split(table, keep, self.name, reasons, field="chosen")


__all__ = ["LengthControl", "length_bias_report", "text_lengths"]
