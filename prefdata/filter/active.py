"""Active preference selection ("Active Preference Learning for Large Language Models",
Muldrew et al.; code: willmuldrew/active-preference-learning; ``../shared/METHODS.md``):
choose what to send for labelling next from what the policy already knows.

Both acquisitions read log-probabilities the :class:`~prefdata.score.LogProb` scorer
writes (``{name}.sum``: the response's total log-probability):

- :class:`ActivePrompts` (``acquisition="entropy"``, on pools): the predictive entropy of
  the policy at a prompt, estimated from its own samples as ``-(1/n) sum_i log pi(y_i|x)``
  (the mean negative log-probability, ``policy`` field, over the candidates that have it);
  the prompts the policy is least sure about are kept.
- :class:`ActivePairs` (``acquisition="certainty"``, on pairs): the implicit DPO reward of a
  response, ``r(y) = beta * (log pi(y|x) - log pi_ref(y|x))``, gives the policy's own
  preference ``sigmoid(r(chosen) - r(rejected))``; the pairs it is most certain about,
  largest ``|sigmoid(...) - 0.5|``, are kept (the paper's best acquisition: a confident
  implicit preference that a label then confirms or corrects).

How many: ``top_k`` (per table: use it in a round where the whole round is one table, or
with the in-memory pipeline) or ``keep``, a share of the dataset (two-pass: the cut-off is
a dataset quantile that the executor fits first through :mod:`prefdata.fit`). The
acquisition value is written as a column (``acquisition``) and the rows not chosen are
rejected with theirs in the reason, so each round's funnel says what was left for later.

>>> import pyarrow as pa
>>> pairs = pa.table({"prompt_id": ["a", "b", "c"],
...     "chosen_scores": [{"pi.sum": -5.0, "ref.sum": -9.0}, {"pi.sum": -5.0, "ref.sum": -5.0},
...                       {"pi.sum": -9.0, "ref.sum": -5.0}],
...     "rejected_scores": [{"pi.sum": -9.0, "ref.sum": -5.0}, {"pi.sum": -5.0, "ref.sum": -5.0},
...                         {"pi.sum": -5.0, "ref.sum": -9.0}]})
>>> out = ActivePairs(policy="pi", reference="ref", beta=0.5, top_k=2)(pairs)
>>> out.table["prompt_id"].to_pylist(), [round(x, 3) for x in out.table["acquisition"].to_pylist()]
(['a', 'c'], [0.482, 0.482])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prefdata.annotate.columns import score_array, sigmoid
from prefdata.arrow import flatten_candidates, set_column, to_float
from prefdata.fit import QuantileCut
from prefdata.pipeline import Stage, StageOutput, split


def prompt_entropy(table: pa.Table, policy: str) -> np.ndarray:
    """Per pool: ``-(1/n) sum log pi(y_i|x)`` over the candidates with ``{policy}.sum``
    (NaN for a pool without any)."""
    flat = flatten_candidates(table)
    lp = score_array(flat.values, f"{policy}.sum") if len(flat.values) else np.zeros(0)
    ok = ~np.isnan(lp)
    n = table.num_rows
    total = np.bincount(flat.parents[ok], weights=-lp[ok], minlength=n)
    count = np.bincount(flat.parents[ok], minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def pair_certainty(table: pa.Table, policy: str, reference: str, beta: float) -> np.ndarray:
    """Per pair: ``|sigmoid(r(chosen) - r(rejected)) - 0.5|`` with the implicit reward
    ``r = beta * (log pi - log pi_ref)`` (NaN where a log-probability is missing)."""

    def side(col: str, model: str) -> np.ndarray:
        return to_float(pc.struct_field(table[col].combine_chunks(), f"{model}.sum"))

    r_w = beta * (side("chosen_scores", policy) - side("chosen_scores", reference))
    r_l = beta * (side("rejected_scores", policy) - side("rejected_scores", reference))
    return np.abs(sigmoid(r_w - r_l) - 0.5)


@dataclass(frozen=True)
class _Active(QuantileCut, Stage):
    top_k: int | None = None
    keep: float | None = None
    fitted_cut: float | None = field(default=None, metadata={"fingerprint": False})
    what: ClassVar[str] = ""
    cut_what: ClassVar[str] = (
        "the acquisition quantile of the whole dataset (keep=); or give top_k="
    )

    def __post_init__(self) -> None:
        if (self.top_k is None) == (self.keep is None):
            raise ValueError("give one of top_k= (per table) or keep= (a share of the dataset)")
        if self.keep is not None and not 0 < self.keep <= 1:
            raise ValueError(f"keep must be in (0, 1], not {self.keep}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, not {self.top_k}")

    def acquire(self, table: pa.Table) -> np.ndarray:
        raise NotImplementedError

    def needs_cut(self) -> bool:
        return self.keep is not None

    def cut_quantile(self) -> float:
        assert self.keep is not None
        return 1.0 - self.keep  # the top share

    def process(self, table: pa.Table) -> StageOutput:
        if self.keep is not None and self.fitted_cut is None:  # whole-table mode
            return self.fit().update(table).finalize()(table)
        v = self.acquire(table)
        scored = ~np.isnan(v)
        if self.top_k is not None:
            order = np.argsort(-np.where(scored, v, -np.inf), kind="stable")[: self.top_k]
            keep = np.zeros(len(v), bool)
            keep[order] = True
            keep &= scored
            cut = float(v[order[-1]]) if len(order) else float("nan")
        else:
            cut = self.fitted_cut
            keep = scored & (v >= cut)
        table = set_column(table, "acquisition", pa.array(v, pa.float64(), mask=~scored))
        reasons = [
            f"active: no {self.what} (a log-probability is missing)"
            if np.isnan(x)
            else f"active: {self.what} {x:.4g} below the cut-off {cut:.4g}"
            for x in v
        ]
        return split(table, keep, self.name, reasons, field="acquisition")


@dataclass(frozen=True)
class ActivePrompts(_Active):
    """Keep the prompts the policy is least sure about (module docstring)."""

    policy: str = "policy"
    what: ClassVar[str] = "predictive entropy"
    requires: ClassVar[tuple[str, ...]] = ("prompt_id", "candidates")
    provides: ClassVar[tuple[str, ...]] = ("acquisition",)

    def required_columns(self) -> tuple[str, ...]:
        return (*self.requires, f"scores.{self.policy}.sum")

    def acquire(self, table: pa.Table) -> np.ndarray:
        return prompt_entropy(table, self.policy)


@dataclass(frozen=True)
class ActivePairs(_Active):
    """Keep the pairs the policy's implicit preference is most certain about (module
    docstring)."""

    policy: str = "policy"
    reference: str = "ref"
    beta: float = 0.1
    what: ClassVar[str] = "certainty"
    requires: ClassVar[tuple[str, ...]] = ("prompt_id", "chosen_scores", "rejected_scores")
    provides: ClassVar[tuple[str, ...]] = ("acquisition",)

    def acquire(self, table: pa.Table) -> np.ndarray:
        return pair_certainty(table, self.policy, self.reference, self.beta)


__all__ = ["ActivePairs", "ActivePrompts", "pair_certainty", "prompt_entropy"]
