"""Normalising each scorer's scores so scorers on different scales can be combined.

Methods (``Normalise(method=...)``):

- ``"none"``: the stage passes the table through.
- ``"zscore"``: dataset z-score, ``(s - mean) / std`` with the *population* std over every
  scored candidate of the dataset. Two-pass: :class:`ScoreStatsFit` collects mergeable
  statistics (count, mean, M2; Chan et al.'s parallel merge) over batches or shards, possibly
  on different workers, and ``Normalise(method="zscore", stats=fit.stats())`` applies them
  row-locally (or, through the fit protocol, ``Normalise().fit()`` gives the fit bound to
  the stage: :mod:`prefdata.fit`). Without ``stats`` the stage fits on the table it is
  given (whole-table mode).
- ``"prompt_zscore"``: z-score within each pool (row-local).
- ``"rank"``: rank within each pool scaled to [0, 1] (0 = lowest; ties get their average
  rank; a pool with one scored candidate gets 0.5). Row-local.

Output: a new score field ``<name>.<suffix>`` next to the raw one (suffix ``z``, ``pz`` or
``rank``), or the raw field replaced with ``replace=True``. Nulls stay null; a scorer with
zero spread gives 0.0 (z-scores) so no NaN leaks into later stages.

>>> import pyarrow as pa
>>> from prefdata.schema import pool_schema
>>> rows = [{"prompt_id": "p", "prompt": [{"role": "user", "content": "q"}],
...          "candidates": [{"candidate_id": c, "response": c, "scores": {"rm": s}}
...                         for c, s in [("a", 1.0), ("b", 3.0)]]}]
>>> t = pa.Table.from_pylist(rows, schema=pool_schema(["rm"]))
>>> out = Normalise(method="prompt_zscore")(t).table
>>> [c["scores"] for c in out["candidates"][0].as_py()]
[{'rm': 1.0, 'rm.pz': -1.0}, {'rm': 3.0, 'rm.pz': 1.0}]
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from prefdata.annotate.columns import score_array
from prefdata.arrow import (
    FlatCandidates,
    flatten_candidates,
    float_array,
    rebuild_candidates,
    struct_with,
)
from prefdata.fit import StageFit, check_config
from prefdata.ids import digest
from prefdata.io.parquet import parquet_files
from prefdata.io.shards import TableFile
from prefdata.pipeline import Stage
from prefdata.schema import score_names

Method = Literal["none", "zscore", "prompt_zscore", "rank"]
SUFFIX = {"zscore": "z", "prompt_zscore": "pz", "rank": "rank"}


class NonFiniteScoreError(ValueError):
    """A score is infinite: the statistics (and z-scores) would be meaningless."""


@dataclass(frozen=True)
class ScoreStats:
    """Mergeable running statistics of one scorer: count, mean and M2 (sum of squared
    deviations from the mean).

    >>> a = ScoreStats.of([1.0, 2.0]); b = ScoreStats.of([3.0, 4.0, 5.0])
    >>> m = a.merge(b)
    >>> (m.count, m.mean, round(m.std, 6)) == (5, 3.0, round(2 ** 0.5, 6))
    True
    """

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0

    @classmethod
    def of(cls, values: Iterable[float] | np.ndarray) -> ScoreStats:
        """Statistics of the non-NaN ``values``."""
        x = np.asarray(values, dtype=np.float64)
        nan = np.isnan(x)
        if nan.any():
            x = x[~nan]
        if x.size == 0:
            return cls()
        mean = float(x.mean())
        d = x - mean
        with np.errstate(over="ignore"):  # an overflow is reported by ScoreStatsFit.update
            m2 = float((d * d).sum())  # pairwise sum, not BLAS: exact
        return cls(int(x.size), mean, m2)

    def merge(self, other: ScoreStats) -> ScoreStats:
        """Chan et al.'s pairwise update: exact for any split of the data."""
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        n = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * other.count / n
        m2 = self.m2 + other.m2 + delta * delta * self.count * other.count / n
        return ScoreStats(n, mean, m2)

    @property
    def variance(self) -> float:
        """Population variance (M2 / count); 0.0 when empty."""
        return self.m2 / self.count if self.count else 0.0

    @property
    def std(self) -> float:
        return math.sqrt(self.variance)


def _has_scores(schema: pa.Schema) -> bool:
    """Whether a pool file's candidates hold a ``scores`` struct with a field."""
    if "candidates" not in schema.names:
        return False
    cand = schema.field("candidates").type
    if not (pa.types.is_list(cand) or pa.types.is_large_list(cand)):
        return False
    item = cand.value_type
    if not pa.types.is_struct(item) or item.get_field_index("scores") < 0:
        return False
    scores = item.field("scores").type
    return pa.types.is_struct(scores) and scores.num_fields > 0


@dataclass
class ScoreStatsFit:
    """First pass of the dataset z-score: per-scorer :class:`ScoreStats`.

    ``update`` one batch (or shard) at a time, on any worker; ``merge`` fits from other
    workers in any order (the merge is exact up to floating-point rounding).

    >>> import pyarrow as pa
    >>> from prefdata.schema import pool_schema
    >>> rows = [{"prompt_id": "p", "prompt": [{"role": "user", "content": "q"}],
    ...          "candidates": [{"candidate_id": "a", "response": "x", "scores": {"rm": 2.0}}]}]
    >>> ScoreStatsFit().update(pa.Table.from_pylist(rows, schema=pool_schema(["rm"]))).stats()
    {'rm': ScoreStats(count=1, mean=2.0, m2=0.0)}
    """

    columns: ClassVar[tuple[str, ...]] = ("prompt_id", "candidates.scores")  # what it reads
    # update() merges each table's statistics into the running ones: per-table fits
    # merged in order give the very same numbers
    parallel: ClassVar[bool] = True
    scorers: tuple[str, ...] = ()
    parts: dict[str, ScoreStats] = field(default_factory=dict)

    def update(self, table: pa.Table, flat: FlatCandidates | None = None) -> ScoreStatsFit:
        """Add one pool table (``flat``: its candidates, when the caller has flattened them)."""
        flat = flatten_candidates(table) if flat is None else flat
        stats = {}
        for name, x in self._finite_scores(flat, table):
            big = float(np.nanmax(np.abs(x))) if len(x) else float("nan")
            stats[name] = self._merged(name, ScoreStats.of(x), big)
        self.parts.update(stats)  # all or nothing: a bad score adds no statistics
        return self

    def _merged(self, name: str, st: ScoreStats, big: float = float("nan")) -> ScoreStats:
        """The running statistics of ``name`` merged with ``st``; refused when they stop
        being finite: squares of scores near 1e154 and above overflow float64, and every
        z-score would come out 0 (a silent loss of every preference)."""
        merged = self.parts.get(name, ScoreStats()).merge(st)
        if not (math.isfinite(merged.mean) and math.isfinite(merged.m2)):
            size = f"up to {big:.3g}" if math.isfinite(big) else "too large"
            raise NonFiniteScoreError(
                f"scores {name} are too large for their variance in float64 ({size}); "
                "rescale them (divide by a power of ten)"
            )
        return merged

    def _finite_scores(self, flat: FlatCandidates, table: pa.Table) -> list[tuple[str, np.ndarray]]:
        """Each scorer's values; raises naming the row and field of the first infinite one."""
        values = []
        for name in self.scorers or tuple(score_names(table)):
            x = score_array(flat.values, name)
            bad = np.flatnonzero(np.isinf(x))
            if bad.size:
                i = int(bad[0])
                row = int(flat.parents[i])
                pid = table["prompt_id"][row].as_py() if "prompt_id" in table.column_names else "?"
                raise NonFiniteScoreError(
                    f"row {row} (prompt_id {pid!r}): field "
                    f"candidates[{i - int(flat.offsets[row])}].scores.{name} is {x[i]}; "
                    "scores must be finite"
                )
            values.append((name, x))
        return values

    def update_files(
        self, source: str | os.PathLike | Sequence[str | os.PathLike]
    ) -> ScoreStatsFit:
        """:meth:`update` with every group of pool files (Parquet, or the executor's Arrow
        IPC shards; a path, a folder or a list), reading only the candidates' scores (of
        an IPC file, the candidates column), one group in memory at a time (a group with
        a bad score is read again with its ``prompt_id``, to name the row).

        >>> stats = ScoreStatsFit(("rm",)).update_files("pools/").stats()  # doctest: +SKIP
        """
        reads = []
        for path in parquet_files(source):
            file = TableFile(path)
            if not _has_scores(file.schema):
                continue  # a pool file without scores (Parquet stores no scores struct)
            columns = file.columns_under(["candidates.scores"])
            reads += [(path, file.footer, g, columns) for g in range(file.num_groups)]

        def read(job: tuple) -> pa.Table:  # a file opened per group: none held open
            path, footer, g, columns = job
            return TableFile(path, metadata=footer).read_group(g, columns=columns)

        # the next row group is read while this one is summed: two in memory at most
        with ThreadPoolExecutor(1, thread_name_prefix="prefdata-stats") as pool:
            ahead = pool.submit(read, reads[0]) if reads else None
            for k in range(len(reads)):
                table = ahead.result()
                ahead = pool.submit(read, reads[k + 1]) if k + 1 < len(reads) else None
                try:
                    self.update(table)
                except NonFiniteScoreError:  # again with the prompt ids, to name the row
                    path, footer, g, columns = reads[k]
                    named = read((path, footer, g, ["prompt_id", *columns]))
                    try:
                        ScoreStatsFit(self.scorers).update(named)
                    except NonFiniteScoreError as e:
                        raise NonFiniteScoreError(f"{path}, row group {g}: {e}") from None
                    raise
        return self

    def merge(self, other: ScoreStatsFit) -> ScoreStatsFit:
        for name, st in other.parts.items():
            self.parts[name] = self._merged(name, st)
        return self

    def stats(self) -> dict[str, ScoreStats]:
        return dict(sorted(self.parts.items()))

    def fitted(self, stage: Normalise) -> Normalise:
        """``stage`` with the statistics of the scorers it normalises."""
        names = set(stage.scorer_names(self.parts))
        return replace(stage, stats={k: v for k, v in self.stats().items() if k in names})

    def dumps(self) -> bytes:
        """JSON: ``{"config": {"scorers": [...]}, "stats": {name: [count, mean, m2]}}``
        (floats written exactly)."""
        stats = {k: [v.count, v.mean, v.m2] for k, v in self.stats().items()}
        state = {"config": {"scorers": list(self.scorers)}, "stats": stats}
        return json.dumps(state, sort_keys=True, allow_nan=False).encode()

    def load(self, data: bytes) -> ScoreStatsFit:
        """Merge in the statistics :meth:`dumps` wrote.

        >>> fit = ScoreStatsFit(parts={"rm": ScoreStats.of([1.0, 2.5])})
        >>> ScoreStatsFit().load(fit.dumps()).stats() == fit.stats()
        True
        """
        state = json.loads(data)
        check_config(state["config"], {"scorers": list(self.scorers)})
        parts = {
            k: ScoreStats(int(c), float(m), float(m2)) for k, (c, m, m2) in state["stats"].items()
        }
        return self.merge(ScoreStatsFit(self.scorers, parts))


def fit_score_stats(
    tables: Iterable[pa.Table], scorers: tuple[str, ...] = ()
) -> dict[str, ScoreStats]:
    """Fit :class:`ScoreStats` over an iterable of pool batches."""
    fit = ScoreStatsFit(scorers)
    for t in tables:
        fit.update(t)
    return fit.stats()


def _zscore(x: np.ndarray, mean: float, std: float) -> np.ndarray:
    """``(x - mean) / std``, NaN kept; 0 for every scored value when ``std`` is 0 (they
    all equal the mean).

    >>> _zscore(np.array([1.0, 3.0, np.nan]), 2.0, 1.0).tolist()
    [-1.0, 1.0, nan]
    >>> _zscore(np.array([2.0, np.nan]), 2.0, 0.0).tolist()
    [0.0, nan]
    """
    if std > 0:
        z = x - mean
        z /= std
        return z
    return np.where(np.isnan(x), np.nan, 0.0)


def _per_prompt(x: np.ndarray, parents: np.ndarray, method: str) -> np.ndarray:
    df = pl.DataFrame({"g": parents, "s": x}, schema={"g": pl.Int64, "s": pl.Float64})
    df = df.with_columns(pl.col("s").fill_nan(None))
    s, g = pl.col("s"), pl.col("g")
    if method == "prompt_zscore":
        expr = (s - s.mean().over(g)) / s.std(ddof=0).over(g)
        expr = pl.when(s.is_null()).then(None).when(s.std(ddof=0).over(g) > 0).then(expr)
        expr = expr.otherwise(0.0)
    else:
        n = s.count().over(g)
        r = s.rank("average").over(g)
        expr = pl.when(s.is_null()).then(None).when(n > 1).then((r - 1) / (n - 1))
        expr = expr.otherwise(0.5)
    out = df.select(expr.cast(pl.Float64).alias("v"))["v"].fill_null(np.nan)
    return out.to_numpy()


@dataclass(frozen=True)
class Normalise(Stage):
    """Normalise candidate scores (see the module docstring for the methods).

    ``scorers`` empty means every score field that is not itself a normalised field.
    ``stats`` (dataset z-score) comes from :class:`ScoreStatsFit`; without it the stage fits
    on each table it is given, which is only the dataset z-score on the whole table.
    """

    method: Method = "zscore"
    scorers: tuple[str, ...] = ()
    stats: Mapping[str, ScoreStats] | None = field(default=None, metadata={"fingerprint": False})
    replace: bool = False
    requires: ClassVar[tuple[str, ...]] = ("prompt_id", "candidates")

    def __post_init__(self) -> None:
        if self.method not in ("none", *SUFFIX):
            raise ValueError(f"unknown method {self.method!r}; expected none or {list(SUFFIX)}")

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        if self.stats is not None:
            cfg["stats"] = digest(
                json.dumps({k: [v.count, v.mean, v.m2] for k, v in sorted(self.stats.items())})
            )
        return cfg

    def fits_on_input(self) -> str | None:
        if self.method == "zscore" and self.stats is None:
            return (
                "z-score statistics (fit it first: prefdata.fit.fit_stage(stage, shards), "
                "or pass stats=ScoreStatsFit(...).update(...).stats())"
            )
        return None

    def fit(self) -> StageFit | None:
        """The :class:`ScoreStatsFit` of the dataset z-score, bound to this stage (None
        unless ``method="zscore"`` without ``stats``)."""
        return None if self.fits_on_input() is None else StageFit(self, ScoreStatsFit(self.scorers))

    def required_columns(self) -> tuple[str, ...]:
        return self.requires + tuple(f"scores.{n}" for n in self.scorers)

    def provided_columns(self) -> tuple[str, ...]:
        if self.method == "none" or self.replace:
            return ()
        return tuple(f"scores.{self.output_name(n)}" for n in self.scorers)

    def output_name(self, name: str) -> str:
        return name if self.replace else f"{name}.{SUFFIX[self.method]}"

    def scorer_names(self, available: Iterable[str]) -> list[str]:
        """The scorers this stage normalises, of the score fields ``available``:
        ``scorers``, or every field that is not itself a normalised one.

        >>> Normalise().scorer_names(["rm", "rm.z", "judge"])
        ['rm', 'judge']
        """
        if self.scorers:
            return list(self.scorers)
        suffixes = tuple(f".{s}" for s in SUFFIX.values())
        return [n for n in available if not n.endswith(suffixes)]

    def process(self, table: pa.Table) -> pa.Table:
        if self.method == "none":
            return table
        flat = flatten_candidates(table)
        names = self.scorer_names(score_names(table))
        stats = dict(self.stats or {})
        # an empty table still gets its normalised fields (the stages after read them),
        # and needs no statistics
        if self.method == "zscore" and len(flat.values):
            missing = [n for n in names if n not in stats]
            if missing and self.stats is not None:
                raise KeyError(f"no fitted statistics for scorers {missing}")
            if missing:
                stats.update(ScoreStatsFit(tuple(missing)).update(table, flat).stats())
        new = {}
        for name in names:
            x = score_array(flat.values, name)
            if self.method == "zscore":
                st = stats.get(name, ScoreStats())
                v = _zscore(x, st.mean, st.std)
            else:
                v = _per_prompt(x, flat.parents, self.method)
            new[self.output_name(name)] = float_array(v)
        scores = struct_with(pc.struct_field(flat.values, "scores"), **new)
        values = struct_with(flat.values, scores=scores)
        return rebuild_candidates(table, flat, values)


__all__ = ["Normalise", "NonFiniteScoreError", "ScoreStats", "ScoreStatsFit", "fit_score_stats"]
