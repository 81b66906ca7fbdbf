"""Preference pairs from scored pools: one stage, seven strategies.

``Pairs(strategy, score=...)`` maps each pool row to zero or more pair rows
(``PAIR_SCHEMA`` plus ``chosen_score``, ``rejected_score`` and, for the curriculum,
``curriculum_stage``). It is row-local: the pairs of a pool depend only on that pool, the
config and the run seed, so running on a whole table or on any split of it gives the same
pairs. A pool that yields no pair goes to the rejects with a reason.

Strategies (``score`` is the construction score, higher is better):

- ``best-worst``: the highest against the lowest score (West-of-N). ``quantile=q`` keeps only
  pools whose margin is at least the q-quantile of all margins; that needs the whole
  dataset, so it is two-pass: ``Pairs(..., quantile=q).fit(tables)`` computes the threshold
  and returns a stage that applies it row-locally (P(best > worst) = sigmoid(margin) under a
  Bradley-Terry model is monotone in the margin, so a margin quantile is a confidence one);
  ``Pairs(..., quantile=q).fit()`` is the same first pass as a :mod:`prefdata.fit` fit.
- ``best-random``: the highest against a uniformly drawn lower-scored candidate; the draw
  is ``floor(pool_seed / 2**63 * n_lower)`` with ``pool_seed`` a digest of (run seed,
  prompt_id), recorded in provenance.
- ``sweet-spot``: the highest against the candidate closest to mean - k*std of the pool's
  scores (population std over the usable candidates, k = 2; Finding the Sweet Spot), chosen
  among the candidates scored below the best (equal distances: the earlier one).
- ``all-pairs``: every pair with a positive margin (at least ``min_margin``), largest first.
- ``curriculum``: the best against each lower one, easy (largest margin) to hard, numbered
  in ``curriculum_stage`` from 1; sort the whole table by that column
  (:func:`curriculum_order`) to train stage by stage (Curry-DPO).
- ``by-generator``: chosen from ``chosen_generators``, rejected from ``rejected_generators``
  (delta learning): every such pair in pool order; no score needed. With a score the margin
  is filled (it may be zero or negative: no judge, no filter) and only an explicit
  ``min_margin`` filters.
- ``by-correctness``: a passing candidate (score >= ``threshold``) against a failing one, largest
  margin first.

Shared rules: candidates with a null or non-finite construction score, or a flag in
``exclude_flags``, are not used; a pool with fewer than two usable candidates is rejected.
Ties: a pair whose margin is 0 is never emitted (except by by-generator) unless
``allow_ties=True`` (best-random then also draws among tied candidates); equal scores are
ordered by position in the pool (the earlier candidate is the better one, and the earlier
of two equally low ones is the worst).
A pair whose two responses are the same text is never emitted. ``min_margin`` keeps pairs
with margin >= min_margin. ``max_pairs_per_prompt`` keeps the first m pairs in the
strategy's order.

>>> import pyarrow as pa
>>> from prefdata.schema import pool_schema
>>> cands = [{"candidate_id": c, "response": c.upper(), "generator": "g",
...           "scores": {"rm": s}, "flags": []} for c, s in [("a", 1.0), ("b", 3.0), ("c", 2.0)]]
>>> pools = pa.Table.from_pylist([{"prompt_id": "p", "prompt": [{"role": "user", "content": "Q"}],
...     "source": None, "metadata": None, "candidates": cands}], schema=pool_schema(["rm"]))
>>> out = Pairs("best-worst", score="rm")(pools)
>>> out.table.select(["chosen", "rejected", "margin"]).to_pylist()
[{'chosen': 'B', 'rejected': 'A', 'margin': 2.0}]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import ClassVar, overload

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prefdata.annotate.columns import first_per_pool
from prefdata.arrow import starts_of
from prefdata.construct.candidates import (
    ConstructStage,
    Flat,
    as_tuple,
    changed_config,
    dumps,
    few_usable_reasons,
    flatten,
    pool_rejects,
    pool_seed,
    provenance_prefix,
)
from prefdata.fit import StageFit, fit_stage, table_dumps, table_loads
from prefdata.schema import PAIR_SCHEMA

STRATEGIES = (
    "best-worst",
    "best-random",
    "sweet-spot",
    "all-pairs",
    "curriculum",
    "by-generator",
    "by-correctness",
)
SCORELESS = ("by-generator",)

EXTRA_FIELDS = [pa.field("chosen_score", pa.float64()), pa.field("rejected_score", pa.float64())]
CURRICULUM_FIELD = pa.field("curriculum_stage", pa.int32())


def pair_schema(strategy: str | None = None) -> pa.Schema:
    """``PAIR_SCHEMA`` plus the extra columns :class:`Pairs` emits for ``strategy``.

    >>> pair_schema("curriculum").names[-3:]
    ['chosen_score', 'rejected_score', 'curriculum_stage']
    """
    fields = list(PAIR_SCHEMA) + EXTRA_FIELDS
    if strategy == "curriculum":
        fields.append(CURRICULUM_FIELD)
    return pa.schema(fields)


def invalid_pools(table: pa.Table) -> tuple[np.ndarray, list[str | None], list[str | None]]:
    """Pools that cannot yield any record: no prompt_id, or an empty prompt. The reason and
    field lists hold None for valid pools (only the few invalid ones are filled in)."""
    no_id = pc.fill_null(pc.equal(pc.utf8_length(table["prompt_id"]), 0), True)
    no_id = no_id.to_numpy(zero_copy_only=False)
    no_prompt = pc.fill_null(pc.equal(pc.list_value_length(table["prompt"]), 0), True)
    no_prompt = no_prompt.to_numpy(zero_copy_only=False)
    invalid = no_id | no_prompt
    reasons: list[str | None] = [None] * len(invalid)
    fields: list[str | None] = [None] * len(invalid)
    for i in np.flatnonzero(invalid):
        reasons[i] = "prompt_id is missing" if no_id[i] else "prompt is empty"
        fields[i] = "prompt_id" if no_id[i] else "prompt"
    return invalid, reasons, fields


def _within_pool_pairs(flat: Flat, usable: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every ordered pair (a, b), a != b, of usable candidates of the same pool."""
    u = np.flatnonzero(usable)
    if u.size == 0:
        return u, u
    counts = np.bincount(flat.pool[u], minlength=flat.n_pools)
    starts = starts_of(counts)
    rep = counts[flat.pool[u]]
    a = np.repeat(np.arange(u.size), rep)
    block = np.repeat(np.cumsum(rep) - rep, rep)
    b = starts[flat.pool[u]][a] + (np.arange(a.size) - block)
    keep = a != b
    return u[a[keep]], u[b[keep]]


@dataclass(frozen=True)
class Pairs(ConstructStage):
    """Build preference pairs from pools with one strategy (see the module docstring).

    ``seed`` is the run seed; ``k`` the sweet-spot width; ``quantile`` the West-of-N
    confidence quantile (two-pass, see :meth:`fit`); ``threshold`` the pass mark of
    ``by-correctness``; ``chosen_generators``/``rejected_generators`` the two sides of
    ``by-generator``.
    """

    strategy: str = "best-worst"
    score: str | None = None
    min_margin: float | None = None
    max_pairs_per_prompt: int | None = None
    allow_ties: bool = False
    seed: int = 0
    k: float = 2.0
    quantile: float | None = None
    fitted_min_margin: float | None = None
    threshold: float | None = None
    chosen_generators: tuple[str, ...] = ()
    rejected_generators: tuple[str, ...] = ()

    provides: ClassVar[tuple[str, ...]] = tuple(PAIR_SCHEMA.names)

    def __post_init__(self) -> None:
        object.__setattr__(self, "chosen_generators", as_tuple(self.chosen_generators))
        object.__setattr__(self, "rejected_generators", as_tuple(self.rejected_generators))
        super().__post_init__()
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; expected one of {STRATEGIES}")
        if self.score is None and self.strategy not in SCORELESS:
            raise ValueError(f"strategy {self.strategy!r} needs a score (score='<scorer name>')")
        if self.score is None and self.min_margin is not None:
            raise ValueError("min_margin needs a score")
        if self.strategy == "by-generator":
            if not self.chosen_generators or not self.rejected_generators:
                raise ValueError("by-generator needs chosen_generators and rejected_generators")
            if set(self.chosen_generators) & set(self.rejected_generators):
                raise ValueError("chosen_generators and rejected_generators overlap")
        if self.strategy == "by-correctness" and self.threshold is None:
            raise ValueError("by-correctness needs threshold= (a score >= threshold passes)")
        if self.quantile is not None:
            if not 0.0 <= self.quantile <= 1.0:
                raise ValueError(f"quantile must lie in [0, 1], got {self.quantile}")
            if self.strategy in SCORELESS:
                raise ValueError("quantile needs a scored strategy")
        if self.max_pairs_per_prompt is not None and self.max_pairs_per_prompt < 1:
            raise ValueError("max_pairs_per_prompt must be at least 1")
        if self.k < 0:
            raise ValueError("k must be non-negative")

    def provided_columns(self) -> tuple[str, ...]:
        return (*pair_schema(self.strategy).names, "chosen_scores", "rejected_scores")

    # -- two-pass confidence quantile --------------------------------------------------
    @overload
    def fit(self) -> StageFit | None: ...

    @overload
    def fit(self, tables: pa.Table | Iterable[pa.Table]) -> Pairs: ...

    def fit(self, tables: pa.Table | Iterable[pa.Table] | None = None) -> StageFit | Pairs | None:
        """First pass of the quantile filter: the margins this strategy gives on every
        batch of ``tables`` (before any margin filter), their ``quantile``, and a copy of the
        stage that keeps pairs with margin >= that value (fitted again when it already is).
        The state is the list of margins (:class:`MarginQuantileFit`), so batches (shards)
        can be read in any order. Without ``tables``: that fit bound to this stage
        (:meth:`Stage.fit <prefdata.pipeline.Stage.fit>`), None unless ``quantile`` is set
        and not yet fitted.

        >>> Pairs("best-worst", score="rm", quantile=0.5).fit([]).fitted_min_margin is None
        True
        >>> Pairs("best-worst", score="rm").fit() is None
        True
        """
        if tables is None:
            if self.quantile is None or self.fitted_min_margin is not None:
                return None
            return StageFit(self, MarginQuantileFit(self.unfiltered()))
        if self.quantile is None:
            raise ValueError("fit() is for quantile=...; this stage has none")
        return fit_stage(dataclasses.replace(self, fitted_min_margin=None), tables)

    def unfiltered(self) -> Pairs:
        """This stage without any margin filter (the quantile's first pass)."""
        return dataclasses.replace(self, quantile=None, min_margin=None, fitted_min_margin=None)

    def effective_min_margin(self) -> float | None:
        if self.quantile is not None and self.fitted_min_margin is None:
            raise ValueError(
                f"Pairs({self.strategy!r}, quantile={self.quantile}) must be fitted first: "
                "stage = stage.fit(tables)"
            )
        values = [v for v in (self.min_margin, self.fitted_min_margin) if v is not None]
        return max(values) if values else None

    # -- candidate pairs per strategy ------------------------------------------------
    def _candidates(self, table: pa.Table, flat: Flat, valid: np.ndarray):
        """(chosen, rejected, sort keys, pool reasons when none) before the shared filters."""
        n, pool, score = flat.n_pools, flat.pool, flat.score
        usable = flat.usable & valid[pool]
        idx = np.flatnonzero(usable)
        score_field = f"scores.{self.score}"
        tie = ("all usable candidates tie", score_field)
        # why a pool has no candidate pair; read only for the pools that end up rejected
        none_reason: Callable[[int], tuple[str, str] | None] = _always(None)
        seeds: dict[int, int] = {}
        s = self.strategy
        if s in ("best-worst", "best-random", "sweet-spot"):
            best = first_per_pool(idx, -score, pool, n)
            has = best >= 0
            if s == "best-worst":
                worst = first_per_pool(idx, score, pool, n)
                # the worst must differ from the best even when all scores tie
                same = (worst == best) & has
                if same.any():
                    worst = np.where(same, _second(idx, score, pool, n, best), worst)
            elif s == "sweet-spot":
                worst = self._sweet_spot(idx, flat, best)
                none_reason = _always(tie)
            else:
                worst, seeds = self._random_lower(table, idx, flat, best)
                none_reason = _always(tie)
            ok = has & (worst >= 0)
            c, r = best[ok], worst[ok]
            return c, r, (), none_reason, seeds
        a, b = _within_pool_pairs(flat, usable)
        sa, sb, pos = score[a], score[b], flat.pos
        if s == "all-pairs":
            keep = (sa > sb) | ((sa == sb) & (pos[a] < pos[b]))
            keys = (pos[b], pos[a], -(sa - sb))
            none_reason = _always(tie)
        elif s == "curriculum":
            best = first_per_pool(idx, -score, pool, n)
            keep = a == best[pool[a]]
            keys = (pos[b], -(sa - sb))
        elif s == "by-correctness":
            keep = (sa >= self.threshold) & (sb < self.threshold)
            keys = (pos[b], pos[a], -(sa - sb))
            passing = np.bincount(pool[idx], weights=score[idx] >= self.threshold, minlength=n)
            failing = np.bincount(pool[idx], weights=score[idx] < self.threshold, minlength=n)

            def none_reason(i: int) -> tuple[str, str] | None:
                if passing[i] == 0:
                    return ("no passing candidate", score_field)
                return ("no failing candidate", score_field) if failing[i] == 0 else None
        else:  # by-generator
            gen = flat.column("generator")
            is_x = pc.fill_null(pc.is_in(gen, pa.array(self.chosen_generators)), False)
            is_y = pc.fill_null(pc.is_in(gen, pa.array(self.rejected_generators)), False)
            is_x = is_x.to_numpy(zero_copy_only=False)
            is_y = is_y.to_numpy(zero_copy_only=False)
            keep = is_x[a] & is_y[b]
            keys = (pos[b], pos[a])
            nx = np.bincount(pool[idx], weights=is_x[idx], minlength=n)
            ny = np.bincount(pool[idx], weights=is_y[idx], minlength=n)
            gen_field = "candidates.generator"

            def none_reason(i: int) -> tuple[str, str] | None:
                if nx[i] == 0:
                    return ("no usable candidate from the chosen generators", gen_field)
                if ny[i] == 0:
                    return ("no usable candidate from the rejected generators", gen_field)
                return None

        c, r = a[keep], b[keep]
        return c, r, tuple(k[keep] for k in keys), none_reason, seeds

    def _sweet_spot(self, idx: np.ndarray, flat: Flat, best: np.ndarray) -> np.ndarray:
        n, pool, score = flat.n_pools, flat.pool, flat.score
        cnt = np.bincount(pool[idx], minlength=n).astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.bincount(pool[idx], weights=score[idx], minlength=n) / cnt
            dev = (score[idx] - mean[pool[idx]]) ** 2
            std = np.sqrt(np.bincount(pool[idx], weights=dev, minlength=n) / cnt)
        target = mean - self.k * std
        dist = np.abs(score - target[pool])
        top = score[np.maximum(best, 0)][pool[idx]]
        # only candidates below the chosen, so a tie with the best never hides a lower one
        lower = (score[idx] <= top) if self.allow_ties else (score[idx] < top)
        others = idx[lower & (idx != best[pool[idx]])]
        return first_per_pool(others, dist, pool, n)

    def _random_lower(self, table, idx, flat, best):
        n, pool, score = flat.n_pools, flat.pool, flat.score
        top = np.where(best >= 0, score[np.maximum(best, 0)], np.nan)
        lower = score[idx] <= top[pool[idx]] if self.allow_ties else score[idx] < top[pool[idx]]
        elig = idx[lower & (idx != best[pool[idx]])]  # pool-major, position order
        counts = np.bincount(pool[elig], minlength=n)
        starts = starts_of(counts)
        out = np.full(n, -1, dtype=np.int64)
        seeds: dict[int, int] = {}
        ids = table["prompt_id"].to_pylist()
        for p in np.flatnonzero(counts):
            seeds[int(p)] = seed = pool_seed(self.seed, ids[p], "pairs/best-random")
            # the 63-bit seed as a uniform fraction of the eligible count (exact integer math)
            out[p] = elig[starts[p] + ((seed * int(counts[p])) >> 63)]
        return out, seeds

    # -- the stage -----------------------------------------------------------------------
    def construct(self, table: pa.Table) -> tuple[pa.Table, np.ndarray, pa.Table]:
        min_margin = self.effective_min_margin()
        invalid, inv_reasons, inv_fields = invalid_pools(table)
        flat = flatten(table, self.score, self.exclude_flags)
        few, few_fields = few_usable_reasons(flat, self.score)
        valid = ~invalid & ~few
        c, r, keys, none_reason, seeds = self._candidates(table, flat, valid)
        pool, score = flat.pool, flat.score
        n = flat.n_pools
        margin = score[c] - score[r]

        def count(mask: np.ndarray) -> np.ndarray:
            return np.bincount(pool[c][mask], minlength=n)

        # the shared filters, in order; each pool's reject reason is the first that empties it
        alive = np.ones(c.size, dtype=bool)
        steps = [(count(alive), None, None)]
        text = flat.column("response")
        texts = text.take(pa.array(c)), text.take(pa.array(r))  # reused by _assemble
        same = pc.equal(*texts)
        alive &= ~pc.fill_null(same, False).to_numpy(zero_copy_only=False)
        steps.append((count(alive), "only identical responses", "candidates.response"))
        score_field = f"scores.{self.score}"
        if self.score is not None and not self.allow_ties and self.strategy not in SCORELESS:
            alive &= ~(margin == 0)
            steps.append((count(alive), "all candidate pairs tie", score_field))
        if min_margin is not None:
            alive &= margin >= min_margin
            steps.append((count(alive), "no pair with margin >= min_margin", score_field))

        sel = np.flatnonzero(alive)  # positions in the candidate pairs (and texts)
        c, r, margin = c[alive], r[alive], margin[alive]
        keys = tuple(k[alive] for k in keys)
        order = np.lexsort(keys + (pool[c],)) if keys else np.argsort(pool[c], kind="stable")
        c, r, margin, sel = c[order], r[order], margin[order], sel[order]
        src = pool[c]
        rank = rank_within_pools(src)
        if self.max_pairs_per_prompt is not None:
            keep = rank < self.max_pairs_per_prompt
            c, r, margin, src, rank = c[keep], r[keep], margin[keep], src[keep], rank[keep]
            sel = sel[keep]
        chosen_text, rejected_text = (_pick(t, sel) for t in texts)

        # a pool is rejected when nothing survives (invalid and too-small pools never had a
        # candidate pair); only those few get a reason, so no Python runs per kept pool
        rejected = np.flatnonzero(steps[-1][0] == 0)
        reasons: dict[int, str] = {}
        fields: dict[int, str | None] = {}
        for i in rejected.tolist():
            if inv_reasons[i] is not None:
                reasons[i], fields[i] = inv_reasons[i], inv_fields[i]
            elif few[i]:
                reasons[i], fields[i] = "fewer than two usable candidates", few_fields[i]
            elif steps[0][0][i] == 0:
                reasons[i], fields[i] = none_reason(i) or ("no candidate pair", "candidates")
            else:
                reasons[i], fields[i] = next((w, f) for cnt, w, f in steps[1:] if cnt[i] == 0)
        rejects = pool_rejects(table, self.name, reasons, fields, rejected)
        out = self._assemble(
            table, flat, c, r, margin, src, rank, seeds, chosen_text, rejected_text
        )
        return out, src, rejects

    def _assemble(self, table, flat, c, r, margin, src, rank, seeds, chosen, rejected) -> pa.Table:
        m = c.size
        ci, ri, si = pa.array(c, pa.int64()), pa.array(r, pa.int64()), pa.array(src, pa.int64())
        cid, gen = flat.column("candidate_id"), flat.column("generator")
        scored = self.score is not None
        fscore = pa.array(flat.score, pa.float64(), mask=~np.isfinite(flat.score))
        null_f = pa.nulls(m, pa.float64())
        prov = provenance_prefix(
            self,
            strategy=self.strategy,
            score=self.score,
            seed=self.seed,
            config=changed_config(self),
            min_margin_applied=self.effective_min_margin(),
        )
        if self.strategy == "best-random":
            base = dumps(prov)[:-1]
            provenance = pa.array(
                [f'{base},"pool_seed":{seeds[int(p)]}}}' for p in src], pa.string()
            )
        else:
            provenance = pa.repeat(pa.scalar(dumps(prov)), m)
        cols = {
            "prompt_id": table["prompt_id"].take(si),
            "prompt": table["prompt"].take(si),
            "chosen": chosen,
            "rejected": rejected,
            "chosen_id": cid.take(ci),
            "rejected_id": cid.take(ri),
            "chosen_generator": gen.take(ci),
            "rejected_generator": gen.take(ri),
            "margin": pa.array(margin, pa.float64(), mask=~np.isfinite(margin))
            if scored
            else null_f,
            "strength_mean": null_f,
            "strength_std": null_f,
            "p_chosen": null_f,
            "votes": pa.nulls(m, pa.int32()),
            "rationale": pa.nulls(m, pa.string()),
            "strategy": pa.repeat(pa.scalar(self.strategy), m),
            "provenance": provenance,
            "chosen_score": fscore.take(ci) if scored else null_f,
            "rejected_score": fscore.take(ri) if scored else null_f,
        }
        if self.strategy == "curriculum":
            cols["curriculum_stage"] = pa.array(rank + 1, pa.int32())
        schema = pair_schema(self.strategy)
        out = pa.table(
            [
                cols[f.name]
                if not isinstance(cols[f.name], pa.ChunkedArray)
                else cols[f.name].combine_chunks()
                for f in schema
            ],
            schema=_cast_schema(schema, table),
        ).cast(schema)
        # Every scorer's scores of both sides, so voting, strength and the card's scorer
        # agreement can run on the pairs alone (prefdata.annotate.pair_scores reads them).
        if flat.values.type.get_field_index("scores") >= 0:
            scores = pc.struct_field(flat.values, "scores")
            if scores.type.num_fields:
                out = out.append_column("chosen_scores", scores.take(ci))
                out = out.append_column("rejected_scores", scores.take(ri))
        return out


@dataclass
class MarginQuantileFit:
    """First pass of ``Pairs(quantile=q)``: the margins ``stage`` (the pairs stage without
    a margin filter) gives, one array per update, mergeable in any order.

    >>> from prefdata.schema import pool_schema
    >>> cands = [{"candidate_id": c, "response": c, "scores": {"rm": s}} for c, s in
    ...          [("a", 0.0), ("b", 2.0)]]
    >>> pools = pa.Table.from_pylist([{"prompt_id": "p", "prompt": [{"role": "user",
    ...     "content": "Q"}], "candidates": cands}], schema=pool_schema(["rm"]))
    >>> stage = Pairs("best-worst", score="rm", quantile=0.5)
    >>> fit = MarginQuantileFit(stage.unfiltered()).update(pools)
    >>> fit.threshold(0.5), fit.fitted(stage).fitted_min_margin
    (2.0, 2.0)
    """

    stage: Pairs
    margins: list[np.ndarray] = field(default_factory=list)

    def update(self, table: pa.Table) -> MarginQuantileFit:
        out = self.stage(table).table
        self.margins.append(pc.drop_null(out["margin"]).to_numpy(zero_copy_only=False))
        return self

    def merge(self, other: MarginQuantileFit) -> MarginQuantileFit:
        self.margins += other.margins
        return self

    def threshold(self, quantile: float) -> float | None:
        """The ``quantile`` of every margin gathered; None when there is none."""
        m = np.concatenate(self.margins) if self.margins else np.array([])
        return float(np.quantile(m, quantile)) if m.size else None

    def fitted(self, stage: Pairs) -> Pairs:
        """``stage`` with ``fitted_min_margin`` set to its quantile of the margins."""
        assert stage.quantile is not None
        return dataclasses.replace(stage, fitted_min_margin=self.threshold(stage.quantile))

    def dumps(self) -> bytes:
        """Arrow IPC: one float64 column ``margin``."""
        m = np.concatenate(self.margins) if self.margins else np.array([])
        config = {"stage": self.stage.fingerprint}
        return table_dumps(pa.table({"margin": pa.array(m, pa.float64())}), {"config": config})

    def load(self, data: bytes) -> MarginQuantileFit:
        """Add the margins :meth:`dumps` wrote."""
        table, _ = table_loads(data, {"stage": self.stage.fingerprint})
        self.margins.append(table["margin"].to_numpy())
        return self


def _cast_schema(schema: pa.Schema, table: pa.Table) -> pa.Schema:
    """The output schema with the input's prompt type, cast to canonical afterwards."""
    i = schema.get_field_index("prompt")
    return schema.set(i, pa.field("prompt", table.schema.field("prompt").type))


def _always(reason: tuple[str, str] | None) -> Callable[[int], tuple[str, str] | None]:
    """A per-pool reason function that gives every pool ``reason``."""
    return lambda _pool: reason


def _pick(array: pa.Array, sel: np.ndarray) -> pa.Array:
    """``array.take(sel)``, without the copy when ``sel`` keeps every row in order."""
    if sel.size == len(array) and (sel.size == 0 or (np.diff(sel) == 1).all() and sel[0] == 0):
        return array
    return array.take(pa.array(sel, pa.int64()))


def _second(idx, score, pool, n, best):
    """The lowest-scored candidate other than ``best`` (used when every score ties)."""
    others = idx[idx != best[pool[idx]]]
    return first_per_pool(others, score, pool, n)


def rank_within_pools(src: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... within each run of equal values of a sorted array."""
    if src.size == 0:
        return src.astype(np.int64)
    start = np.ones(src.size, dtype=bool)
    start[1:] = src[1:] != src[:-1]
    first = np.maximum.accumulate(np.where(start, np.arange(src.size), 0))
    return np.arange(src.size) - first


def curriculum_order(pairs: pa.Table) -> pa.Table:
    """Pairs sorted (stably) by ``curriculum_stage``: every pool's easiest pair first, then
    every pool's second, ... the order in which Curry-DPO trains. Dataset-level.

    >>> t = pa.table({"curriculum_stage": pa.array([1, 2, 1], pa.int32()), "x": [0, 1, 2]})
    >>> curriculum_order(t)["x"].to_pylist()
    [0, 2, 1]
    """
    if "curriculum_stage" not in pairs.column_names:
        raise KeyError("curriculum_order needs a curriculum_stage column (strategy='curriculum')")
    return pairs.take(pc.sort_indices(pairs, [("curriculum_stage", "ascending")]))


__all__ = ["MarginQuantileFit", "Pairs", "STRATEGIES", "curriculum_order", "pair_schema"]
