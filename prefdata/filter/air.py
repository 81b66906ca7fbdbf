"""AIR-style selection ("AIR: A Systematic Analysis of Annotations, Instructions, and
Response Pairs in Preference Dataset"; ``../shared/METHODS.md``).

- :class:`StablePrompts`, the instruction side (the paper's inference-stability
  principle): for each pool, the mean score of each generator's candidates, and the spread
  (population std) of those means across generators. Prompts whose responses score alike
  whatever model answers are kept (``prefer="stable"``); ``prefer="varied"`` keeps the
  opposite. The cut-off is either ``max_spread`` (an absolute std, in the score's units) or
  ``keep`` (a share of the prompts, a dataset-level quantile: two-pass, fitted by the
  executor through :class:`~prefdata.fit.QuantileFit`). Pools with fewer than
  ``min_generators`` generators scored cannot be judged and are rejected with that reason.
- :class:`AirPairs`, the pair side: keep pairs with a moderate margin
  (``min_margin <= margin <= max_margin``) and a high absolute chosen score
  (``chosen_score >= min_chosen``), on the pair table's ``margin`` and ``chosen_score``
  (the ranking score of :class:`~prefdata.construct.Pairs`).

The paper does not publish its cut-offs [open]; the defaults are ours, for z-scored
scores: keep the more stable half of the prompts, margins between 0.5 and 2.5 standard
deviations, chosen at least 0.5 above the mean. Every rejected row names the value that
failed.

>>> import pyarrow as pa
>>> from prefdata.schema import pool_schema
>>> def pool(pid, scores):
...     return {"prompt_id": pid, "prompt": [{"role": "user", "content": "q"}],
...             "candidates": [{"candidate_id": f"{pid}{g}", "response": g, "generator": g,
...                             "scores": {"rm": s}} for g, s in scores]}
>>> t = pa.Table.from_pylist([pool("p", [("m1", 1.0), ("m2", 1.2)]),
...                           pool("q", [("m1", -2.0), ("m2", 2.0)])], schema=pool_schema(["rm"]))
>>> out = StablePrompts(score="rm", max_spread=0.5)(t)
>>> out.table["prompt_id"].to_pylist(), out.rejects["reason"].to_pylist()
(['p'], ['air: score spread across generators 2 > 0.5'])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prefdata.annotate.columns import score_array
from prefdata.arrow import flatten_candidates, to_float
from prefdata.fit import QuantileCut
from prefdata.pipeline import Stage, StageOutput, split


def generator_spread(table: pa.Table, score: str) -> tuple[np.ndarray, np.ndarray]:
    """Per pool: the population std, across generators, of each generator's mean score
    (candidates without the score left out), and how many generators were scored."""
    flat = flatten_candidates(table)
    n = table.num_rows
    if not len(flat.values):
        return np.full(n, np.nan), np.zeros(n, np.int64)

    # NumPy, in a fixed order (sorted by pool and generator): the same sums, bit for bit,
    # on every run, so a quantile cut-off never moves
    gen_codes = pc.dictionary_encode(
        pc.fill_null(pc.struct_field(flat.values, "generator").cast(pa.string()), "")
    ).indices.to_numpy(zero_copy_only=False)
    s = score_array(flat.values, score)
    ok = ~np.isnan(s)
    pool, gen, s = flat.parents[ok], gen_codes[ok], s[ok]
    order = np.lexsort((gen, pool))
    pool, gen, s = pool[order], gen[order], s[order]
    if not len(s):
        return np.full(n, np.nan), np.zeros(n, np.int64)
    start = np.flatnonzero(np.r_[True, (pool[1:] != pool[:-1]) | (gen[1:] != gen[:-1])])
    means = np.add.reduceat(s, start) / np.diff(np.r_[start, len(s)])
    g_pool = pool[start]
    p_start = np.flatnonzero(np.r_[True, g_pool[1:] != g_pool[:-1]])
    counts = np.diff(np.r_[p_start, len(g_pool)])
    mu = np.add.reduceat(means, p_start) / counts
    var = np.add.reduceat((means - np.repeat(mu, counts)) ** 2, p_start) / counts
    spread, gens = np.full(n, np.nan), np.zeros(n, np.int64)
    spread[g_pool[p_start]] = np.sqrt(var)
    gens[g_pool[p_start]] = counts
    return spread, gens


def _fmt(x: float) -> str:
    return f"{x:.4g}"


@dataclass(frozen=True)
class StablePrompts(QuantileCut, Stage):
    """Keep prompts by how much their score varies across generators (module docstring)."""

    score: str = ""
    prefer: Literal["stable", "varied"] = "stable"
    max_spread: float | None = None
    keep: float | None = 0.5
    min_generators: int = 2
    fitted_cut: float | None = field(default=None, metadata={"fingerprint": False})
    requires: ClassVar[tuple[str, ...]] = ("prompt_id", "candidates")
    cut_what: ClassVar[str] = (
        "the spread quantile of the whole dataset (keep=); or give max_spread="
    )

    def __post_init__(self) -> None:
        if not self.score:
            raise ValueError("StablePrompts needs score= (the score whose spread is judged)")
        if self.prefer not in ("stable", "varied"):
            raise ValueError(f"prefer must be 'stable' or 'varied', not {self.prefer!r}")
        if self.max_spread is not None:
            object.__setattr__(self, "keep", None)  # an absolute cut-off replaces the share
        elif self.keep is None or not 0 < self.keep <= 1:
            raise ValueError(f"keep must be in (0, 1], not {self.keep}")

    def required_columns(self) -> tuple[str, ...]:
        return (*self.requires, f"scores.{self.score}")

    def needs_cut(self) -> bool:
        return self.max_spread is None

    def acquire(self, table: pa.Table) -> np.ndarray:
        """Each pool's spread (NaN where too few generators were scored): what the
        dataset quantile is taken over."""
        spread, gens = generator_spread(table, self.score)
        return np.where(gens >= self.min_generators, spread, np.nan)

    def cut_quantile(self) -> float:
        assert self.keep is not None
        return self.keep if self.prefer == "stable" else 1.0 - self.keep

    def process(self, table: pa.Table) -> StageOutput:
        cut = self.max_spread if self.max_spread is not None else self.fitted_cut
        if cut is None:  # whole-table mode: the quantile of this table
            return self.fit().update(table).finalize()(table)
        spread, gens = generator_spread(table, self.score)
        judged = gens >= self.min_generators
        if self.prefer == "stable":
            keep = judged & (spread <= cut)
        else:
            keep = judged & (spread >= cut)
        op = ">" if self.prefer == "stable" else "<"
        reasons = [
            f"air: {int(g)} generator(s) scored, need {self.min_generators}"
            if g < self.min_generators
            else f"air: score spread across generators {_fmt(s)} {op} {_fmt(cut)}"
            for s, g in zip(spread, gens, strict=True)
        ]
        return split(table, keep, self.name, reasons, field=f"scores.{self.score}")


@dataclass(frozen=True)
class AirPairs(Stage):
    """Keep pairs with a moderate margin and a high chosen score (module docstring)."""

    min_margin: float = 0.5
    max_margin: float = 2.5
    min_chosen: float = 0.5
    requires: ClassVar[tuple[str, ...]] = ("prompt_id", "margin", "chosen_score")

    def process(self, table: pa.Table) -> StageOutput:
        margin = to_float(table["margin"])
        chosen = to_float(table["chosen_score"])
        reasons: list[str | None] = []
        fields: list[str | None] = []
        for m, c in zip(margin.tolist(), chosen.tolist(), strict=True):
            if not np.isfinite(m) or not self.min_margin <= m <= self.max_margin:
                reasons.append(
                    f"air: margin {_fmt(m)} outside [{_fmt(self.min_margin)}, "
                    f"{_fmt(self.max_margin)}]"
                )
                fields.append("margin")
            elif not np.isfinite(c) or c < self.min_chosen:
                reasons.append(f"air: chosen score {_fmt(c)} < {_fmt(self.min_chosen)}")
                fields.append("chosen_score")
            else:
                reasons.append(None)
                fields.append(None)
        keep = np.array([r is None for r in reasons], bool)
        return split(table, keep, self.name, reasons, field=fields)


__all__ = ["AirPairs", "StablePrompts", "generator_spread"]
