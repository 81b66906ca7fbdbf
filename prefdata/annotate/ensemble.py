"""Several scorers combined into one score per candidate, as in "Reward Model Ensembles
Help Mitigate Overoptimization" (Coste et al., arXiv:2310.02743; ``../shared/METHODS.md``).

Methods (``Ensemble(method=...)``), over the member fields ``scorers`` of each candidate:

- ``"mean"``: the mean of the members;
- ``"min"``: the worst case (WCO), the lowest member: a candidate is only as good as its
  most sceptical scorer;
- ``"uwo"``: the uncertainty-weighted mean, ``mean - lam * variance`` across members
  (population variance): candidates the members disagree on are pulled down.

Members must be on one scale first: give z-scored fields (``Normalise`` before, so
``rm.z``); the stage refuses raw fields unless ``allow_raw=True``. A candidate missing any
member (null) gets a null ensemble score, so it never wins on fewer opinions. The result
is a new score field, ``ensemble.<method>`` unless ``into`` names another, that every
construction strategy and export reads like any other score. Row-local.

``lam`` (UWO's weight on the variance) is not fixed by the paper (UWO was robust to it
there); the default 0.5 is ours.

>>> import pyarrow as pa
>>> from prefdata.schema import pool_schema
>>> rows = [{"prompt_id": "p", "prompt": [{"role": "user", "content": "q"}],
...          "candidates": [{"candidate_id": c, "response": c, "scores": s} for c, s in [
...              ("a", {"x.z": 1.0, "y.z": 3.0}), ("b", {"x.z": 2.0, "y.z": 2.0}),
...              ("c", {"x.z": 0.0, "y.z": None})]]}]
>>> t = pa.Table.from_pylist(rows, schema=pool_schema(["x.z", "y.z"]))
>>> for method in ("mean", "min", "uwo"):
...     out = Ensemble(("x.z", "y.z"), method=method)(t).table
...     print(method, [c["scores"][f"ensemble.{method}"] for c in out["candidates"][0].as_py()])
mean [2.0, 2.0, None]
min [1.0, 2.0, None]
uwo [1.5, 2.0, None]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prefdata.annotate.columns import score_array
from prefdata.arrow import flatten_candidates, float_array, rebuild_candidates, struct_with
from prefdata.pipeline import Stage
from prefdata.schema import score_names

EnsembleMethod = Literal["mean", "min", "uwo"]
METHODS: tuple[str, ...] = ("mean", "min", "uwo")
_SCALED = (".z", ".pz", ".rank")  # fields Normalise writes: one scale across scorers


def ensemble_scores(members: np.ndarray, method: str, lam: float = 0.5) -> np.ndarray:
    """One score per row of ``members`` (candidates x scorers, NaN where missing): NaN
    where any member is missing.

    >>> ensemble_scores(np.array([[1.0, 3.0], [2.0, np.nan]]), "uwo", lam=1.0).tolist()
    [1.0, nan]
    """
    if method not in METHODS:
        raise ValueError(f"unknown ensemble method {method!r}; expected one of {METHODS}")
    complete = ~np.isnan(members).any(axis=1)
    out = np.full(len(members), np.nan)
    if not complete.any():
        return out
    m = members[complete]
    if method == "mean":
        out[complete] = m.mean(axis=1)
    elif method == "min":
        out[complete] = m.min(axis=1)
    else:
        out[complete] = m.mean(axis=1) - lam * m.var(axis=1)
    return out


@dataclass(frozen=True)
class Ensemble(Stage):
    """Combine member score fields into one (module docstring)."""

    scorers: tuple[str, ...]
    method: EnsembleMethod = "mean"
    lam: float = 0.5
    into: str | None = None
    allow_raw: bool = False
    requires: ClassVar[tuple[str, ...]] = ("prompt_id", "candidates")

    def __post_init__(self) -> None:
        object.__setattr__(self, "scorers", tuple(self.scorers))
        if self.method not in METHODS:
            raise ValueError(f"unknown ensemble method {self.method!r}; expected one of {METHODS}")
        if len(self.scorers) < 2:
            raise ValueError(f"an ensemble needs at least 2 scorers, got {list(self.scorers)}")
        if self.lam < 0:
            raise ValueError(f"lam must be >= 0, got {self.lam}")
        raw = [s for s in self.scorers if not s.endswith(_SCALED)]
        if raw and not self.allow_raw:
            raise ValueError(
                f"ensemble members {raw} are not normalised: put Normalise() before and use "
                f"{[f'{s}.z' for s in raw]}, or pass allow_raw=True when they share a scale"
            )

    @property
    def output(self) -> str:
        """The score field written: ``into`` or ``ensemble.<method>``."""
        return self.into or f"ensemble.{self.method}"

    @property
    def name(self) -> str:
        """``Ensemble[<field>]``: two ensembles in one run are two funnel lines."""
        return f"Ensemble[{self.output}]"

    def required_columns(self) -> tuple[str, ...]:
        return self.requires + tuple(f"scores.{s}" for s in self.scorers)

    def provided_columns(self) -> tuple[str, ...]:
        return (f"scores.{self.output}",)

    def process(self, table: pa.Table) -> pa.Table:
        missing = [s for s in self.scorers if s not in score_names(table)]
        if missing:
            raise KeyError(f"{self.name}: no score fields {missing} (has {score_names(table)})")
        flat = flatten_candidates(table)
        members = np.column_stack(
            [score_array(flat.values, s) for s in self.scorers] or [np.zeros(len(flat.values))]
        )
        combined = ensemble_scores(members, self.method, self.lam)
        scores = struct_with(
            pc.struct_field(flat.values, "scores"), **{self.output: float_array(combined)}
        )
        return rebuild_candidates(table, flat, struct_with(flat.values, scores=scores))


__all__ = ["METHODS", "Ensemble", "ensemble_scores"]
