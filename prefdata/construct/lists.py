"""Ranked lists: each pool's usable candidates, best first, with scores and ranks.

Ranks are competition ranks: tied scores share a rank and the next rank skips (1, 1, 3).
Tied candidates keep their pool order. ``top_k`` keeps the first k responses (ties at the
cut are broken by pool order, so a list has at most k entries). A pool with fewer than two
usable candidates, or (unless ``allow_ties``) whose usable candidates all tie, is rejected.
Row-local; the output follows ``LIST_SCHEMA``.

>>> import pyarrow as pa
>>> from prefdata.schema import pool_schema
>>> cands = [{"candidate_id": c, "response": c, "generator": "g", "scores": {"rm": s}, "flags": []}
...          for c, s in [("a", 1.0), ("b", 3.0), ("c", 3.0), ("d", 0.0)]]
>>> pools = pa.Table.from_pylist([{"prompt_id": "p", "prompt": [{"role": "user", "content": "Q"}],
...     "source": None, "metadata": None, "candidates": cands}], schema=pool_schema(["rm"]))
>>> [(r["candidate_id"], r["rank"]) for r in Lists(score="rm")(pools).table["responses"][0].as_py()]
[('b', 1), ('c', 1), ('a', 3), ('d', 4)]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pyarrow as pa

from prefdata.construct.candidates import (
    ConstructStage,
    changed_config,
    dumps,
    few_usable_reasons,
    flatten,
    pool_rejects,
    provenance_prefix,
)
from prefdata.construct.pairs import invalid_pools, rank_within_pools
from prefdata.schema import LIST_SCHEMA

RESPONSE_TYPE: pa.StructType = LIST_SCHEMA.field("responses").type.value_type


@dataclass(frozen=True)
class Lists(ConstructStage):
    """Rank each pool's usable candidates by ``score``, best first (see the module docstring)."""

    score: str = ""
    top_k: int | None = None
    allow_ties: bool = False

    provides: ClassVar[tuple[str, ...]] = tuple(LIST_SCHEMA.names)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.score:
            raise ValueError("Lists needs score='<scorer name>'")
        if self.top_k is not None and self.top_k < 2:
            raise ValueError("top_k must be at least 2 (a list has two or more responses)")

    def construct(self, table: pa.Table) -> tuple[pa.Table, np.ndarray, pa.Table]:
        n = table.num_rows
        invalid, reasons, fields = invalid_pools(table)
        flat = flatten(table, self.score, self.exclude_flags)
        few, few_fields = few_usable_reasons(flat, self.score)
        pool, score, pos = flat.pool, flat.score, flat.pos
        idx = np.flatnonzero(flat.usable & ~(invalid | few)[pool])
        order = idx[np.lexsort((pos[idx], -score[idx], pool[idx]))]
        src, s = pool[order], score[order]
        within = rank_within_pools(src)
        new_score = np.ones(order.size, dtype=bool)
        new_score[1:] = (src[1:] != src[:-1]) | (s[1:] != s[:-1])
        # competition rank: the within-pool index of the first entry with this score, plus one
        rank = within[np.maximum.accumulate(np.where(new_score, np.arange(order.size), 0))] + 1
        all_tied = np.zeros(n, dtype=bool)
        if order.size:
            distinct = np.bincount(src[new_score], minlength=n)
            all_tied = (distinct == 1) & ~(invalid | few)
        keep = ~all_tied[src] if not self.allow_ties else np.ones(order.size, dtype=bool)
        if self.top_k is not None:
            keep &= within < self.top_k
        order, src, rank = order[keep], src[keep], rank[keep]

        # only the rejected pools get a reason: no Python runs per kept pool
        tied = all_tied & (not self.allow_ties)
        rejected = np.flatnonzero(invalid | few | tied)
        for i in rejected.tolist():
            if reasons[i] is None and few[i]:
                reasons[i], fields[i] = "fewer than two usable candidates", few_fields[i]
            elif reasons[i] is None:
                reasons[i], fields[i] = "all usable candidates tie", f"scores.{self.score}"
        rejects = pool_rejects(table, self.name, reasons, fields, rejected)
        return self._assemble(table, flat, order, src, rank), src, rejects

    def _assemble(self, table, flat, order, src, rank) -> pa.Table:
        oi = pa.array(order, pa.int64())
        fscore = pa.array(flat.score, pa.float64(), mask=~np.isfinite(flat.score))
        entries = pa.StructArray.from_arrays(
            [
                flat.column("candidate_id").take(oi),
                flat.column("response").take(oi),
                flat.column("generator").take(oi),
                fscore.take(oi),
                pa.array(rank, pa.int32()),
            ],
            fields=list(RESPONSE_TYPE),
        )
        rows, starts = np.unique(src, return_index=True)
        offsets = pa.array(np.append(starts, src.size).astype(np.int32))
        responses = pa.ListArray.from_arrays(offsets, entries, type=pa.list_(RESPONSE_TYPE))
        ri = pa.array(rows, pa.int64())
        prov = dumps(provenance_prefix(self, score=self.score, config=changed_config(self)))
        m = rows.size
        cols = [
            table["prompt_id"].take(ri).combine_chunks(),
            table["prompt"].take(ri).combine_chunks().cast(LIST_SCHEMA.field("prompt").type),
            responses,
            pa.repeat(pa.scalar(self.score), m),
            pa.repeat(pa.scalar(prov), m),
        ]
        return pa.Table.from_arrays(cols, schema=LIST_SCHEMA)


__all__ = ["Lists"]
