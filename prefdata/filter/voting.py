"""Multi-RM voting: keep a pair (or a pool's best/worst choice) when at least ``k`` of the
``m`` scorers agree on its direction by at least ``min_margin``.

A scorer *votes* for a pair when ``d = score(chosen) - score(rejected)`` satisfies
``d > 0`` and ``d >= min_margin``. Normalise scorers first (``Normalise`` then vote on
``rm.z``, ``judge.z``) so one ``min_margin`` means the same on every scale. A scorer that
did not score both responses neither votes nor counts towards ``m``. Columns written:
``votes`` (int32, canonical) and ``agreement`` = votes / scorers that scored the pair.

Reject reasons: ``"vote: <v> of <m> scorers agree, need <k>"``.

>>> import pyarrow as pa
>>> pairs = pa.table({"prompt_id": ["p", "q"], "chosen": ["A", "C"], "rejected": ["B", "D"],
...     "chosen_scores": [{"a": 2.0, "b": 1.0, "c": 0.0}, {"a": 1.0, "b": 0.0, "c": 0.0}],
...     "rejected_scores": [{"a": 0.0, "b": 0.5, "c": 1.0}, {"a": 0.0, "b": 1.0, "c": 1.0}]})
>>> out = Vote(k=2)(pairs)
>>> out.table.select(["prompt_id", "votes"]).to_pylist(), out.rejects["reason"].to_pylist()
([{'prompt_id': 'p', 'votes': 2}], ['vote: 1 of 3 scorers agree, need 2'])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prefdata.annotate.columns import (
    CHOSEN_SCORES,
    REJECTED_SCORES,
    first_per_pool,
    pair_differences,
    pair_scorers,
    score_array,
)
from prefdata.arrow import flatten_candidates, float_array, set_column
from prefdata.pipeline import Stage, StageOutput, split
from prefdata.schema import score_names


def count_votes(diffs: np.ndarray, min_margin: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Votes and the number of scorers that scored, per row of a margin matrix.

    >>> v, m = count_votes(np.array([[0.5, 0.1, np.nan, -1.0]]), min_margin=0.2)
    >>> v.tolist(), m.tolist()
    ([1], [3])
    """
    scored = ~np.isnan(diffs)
    with np.errstate(invalid="ignore"):
        agree = scored & (diffs > 0) & (diffs >= min_margin)
    return agree.sum(axis=1).astype(np.int32), scored.sum(axis=1).astype(np.int32)


def _vote_split(
    table: pa.Table,
    votes: np.ndarray,
    m: np.ndarray,
    k: int,
    stage: str,
    reasons: list[str] | None = None,
    field: str = "votes",
) -> StageOutput:
    with np.errstate(invalid="ignore", divide="ignore"):
        agreement = np.where(m > 0, votes / np.maximum(m, 1), np.nan)
    table = set_column(table, "votes", pa.array(votes, type=pa.int32()))
    table = set_column(table, "agreement", float_array(agreement))
    keep = votes >= k
    if reasons is None:
        # a reason only for the rows that go (split reads no other): no Python per kept row
        reasons = [None] * len(keep)
        drop = np.flatnonzero(~keep)
        for i, v, n in zip(drop.tolist(), votes[drop].tolist(), m[drop].tolist(), strict=True):
            reasons[i] = f"vote: {v} of {n} scorers agree, need {k}"
    return split(table, keep, stage, reasons, field=field)


@dataclass(frozen=True)
class Vote(Stage):
    """Pair-level vote (module docstring). ``scorers`` empty = every field of
    ``chosen_scores``."""

    scorers: tuple[str, ...] = ()
    k: int = 2
    min_margin: float = 0.0
    requires: ClassVar[tuple[str, ...]] = ("prompt_id", CHOSEN_SCORES, REJECTED_SCORES)
    provides: ClassVar[tuple[str, ...]] = ("votes", "agreement")

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be >= 1, not {self.k}")
        if self.scorers and self.k > len(self.scorers):
            raise ValueError(f"k={self.k} exceeds the {len(self.scorers)} scorers")

    def process(self, table: pa.Table) -> StageOutput:
        names = pair_scorers(table, self.scorers)
        if self.k > len(names):
            raise ValueError(f"k={self.k} exceeds the {len(names)} scorers {names}")
        votes, m = count_votes(pair_differences(table, names), self.min_margin)
        return _vote_split(table, votes, m, self.k, self.name)


@dataclass(frozen=True)
class PoolVote(Stage):
    """Vote on a pool's best/worst choice before pairs are built.

    ``primary`` picks the best (highest) and worst (lowest) candidate of each pool (ties:
    the earlier candidate); every scorer in ``scorers`` then votes on ``best > worst`` as
    in :class:`Vote`. Writes ``best_id``, ``worst_id``, ``votes`` and ``agreement``; pools
    with fewer than two candidates scored by ``primary`` are rejected
    (``"vote: fewer than 2 scored candidates"``).
    """

    primary: str = ""
    scorers: tuple[str, ...] = ()
    k: int = 2
    min_margin: float = 0.0
    requires: ClassVar[tuple[str, ...]] = ("prompt_id", "candidates")
    provides: ClassVar[tuple[str, ...]] = ("best_id", "worst_id", "votes", "agreement")

    def required_columns(self) -> tuple[str, ...]:
        return self.requires + tuple(f"scores.{s}" for s in (self.primary, *self.scorers) if s)

    def process(self, table: pa.Table) -> StageOutput:
        if not self.primary:
            raise ValueError("PoolVote needs primary=<scorer> to pick best and worst")
        names = list(self.scorers) or [n for n in score_names(table)]
        if self.k > len(names):
            raise ValueError(f"k={self.k} exceeds the {len(names)} scorers {names}")
        flat = flatten_candidates(table)
        n = table.num_rows
        primary = score_array(flat.values, self.primary)
        scored_idx = np.flatnonzero(~np.isnan(primary))
        # best: highest primary, earliest candidate; worst: lowest primary, earliest
        best = first_per_pool(scored_idx, -primary, flat.parents, n)
        worst = first_per_pool(scored_idx, primary, flat.parents, n)
        valid = np.bincount(flat.parents[scored_idx], minlength=n) >= 2
        bi, wi = np.where(valid, best, 0), np.where(valid, worst, 0)
        diffs = np.zeros((n, len(names)))
        if len(primary):
            for j, name in enumerate(names):
                x = score_array(flat.values, name)
                diffs[:, j] = x[bi] - x[wi]
        diffs[~valid] = np.nan
        votes, m = count_votes(diffs, self.min_margin)
        ids = pc.struct_field(flat.values, "candidate_id")
        mask = pa.array(~valid)

        def take(a: np.ndarray) -> pa.Array:
            if not len(ids):
                return pa.nulls(n, pa.string())
            return pc.if_else(mask, None, ids.take(pa.array(a)))

        table = set_column(table, "best_id", take(bi))
        table = set_column(table, "worst_id", take(wi))
        reasons: list[str | None] = [None] * n
        for i in np.flatnonzero(votes < self.k).tolist():
            reasons[i] = (
                f"vote: {votes[i]} of {m[i]} scorers agree, need {self.k}"
                if valid[i]
                else "vote: fewer than 2 scored candidates"
            )
        return _vote_split(table, votes, m, self.k, self.name, reasons, "candidates")


__all__ = ["PoolVote", "Vote", "count_votes"]
