"""Pools flattened to one entry per candidate, with the usable mask construction needs.

Every construction stage starts here: the candidates of a batch of pools as flat Arrow
arrays plus numpy arrays (pool index, position in the pool, score), computed with Arrow
list kernels rather than a Python loop over rows. A candidate is *usable* when it is not
null, its response is not null, it carries no flag in ``exclude_flags`` and, when a score
is named, its score is finite.

>>> import pyarrow as pa
>>> from prefdata.schema import pool_schema
>>> def cand(c, text, score, flags=()):
...     return {"candidate_id": c, "response": text, "generator": "g",
...             "scores": {"rm": score}, "flags": list(flags)}
>>> pools = pa.Table.from_pylist([{
...     "prompt_id": "p", "prompt": [{"role": "user", "content": "Q"}],
...     "source": None, "metadata": None,
...     "candidates": [cand("a", "A", 1.0), cand("b", "", 2.0, ["empty"]), cand("c", "C", None)],
... }], schema=pool_schema(["rm"]))
>>> flat = flatten(pools, "rm", ("empty",))
>>> flat.usable.tolist(), flat.pool.tolist(), flat.pos.tolist()
([True, False, False], [0, 0, 0], [0, 1, 2])
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prefdata.arrow import FlatCandidates, flatten_candidates, list_parents
from prefdata.ids import digest
from prefdata.pipeline import Stage, StageOutput, rejects_from
from prefdata.schema import empty_rejects

POOL_COLUMNS = ("prompt_id", "prompt", "candidates")


@dataclass(frozen=True)
class Flat:
    """The candidates of a batch of pools (:class:`~prefdata.arrow.FlatCandidates`) with
    what construction reads of each: its score (float64, NaN where null or when no score
    is named) and whether it is usable, flagged or unscored.

    ``pool[i]`` is the row of candidate ``i`` in the input table, ``pos[i]`` its position in
    that pool's list.
    """

    cands: FlatCandidates
    score: np.ndarray
    usable: np.ndarray
    flagged: np.ndarray
    null_score: np.ndarray

    @property
    def values(self) -> pa.StructArray:
        return self.cands.values

    @property
    def pool(self) -> np.ndarray:
        return self.cands.parents

    @property
    def sizes(self) -> np.ndarray:
        return self.cands.lengths

    @property
    def n_pools(self) -> int:
        return len(self.cands.offsets) - 1

    @functools.cached_property
    def pos(self) -> np.ndarray:
        """Each candidate's position in its pool (computed on first use)."""
        return self.cands.pos

    def column(self, name: str) -> pa.Array:
        """One candidate field as a flat Arrow array (nulls where the candidate is null)."""
        if self.values.type.get_field_index(name) < 0:
            return pa.nulls(len(self.values), pa.string())
        return pc.struct_field(self.values, name)

    def usable_counts(self) -> np.ndarray:
        return np.bincount(self.pool[self.usable], minlength=self.n_pools)


def flatten(table: pa.Table, score: str | None, exclude_flags: tuple[str, ...]) -> Flat:
    """Flatten the ``candidates`` column of a pool table (see the module docstring)."""
    cands = flatten_candidates(table)
    values = cands.values
    ok = ~values.is_null().to_numpy(zero_copy_only=False)
    response = pc.struct_field(values, "response")
    ok &= ~response.is_null().to_numpy(zero_copy_only=False)

    flagged = np.zeros(len(values), dtype=bool)
    if exclude_flags and values.type.get_field_index("flags") >= 0:
        flags = pc.struct_field(values, "flags")
        tags = pc.list_flatten(flags)
        if len(tags):  # most pools carry no flag at all
            hit = pc.is_in(tags, pa.array(list(exclude_flags), pa.string()))
            hit = pc.fill_null(hit, False).to_numpy(zero_copy_only=False)
            owner = list_parents(flags)
            flagged = np.bincount(owner[hit], minlength=len(values)).astype(bool)

    if score is not None:
        st = values.type.field("scores").type
        if st.get_field_index(score) < 0:
            raise KeyError(f"candidates have no score {score!r}; scores are {[f.name for f in st]}")
        raw = pc.struct_field(values, ["scores", score])
        scores = pc.fill_null(raw.cast(pa.float64()), np.nan).to_numpy(zero_copy_only=False)
        null_score = ~np.isfinite(scores)
    else:
        scores = np.full(len(values), np.nan)
        null_score = np.zeros(len(values), dtype=bool)
    usable = ok & ~flagged & ~null_score
    return Flat(cands, scores, usable, flagged & ok, null_score & ok)


def as_tuple(v: Any) -> tuple[str, ...]:
    """A config value of names as a tuple: None is empty, one string is one name.

    >>> as_tuple(None), as_tuple("empty"), as_tuple(["a", "b"])
    ((), ('empty',), ('a', 'b'))
    """
    if v is None:
        return ()
    return (v,) if isinstance(v, str) else tuple(v)


def pool_seed(seed: int, prompt_id: str, purpose: str) -> int:
    """The seed of one pool's random choices: a digest of (purpose, run seed, prompt_id).

    >>> pool_seed(0, "p-1", "pairs") == pool_seed(0, "p-1", "pairs") != pool_seed(1, "p-1", "pairs")
    True
    """
    return int(digest(purpose, seed, prompt_id), 16) & ((1 << 63) - 1)


def few_usable_reasons(flat: Flat, score: str | None, minimum: int = 2) -> tuple[np.ndarray, list]:
    """Pools with fewer than ``minimum`` usable candidates, and the field to blame for each
    of them (the score when nulls removed candidates, else the flags, else the candidates
    list); None for the other pools, so no Python runs per pool that has enough."""
    usable = flat.usable_counts()
    few = usable < minimum
    nulls = np.bincount(flat.pool[flat.null_score], minlength=flat.n_pools) > 0
    flagged = np.bincount(flat.pool[flat.flagged], minlength=flat.n_pools) > 0
    fields: list[str | None] = [None] * flat.n_pools
    for i in np.flatnonzero(few).tolist():
        fields[i] = (
            f"scores.{score}" if nulls[i] else "candidates.flags" if flagged[i] else "candidates"
        )
    return few, fields


def pool_rejects(
    table: pa.Table,
    stage: str,
    reasons: Mapping[int, str] | Sequence[str | None],
    fields: Mapping[int, str | None] | Sequence[str | None],
    rejected: np.ndarray,
) -> pa.Table:
    """Rejects for the pools at ``rejected``, with their reasons and fields (indexed by row)."""
    if not rejected.size:
        return empty_rejects()
    return rejects_from(
        table.take(rejected),
        stage,
        [reasons[i] for i in rejected],
        field=[fields[i] for i in rejected],
        rows=rejected,
    )


def provenance_prefix(stage: Stage, **extra: Any) -> dict[str, Any]:
    """The provenance fields shared by every row a stage emits."""
    return {"stage": stage.name, "fingerprint": stage.fingerprint, **extra}


def changed_config(stage: Stage) -> dict[str, Any]:
    """The config fields that differ from their defaults (provenance stays short; the
    fingerprint covers the whole config).

    >>> from prefdata.construct.pairs import Pairs
    >>> changed_config(Pairs("sweet-spot", score="rm", k=1.5))
    {'strategy': 'sweet-spot', 'score': 'rm', 'k': 1.5}
    """
    defaults = {
        f.name: f.default for f in dataclasses.fields(stage) if f.default is not dataclasses.MISSING
    }
    return {k: v for k, v in stage.config().items() if k not in defaults or defaults[k] != v}


def dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True)
class ConstructStage(Stage):
    """A stage that turns pools into other records (pairs, lists, unpaired examples).

    One pool row in gives zero or more output rows, so the funnel counts *pools*: every
    input pool either yields at least one output row or is rejected with a reason, and
    ``pools in = pools that yielded output + pools rejected``; the pools that yielded
    output are ``rows in - rejects``. Subclasses implement :meth:`construct`, returning
    the output table, the input row of each output row, and the rejects.
    """

    requires: ClassVar[tuple[str, ...]] = POOL_COLUMNS
    exclude_flags: tuple[str, ...] = field(default=("empty",), kw_only=True)

    def __post_init__(self) -> None:
        object.__setattr__(self, "exclude_flags", as_tuple(self.exclude_flags))

    def required_columns(self) -> tuple[str, ...]:
        score = getattr(self, "score", None)
        return POOL_COLUMNS + ((f"scores.{score}",) if score else ())

    def construct(self, table: pa.Table) -> tuple[pa.Table, np.ndarray, pa.Table]:
        raise NotImplementedError

    def columns_after(self, available: set[str]) -> set[str]:
        # The output is a new record type: only what the stage provides is there after it.
        return set(self.provided_columns())

    def process(self, table: pa.Table) -> StageOutput:
        out, source_rows, rejects = self.construct(table)
        hit = np.zeros(table.num_rows, dtype=bool)
        hit[source_rows] = True  # pools that yielded output (a mask: no sort)
        yielded = np.flatnonzero(hit)
        rejected = rejects["row"].to_numpy(zero_copy_only=False) if rejects.num_rows else []
        if hit[rejected].any() or yielded.size + len(rejected) != table.num_rows:
            raise AssertionError(
                f"stage {self.name} broke the pool funnel: {table.num_rows} pools in, "
                f"{yielded.size} yielded output, {len(rejected)} rejected"
            )
        return StageOutput(out, rejects, rows_out=int(yielded.size))

    def funnel_counts(self, rows_in: int, out: StageOutput) -> tuple[int, int, int]:
        """(pools in, pools that yielded output, pools rejected) for :class:`Funnel.add`."""
        return rows_in, rows_in - out.rejects.num_rows, out.rejects.num_rows
