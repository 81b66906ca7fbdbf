"""Ranking a pool's candidates with a pairwise judge, asking far fewer than all pairs.

Methods (``RankPairwise(method=...)``), each comparison asked in both orders (A/B, B/A)
with the pairwise judge prompt of :class:`~prefdata.score.judge.JudgePairwise`, so
``p`` = the mean verdict over both orders (and ``generation.n`` samples):

- ``"pairs"``: PairS (Pairwise-preference Search, "Aligning with Human Judgement: The Role
  of Pairwise Preference in LLM Evaluators"): a merge sort driven by the judge, at most
  ``n ceil(log2 n)`` comparisons. A comparison whose two orders disagree (``p == 0.5``)
  is uncertain: it goes to the candidate the judge's answers favour once more samples are
  counted (``generation.n > 1``), else to the one earlier in the pool (stable), and is
  counted in ``{name}.uncertain``. The paper resolves such ties with the judge's token
  probabilities, which a chat backend does not expose [open].
- ``"knockout"``: a knockout tournament ("Pairwise RM: Best-of-N Sampling with Knockout
  Tournament"): candidates paired off in pool order round by round (an odd one out gets a
  bye), losers eliminated, ``n - 1`` comparisons; it finds the best, not a full order.
- ``"round-robin"``: every pair, ``n (n - 1) / 2`` comparisons, ranked by wins (ties by
  pool order): the reference the other two are measured against.

Score fields per candidate: ``{name}`` in [0, 1] (1 = best; pairs and round-robin: by rank,
``(n - 1 - rank) / (n - 1)``; knockout: the round a candidate was eliminated in over the
number of rounds, the winner 1), ``{name}.rank`` (0 = best; knockout: candidates out in the
same round share the rank), ``{name}.comparisons`` (the comparisons it took part in) and
``{name}.uncertain``. A comparison whose answers do not parse counts as uncertain and
flags the two candidates ``{name}_unparsed``. The ranks are scores like any other: every
construction strategy (``Pairs("best-worst", score="rank")``) and export reads them.

The algorithms are plain generators over indices (:func:`merge_sort`, :func:`knockout`,
:func:`round_robin`): they yield a comparison ``(a, b)``, receive ``p(a better than b)``,
and return each candidate's level (higher is better; a knockout's level is the round a
candidate left in). The stage runs one generator per pool and batches the pending
comparisons of every pool into one judge call per step.

>>> hidden = [0.3, 0.9, 0.1, 0.5, 0.7]   # a judge that always prefers the higher value
>>> def run(gen):
...     asked = 0
...     try:
...         a, b = gen.send(None)
...         while True:
...             asked += 1
...             a, b = gen.send(1.0 if hidden[a] > hidden[b] else 0.0)
...     except StopIteration as done:
...         return done.value, asked
>>> run(merge_sort(5))     # the full order: 2 < 0 < 3 < 4 < 1
([1, 4, 0, 2, 3], 8)
>>> run(knockout(5))       # 1 beats 0, 3 beats 2 (round 0); 1 beats 3; 1 beats 4 (the bye)
([0, 3, 0, 1, 2], 4)
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import pyarrow as pa

from prefdata.score.base import candidates_view, with_scores
from prefdata.score.judge import JudgePairwise

RankMethod = Literal["pairs", "knockout", "round-robin"]
METHODS = ("pairs", "knockout", "round-robin")
# A comparison: yields (a, b), receives p(a better than b) or None (unparsed).
Ranker = Generator[tuple[int, int], "float | None", list[int]]  # returns levels


def _wins(p: float | None) -> bool | None:
    """Whether a beats b; None when the judge is undecided (0.5) or silent."""
    if p is None or p == 0.5:
        return None
    return p > 0.5


def merge_sort(n: int) -> Ranker:
    """Levels of candidates ``0..n-1`` (``n - 1`` = best) by a top-down merge sort (ties:
    the earlier candidate first); at most ``n ceil(log2 n)`` comparisons."""

    def sort(items: list[int]) -> Generator:
        if len(items) < 2:
            return items
        mid = len(items) // 2
        left = yield from sort(items[:mid])
        right = yield from sort(items[mid:])
        out, i, j = [], 0, 0
        while i < len(left) and j < len(right):
            a, b = left[i], right[j]
            won = _wins((yield (a, b)))
            if won is None:
                won = a < b  # undecided: the earlier candidate of the pool
            if won:
                out.append(a)
                i += 1
            else:
                out.append(b)
                j += 1
        return out + left[i:] + right[j:]

    return _levels((yield from sort(list(range(n)))))


def knockout(n: int) -> Ranker:
    """The round each of candidates ``0..n-1`` was knocked out in (0 = the first round;
    the winner: the number of rounds), pairing the survivors in pool order each round (an
    odd one out gets a bye); ``n - 1`` comparisons."""
    alive, left_in = list(range(n)), [0] * n
    round_ = 0
    while len(alive) > 1:
        nxt = []
        for k in range(0, len(alive) - 1, 2):
            a, b = alive[k], alive[k + 1]
            won = _wins((yield (a, b)))
            if won is None:
                won = a < b
            nxt.append(a if won else b)
            left_in[b if won else a] = round_
        if len(alive) % 2:
            nxt.append(alive[-1])  # a bye
        alive, round_ = nxt, round_ + 1
    if alive:
        left_in[alive[0]] = round_
    return left_in


def round_robin(n: int) -> Ranker:
    """Levels of candidates ``0..n-1`` by wins over every other (a tie is half a win;
    ties in wins by pool order); ``n (n - 1) / 2`` comparisons."""
    wins = [0.0] * n
    for a in range(n):
        for b in range(a + 1, n):
            p = yield (a, b)
            if p is not None:
                wins[a] += p
                wins[b] += 1.0 - p
    return _levels(sorted(range(n), key=lambda c: (-wins[c], c)))


def _levels(order: list[int]) -> list[int]:
    """Best-first ``order`` as levels (the best gets ``n - 1``)."""
    levels = [0] * len(order)
    for pos, c in enumerate(order):
        levels[c] = len(order) - 1 - pos
    return levels


RANKERS = {"pairs": merge_sort, "knockout": knockout, "round-robin": round_robin}


@dataclass(frozen=True)
class RankPairwise(JudgePairwise):
    """Rank each pool's candidates with a pairwise judge (module docstring)."""

    method: RankMethod = "pairs"
    name: str = "rank"
    checkpoint: ClassVar[bool | None] = True

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown ranking method {self.method!r}; expected one of {METHODS}")
        if self.reference is not None:
            raise ValueError("RankPairwise ranks within each pool: it takes no reference")

    def score_fields(self) -> tuple[str, ...]:
        n = self.name
        return (n, f"{n}.rank", f"{n}.comparisons", f"{n}.uncertain")

    def process(self, table: pa.Table) -> pa.Table:
        view = candidates_view(table)
        total = len(view)
        score = np.full(total, np.nan)
        rank = np.full(total, np.nan)
        asked = np.zeros(total)
        uncertain = np.zeros(total)
        flags: list[list[str]] = [[] for _ in range(total)]
        # one ranker per pool of two or more candidates; a lone candidate is simply first
        live: dict[int, tuple[Ranker, int, tuple[int, int]]] = {}
        for r in range(table.num_rows):
            lo, hi = int(view.offsets[r]), int(view.offsets[r + 1])
            if hi - lo == 1:
                score[lo], rank[lo] = 1.0, 0.0
            elif hi - lo > 1:
                gen = RANKERS[self.method](hi - lo)
                live[r] = (gen, lo, gen.send(None))
        while live:
            pairs = [(r, lo + a, lo + b) for r, (_, lo, (a, b)) in live.items()]
            _, rows = self._compare(view, table, pairs)
            full = 2 * self.generation.n
            for (r, i, j), x in zip(pairs, rows, strict=True):
                gen, lo, _ = live[r]
                p = x["p_a_better"]
                asked[[i, j]] += 1
                if p is None or p == 0.5:
                    uncertain[[i, j]] += 1
                if x["parsed"] < full:
                    flags[i].append(f"{self.name}_unparsed")
                    flags[j].append(f"{self.name}_unparsed")
                try:
                    live[r] = (gen, lo, gen.send(p))
                except StopIteration as done:
                    del live[r]
                    levels = np.asarray(done.value, np.float64)
                    top = levels.max()
                    score[lo : lo + len(levels)] = levels / top
                    rank[lo : lo + len(levels)] = top - levels
        values = {
            self.name: score,
            f"{self.name}.rank": rank,
            f"{self.name}.comparisons": asked,
            f"{self.name}.uncertain": uncertain,
        }
        flags = [sorted(set(f)) for f in flags]
        return with_scores(table, values, flags=flags)


__all__ = ["METHODS", "RankPairwise", "knockout", "merge_sort", "round_robin"]
