"""One protocol for two-pass (dataset-level) state: update, merge, finalize into a stage.

A stage that needs statistics of the whole dataset before it can run on shards
independently (z-score statistics, a dedup index, repeated responses, a peer selection, a
margin quantile) returns an unfitted :class:`Fit` from :meth:`Stage.fit
<prefdata.pipeline.Stage.fit>`, bound to its config; a row-local or already fitted stage
returns None. ``update`` adds one batch or shard of the stage's *input* (on any worker),
``merge`` adds another worker's fit, ``finalize`` returns the fitted stage, which is
row-local again. ``dumps`` and :func:`loads` checkpoint a fit (JSON or Arrow IPC, never
pickle), so an executor resumes without refitting.

The five stages share :class:`StageFit`: the stage plus its family's own fit (its
``state``: :class:`~prefdata.annotate.normalise.ScoreStatsFit`,
:class:`~prefdata.filter.dedup.DedupFit`,
:class:`~prefdata.filter.degenerate.RepeatedResponsesFit`,
:class:`~prefdata.filter.peer.PeerFit`,
:class:`~prefdata.construct.pairs.MarginQuantileFit`), which follows :class:`FitState`.

>>> import pyarrow as pa
>>> from prefdata.annotate import Normalise
>>> from prefdata.schema import pool_schema
>>> rows = [{"prompt_id": f"p{i}", "prompt": [{"role": "user", "content": "q"}],
...          "candidates": [{"candidate_id": "a", "response": "x", "scores": {"rm": s}}]}
...         for i, s in enumerate([1.0, 3.0])]
>>> t = pa.Table.from_pylist(rows, schema=pool_schema(["rm"]))
>>> fit = Normalise().fit()
>>> isinstance(fit, Fit), Normalise(stats={}).fit() is None
(True, True)
>>> a, b = Normalise().fit().update(t.slice(0, 1)), Normalise().fit().update(t.slice(1))
>>> stage = loads(Normalise(), b.merge(a).dumps()).finalize()
>>> stage.stats["rm"].mean, stage.fingerprint == fit_stage(Normalise(), [t]).fingerprint
(2.0, True)
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Self, runtime_checkable

import pyarrow as pa

if TYPE_CHECKING:
    from prefdata.pipeline import Stage

FORMAT = 1
META_KEY = b"prefdata.fit"


@runtime_checkable
class Fit(Protocol):
    """Mergeable dataset-level state of one stage, bound to that stage's config."""

    def update(self, table: pa.Table) -> Fit:
        """Add one batch or shard of the stage's input table."""
        ...

    def merge(self, other: Fit) -> Fit:
        """Add another fit of the same stage (exact; fits of shards in any order)."""
        ...

    def finalize(self) -> Stage:
        """The fitted stage: the one that asked, with its state filled in."""
        ...

    def dumps(self) -> bytes:
        """The state as bytes (JSON or Arrow IPC), for :func:`loads`."""
        ...

    def load(self, data: bytes) -> Fit:
        """Add the state that :meth:`dumps` wrote (into a fresh fit: restore it)."""
        ...


class FitState(Protocol):
    """A stage family's own fit, wrapped by :class:`StageFit`."""

    def update(self, table: pa.Table, /) -> Any: ...

    def merge(self, other: Self, /) -> Any: ...

    def fitted(self, stage: Any, /) -> Stage: ...

    def dumps(self) -> bytes: ...

    def load(self, data: bytes, /) -> Any: ...


@dataclass
class StageFit:
    """A :class:`FitState` bound to the stage that asked for it; ``finalize()`` is
    ``state.fitted(stage)``. Keywords of ``update`` go to the state (``DedupFit``:
    ``shard=``, so fits merged in any order keep the shards' order)."""

    stage: Stage
    state: FitState

    def update(self, table: pa.Table, **kwargs: Any) -> StageFit:
        self.state.update(table, **kwargs)
        return self

    def merge(self, other: Fit) -> StageFit:
        if not isinstance(other, StageFit) or type(other.state) is not type(self.state):
            raise TypeError(f"cannot merge {type(other).__name__} into a fit of {self.stage.name}")
        if other.stage.fingerprint != self.stage.fingerprint:
            raise ValueError(f"cannot merge fits of two different {self.stage.name} configs")
        self.state.merge(other.state)
        return self

    def finalize(self) -> Stage:
        return self.state.fitted(self.stage)

    @property
    def parallel(self) -> bool:
        """Whether fits of single tables merged in table order equal updating one fit in
        that order (the state's ``parallel``), so an executor may update them on threads."""
        return bool(getattr(self.state, "parallel", False))

    def columns(self) -> list[str] | None:
        """The input fields the fit reads (``candidates.scores``: list levels left out),
        so an executor reads only those; None: every column."""
        columns = getattr(self.state, "columns", None)
        return list(columns) if columns is not None else None

    def _header(self) -> dict[str, Any]:
        return {"format": FORMAT, "fit": type(self.state).__name__, "stage": self.stage.fingerprint}

    def dumps(self) -> bytes:
        """One JSON header line (format, fit type, the stage's fingerprint), then the state."""
        return json.dumps(self._header(), sort_keys=True).encode() + b"\n" + self.state.dumps()

    def load(self, data: bytes) -> StageFit:
        head, _, payload = data.partition(b"\n")
        try:
            header = json.loads(head)
        except ValueError:
            raise ValueError("not a prefdata fit: no JSON header") from None
        if header != self._header():
            raise ValueError(f"the fit {header} is not one of this stage: {self._header()}")
        self.state.load(payload)
        return self


def loads(stage: Stage, data: bytes) -> Fit:
    """The fit of ``stage`` that ``fit.dumps()`` wrote; ValueError when ``data`` is the fit
    of another stage (config) or ``stage`` needs no fit."""
    fit = stage.fit()
    if fit is None:
        raise ValueError(f"stage {stage.name} needs no fit")
    return fit.load(data)


def fit_stage(stage: Stage, tables: pa.Table | Iterable[pa.Table]) -> Stage:
    """``stage`` fitted over ``tables`` (its input, in batches or shards); ``stage`` itself
    when it needs no fit.

    >>> import pyarrow as pa
    >>> from prefdata.filter import FlagDegenerate
    >>> from prefdata.schema import pool_schema
    >>> rows = [{"prompt_id": f"p{i}", "prompt": [{"role": "user", "content": "q"}],
    ...          "candidates": [{"candidate_id": "a", "response": "Same long answer here."}]}
    ...         for i in range(3)]
    >>> t = pa.Table.from_pylist(rows, schema=pool_schema())
    >>> stage = fit_stage(FlagDegenerate(repeated_min_prompts=2), [t.slice(0, 1), t.slice(1)])
    >>> len(stage.repeated.hashes), stage.fit() is None
    (1, True)
    """
    fit = stage.fit()
    if fit is None:
        return stage
    for table in [tables] if isinstance(tables, pa.Table) else tables:
        fit.update(table)
    return fit.finalize()


@dataclass
class QuantileFit:
    """A fit that gathers one number per row (``stage.acquire(table)``: NaN for rows that
    have none) and gives the stage a cut-off at a quantile of all of them:
    ``stage.cut_quantile()`` says which, and the fitted stage is
    ``dataclasses.replace(stage, fitted_cut=...)``. Mergeable in any order (the numbers
    are pooled), so executors update it one table per thread.

    >>> import dataclasses, numpy as np
    >>> @dataclasses.dataclass(frozen=True)
    ... class Demo:
    ...     fitted_cut: float | None = None
    ...     fingerprint: str = "demo"
    ...     def acquire(self, table): return np.asarray(table["x"], float)
    ...     def cut_quantile(self): return 0.5
    >>> fit = QuantileFit(Demo()).update(pa.table({"x": [1.0, 2.0]})).merge(
    ...     QuantileFit(Demo()).update(pa.table({"x": [3.0, float("nan")]})))
    >>> fit.fitted(Demo()).fitted_cut
    2.0
    """

    stage: Any
    values: list = field(default_factory=list)
    parallel: ClassVar[bool] = True

    def update(self, table: pa.Table) -> QuantileFit:
        import numpy as np

        v = np.asarray(self.stage.acquire(table), dtype=float)
        self.values.append(v[~np.isnan(v)])
        return self

    def merge(self, other: QuantileFit) -> QuantileFit:
        self.values += other.values
        return self

    def _all(self) -> Any:
        import numpy as np

        return np.concatenate(self.values) if self.values else np.array([])

    def fitted(self, stage: Any) -> Any:
        import dataclasses

        import numpy as np

        v = self._all()
        cut = float(np.quantile(v, stage.cut_quantile())) if v.size else float("inf")
        return dataclasses.replace(stage, fitted_cut=cut)

    def dumps(self) -> bytes:
        """Arrow IPC: the numbers gathered, one float64 column."""
        return table_dumps(pa.table({"v": self._all()}), {"config": self.stage.fingerprint})

    def load(self, data: bytes) -> QuantileFit:
        table, _ = table_loads(data, self.stage.fingerprint)
        self.values.append(table["v"].to_numpy())
        return self


class QuantileCut:
    """For a stage cut at a dataset quantile (a ``fitted_cut`` field, unset until fitted;
    ``acquire`` and ``cut_quantile`` for :class:`QuantileFit`): the fit protocol's
    methods. ``needs_cut()`` says whether this config asks for a quantile at all;
    ``cut_what`` names it in the message of a stage run unfitted. Mix in before ``Stage``.
    """

    cut_what: ClassVar[str] = "a quantile of the whole dataset"

    def needs_cut(self) -> bool:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        cfg = super().config()  # type: ignore[misc]
        if self.fitted_cut is not None:  # type: ignore[attr-defined]
            cfg["fitted_cut"] = self.fitted_cut  # type: ignore[attr-defined]
        return cfg

    def fits_on_input(self) -> str | None:
        unfitted = self.needs_cut() and self.fitted_cut is None  # type: ignore[attr-defined]
        return self.cut_what if unfitted else None

    def fit(self) -> StageFit | None:
        return None if self.fits_on_input() is None else StageFit(self, QuantileFit(self))  # type: ignore[arg-type]


# ---------------------------------------------------------------- persistence helpers


def table_dumps(table: pa.Table, meta: dict[str, Any]) -> bytes:
    """``table`` as an Arrow IPC stream, with ``meta`` (JSON) in its schema metadata."""
    table = table.replace_schema_metadata({META_KEY: json.dumps(meta, sort_keys=True)})
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def table_loads(data: bytes, expect: dict[str, Any] | None = None) -> tuple[pa.Table, dict]:
    """The table and meta :func:`table_dumps` wrote; ValueError when ``expect`` (the
    config the state was collected with) differs from the meta's ``"config"``."""
    table = pa.ipc.open_stream(data).read_all()
    meta = json.loads((table.schema.metadata or {}).get(META_KEY, b"{}"))
    check_config(meta.get("config"), expect)
    return table.replace_schema_metadata(None), meta


def check_config(got: Any, expect: Any) -> None:
    """Raise ValueError when a stored fit was collected with another config."""
    if expect is not None and got != expect:
        raise ValueError(f"the stored fit was collected with {got}, not {expect}")


__all__ = [
    "Fit",
    "FitState",
    "QuantileCut",
    "QuantileFit",
    "StageFit",
    "check_config",
    "fit_stage",
    "loads",
    "table_dumps",
    "table_loads",
]
