"""Stages, pipelines and the funnel.

A stage is a frozen dataclass whose fields are its config. It declares the columns it
requires and provides, loads heavy resources in ``setup()``, and maps an Arrow table of
pools to a :class:`StageOutput`: the rows it keeps and the rows it rejects, with a reason.
``rows in = rows out + rows rejected`` holds for every call (the funnel).

>>> import pyarrow as pa, pyarrow.compute as pc
>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class KeepShort(Stage):
...     max_chars: int = 3
...     def process(self, table):
...         short = pc.utf8_length(table["prompt_id"]).to_numpy() <= self.max_chars
...         return split(table, short, self.name, "prompt_id too long", field="prompt_id")
>>> out = KeepShort()(pa.table({"prompt_id": ["a", "abcd"]}))
>>> out.table["prompt_id"].to_pylist(), out.rejects["reason"].to_pylist()
(['a'], ['prompt_id too long'])
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prefdata.arrow import leaf_types
from prefdata.ids import digest
from prefdata.schema import REJECTS_SCHEMA, empty_rejects, score_names

if TYPE_CHECKING:
    from prefdata.fit import Fit


@dataclass(frozen=True)
class StageOutput:
    """What a stage returns: kept rows and rejected rows (``REJECTS_SCHEMA``); unpacks as
    ``table, rejects = output``.

    ``rows_out`` is set by stages whose output rows are not one per input row (pools in,
    pairs out): it counts the input rows that yielded output, so the funnel stays in input
    rows. It defaults to ``table.num_rows``.
    """

    table: pa.Table
    rejects: pa.Table
    rows_out: int | None = None

    def __iter__(self):
        return iter((self.table, self.rejects))

    def __getitem__(self, i: int) -> pa.Table:
        return (self.table, self.rejects)[i]

    @property
    def kept(self) -> int:
        """Input rows accounted for as kept."""
        return self.table.num_rows if self.rows_out is None else self.rows_out


class MissingColumnsError(ValueError):
    """A stage needs columns (or scores) that its input does not have."""


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _records_json(table: pa.Table) -> pa.Array:
    """Each row as compact JSON (a string array), columnar through polars; per-row
    ``json.dumps`` for the types polars cannot encode (the result is JSON-equal either way).
    """
    if table.num_rows == 0:
        return pa.array([], pa.string())
    import polars as pl

    binary = (pa.types.is_binary, pa.types.is_large_binary, pa.types.is_binary_view)
    if not any(is_(t) for f in table.schema for t in leaf_types(f.type) for is_ in binary):
        try:  # polars panics (a BaseException) writing bytes, hence the check above
            encoded = pl.from_arrow(table).select(pl.struct(pl.all()).struct.json_encode())
            return encoded.to_series().to_arrow().cast(pa.string())
        except (Exception, pl.exceptions.PanicException):  # noqa: BLE001 - the exact path
            pass
    return pa.array(
        [
            json.dumps(r, ensure_ascii=False, separators=(",", ":"), default=_json_default)
            for r in table.to_pylist()
        ],
        pa.string(),
    )


def rejects_from(
    table: pa.Table,
    stage: str,
    reason: str | Sequence[str],
    *,
    field: str | Sequence[str | None] | None = None,
    rows: Sequence[int] | np.ndarray | None = None,
    prompt_ids: Sequence[str | None] | None = None,
) -> pa.Table:
    """Rejects for every row of ``table``: one reason (or one per row), the row as JSON.
    ``prompt_ids`` overrides the table's ``prompt_id`` column (raw input has none yet).

    >>> r = rejects_from(pa.table({"prompt_id": ["p"]}), "demo", "bad", field="prompt")
    >>> r.to_pylist()[0]["record"]
    '{"prompt_id":"p"}'
    """
    n = table.num_rows
    reasons = [reason] * n if isinstance(reason, str) else list(reason)
    fields = [field] * n if field is None or isinstance(field, str) else list(field)
    if prompt_ids is not None:
        ids = pa.array(list(prompt_ids), pa.string())
    elif "prompt_id" in table.column_names:
        ids = table["prompt_id"].cast(pa.string())
    else:
        ids = pa.nulls(n, pa.string())
    records = _records_json(table)
    return pa.table(
        {
            "stage": [stage] * n,
            "reason": reasons,
            "row": pa.array(rows, pa.int64()) if rows is not None else pa.nulls(n, pa.int64()),
            "prompt_id": ids,
            "field": fields,
            "record": records,
        },
        schema=REJECTS_SCHEMA,
    )


def shift_reject_rows(rejects: pa.Table, offset: int) -> pa.Table:
    """Conform rejects to ``REJECTS_SCHEMA`` and add ``offset`` to ``row``, so rows count
    from the first input row over all shards rather than from the shard's.

    >>> r = rejects_from(pa.table({"prompt_id": ["p"]}), "demo", "bad", rows=[2])
    >>> shift_reject_rows(r, 10)["row"].to_pylist()
    [12]
    """
    rejects = rejects.select(REJECTS_SCHEMA.names).cast(REJECTS_SCHEMA)
    if offset and rejects.num_rows:
        i = REJECTS_SCHEMA.get_field_index("row")
        rows = pc.add(rejects["row"], pa.scalar(offset, pa.int64()))
        rejects = rejects.set_column(i, "row", rows)
    return rejects


def split(
    table: pa.Table,
    keep: np.ndarray | pa.Array | Sequence[bool],
    stage: str,
    reason: str | Sequence[str],
    *,
    field: str | Sequence[str | None] | None = None,
) -> StageOutput:
    """Keep rows where ``keep`` is true; reject the others with ``reason``.

    ``reason`` and ``field`` may be one value or one per input row.
    """
    keep = np.asarray(keep, dtype=bool)
    dropped = np.flatnonzero(~keep)
    at = dropped.tolist()  # Python ints: indexing a list with NumPy ints is slower
    per_row = lambda v: v if v is None or isinstance(v, str) else [v[i] for i in at]  # noqa: E731
    rejected = rejects_from(
        table.take(dropped), stage, per_row(reason), field=per_row(field), rows=dropped
    )
    kept = table if not len(dropped) else table.filter(pa.array(keep))  # no copy when all stay
    return StageOutput(kept, rejected)


def _available(schema: pa.Schema) -> set[str]:
    """Column names, plus ``scores.<name>`` for each score field of a pool table."""
    names = set(schema.names)
    if "candidates" in names:
        cand = schema.field("candidates").type
        if pa.types.is_list(cand) or pa.types.is_large_list(cand):
            names |= {f"scores.{n}" for n in score_names(schema)}
    return names


# The optional extras (pyproject.toml) that provide a package stages load in setup().
EXTRAS = {
    "torch": "models",
    "transformers": "models",
    "sentence_transformers": "models",
    "math_verify": "verify",
    "vllm": "vllm",
    "ray": "ray",
    "matplotlib": "report",
}


@dataclass(frozen=True)
class Stage:
    """Base class of every stage. Subclasses are ``@dataclass(frozen=True)``; their fields
    are the config, fingerprinted. Override :meth:`process` (and :meth:`setup` for models).

    ``requires`` and ``provides`` name columns; ``scores.<name>`` names a candidate score.
    Bump ``version`` when a change to the code changes the stage's output.
    """

    requires: ClassVar[tuple[str, ...]] = ("prompt_id",)
    provides: ClassVar[tuple[str, ...]] = ()
    version: ClassVar[str] = "1"
    # Whether an executor with checkpoint="auto" keeps this stage's output shards: True for
    # costly stages (a rerun never repeats them), False for cheap ones (recomputed from the
    # last kept output instead); None: True when the class overrides setup() (models).
    checkpoint: ClassVar[bool | None] = None
    # Whether process() may run on several shards at once, on threads of one process (the
    # local executor does so when every stage is cheap). None: True unless the class
    # overrides setup() (a model or a connection is not shared across threads). Set False
    # for a stage that keeps state between calls.
    concurrent: ClassVar[bool | None] = None

    @property
    def name(self) -> str:
        return type(self).__name__

    def required_columns(self) -> tuple[str, ...]:
        """Columns (and ``scores.<name>``) this stage needs; configs may add to them."""
        return self.requires

    def provided_columns(self) -> tuple[str, ...]:
        """Columns (and ``scores.<name>``) this stage adds."""
        return self.provides

    def config(self) -> dict[str, Any]:
        """The fingerprinted config: dataclass fields not marked ``fingerprint=False``."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.metadata.get("fingerprint", True)
        }

    @property
    def fingerprint(self) -> str:
        """Digest of the stage type, its version and its config."""
        return digest(
            type(self).__module__,
            type(self).__qualname__,
            self.version,
            json.dumps(self.config(), sort_keys=True, default=_json_default),
        )

    # Resources loaded by setup() live outside the frozen config and are never pickled.
    @property
    def resources(self) -> dict[str, Any]:
        if "_resources" not in self.__dict__:
            object.__setattr__(self, "_resources", {})
        return self.__dict__["_resources"]

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_resources"}

    def setup(self) -> None:
        """Load heavy resources (models, connections). Called once per worker."""

    def ensure_setup(self) -> None:
        """Call :meth:`setup` unless this instance has already been set up. A package an
        optional extra provides, missing, says which extra to install."""
        if not self.resources.get("__setup_done__"):
            try:
                self.setup()
            except ModuleNotFoundError as e:
                extra = EXTRAS.get((e.name or "").split(".")[0])
                if extra is None:
                    raise
                raise ModuleNotFoundError(
                    f"{self.name} needs {e.name}: pip install 'prefdata[{extra}]'", name=e.name
                ) from e
            self.resources["__setup_done__"] = True

    def fits_on_input(self) -> str | None:
        """What this stage would fit over the whole table it is given (z-score statistics,
        a dedup index, ...) when no fitted state was passed in; None for a row-local stage.

        Fitted on one shard at a time, such a state would depend on ``shard_rows``: the
        executors refuse it over more than one shard (fit first, then pass it in).

        >>> Stage().fits_on_input() is None
        True
        """
        return None

    def fit(self) -> Fit | None:
        """The unfitted :class:`~prefdata.fit.Fit` this stage needs before it can process
        shards independently, or None (a row-local or already fitted stage). Its
        ``finalize()`` returns this stage with the fitted state filled in.

        >>> Stage().fit() is None
        True
        """
        return None

    @property
    def overrides_setup(self) -> bool:
        """Whether the class overrides :meth:`setup` (models, connections).

        >>> Stage().overrides_setup
        False
        """
        return type(self).setup is not Stage.setup

    @property
    def costly(self) -> bool:
        """Whether this stage's output is worth keeping on disk (see ``checkpoint``).

        >>> Stage().costly
        False
        """
        return self.overrides_setup if self.checkpoint is None else self.checkpoint

    @property
    def runs_concurrently(self) -> bool:
        """Whether shards may run through this stage on several threads at once (see
        ``concurrent``).

        >>> Stage().runs_concurrently
        True
        """
        return not self.overrides_setup if self.concurrent is None else self.concurrent

    def process(self, table: pa.Table) -> StageOutput | pa.Table:
        raise NotImplementedError

    def columns_after(self, available: set[str]) -> set[str]:
        """Columns (and ``scores.<name>``) present after this stage, given those before it.
        Stages that turn pools into other records override this."""
        return available | set(self.provided_columns())

    def check(self, schema: pa.Schema) -> None:
        """Raise :class:`MissingColumnsError` when ``schema`` lacks a required column."""
        missing = [c for c in self.required_columns() if c not in _available(schema)]
        if missing:
            raise MissingColumnsError(
                f"stage {self.name} requires {missing}; the input has {sorted(_available(schema))}"
            )

    def __call__(self, table: pa.Table) -> StageOutput:
        self.check(table.schema)
        self.ensure_setup()
        out = self.process(table)
        if isinstance(out, pa.Table):
            out = StageOutput(out, empty_rejects())
        if out.kept + out.rejects.num_rows != table.num_rows:
            raise AssertionError(
                f"stage {self.name} broke the funnel: {table.num_rows} rows in, "
                f"{out.kept} out, {out.rejects.num_rows} rejected"
            )
        return out


@dataclass
class FunnelEntry:
    stage: str
    rows_in: int = 0
    rows_out: int = 0
    rows_rejected: int = 0


@dataclass
class Funnel:
    """Per-stage row counts. ``rows_in == rows_out + rows_rejected`` for every entry.

    >>> f = Funnel()
    >>> f.add("read", 10, 9, 1); f.add("read", 5, 5, 0)
    >>> f.summary()
    'read: 15 in -> 14 out, 1 rejected'
    """

    entries: list[FunnelEntry] = field(default_factory=list)

    def add(self, stage: str, rows_in: int, rows_out: int, rows_rejected: int) -> None:
        if rows_in != rows_out + rows_rejected:
            raise AssertionError(f"{stage}: {rows_in} in != {rows_out} out + {rows_rejected}")
        entry = next((e for e in self.entries if e.stage == stage), None)
        if entry is None:
            entry = FunnelEntry(stage)
            self.entries.append(entry)
        entry.rows_in += rows_in
        entry.rows_out += rows_out
        entry.rows_rejected += rows_rejected

    def merge(self, other: Funnel) -> Funnel:
        for e in other.entries:
            self.add(e.stage, e.rows_in, e.rows_out, e.rows_rejected)
        return self

    def then(self, other: Funnel) -> Funnel:
        """A new funnel: this one followed by ``other``; a stage name seen before gets a
        ``#2``, ``#3`` suffix so chained stages of the same type stay apart.

        >>> a = Funnel(); a.add("Sql", 3, 2, 1)
        >>> [e.stage for e in a.then(a).entries]
        ['Sql', 'Sql#2']
        """
        out = Funnel.from_list(self.to_list())
        for e in other.entries:
            name, k = e.stage, 1
            while any(x.stage == name for x in out.entries):
                k += 1
                name = f"{e.stage}#{k}"
            out.add(name, e.rows_in, e.rows_out, e.rows_rejected)
        return out

    def to_list(self) -> list[dict[str, Any]]:
        return [dataclasses.asdict(e) for e in self.entries]

    @classmethod
    def from_list(cls, items: Iterable[dict[str, Any]]) -> Funnel:
        f = cls()
        for e in items:
            f.add(e["stage"], e["rows_in"], e["rows_out"], e["rows_rejected"])
        return f

    def summary(self) -> str:
        return "; ".join(
            f"{e.stage}: {e.rows_in} in -> {e.rows_out} out, {e.rows_rejected} rejected"
            for e in self.entries
        )


class PipelineResult(NamedTuple):
    table: pa.Table
    rejects: pa.Table
    funnel: Funnel


def stage_keys(stages: Sequence[Stage]) -> list[str]:
    """Chained fingerprints: stage i's key covers stages 0..i, so a changed config
    changes the key of that stage and of every stage after it."""
    keys, prev = [], ""
    for s in stages:
        prev = digest(prev, s.fingerprint)
        keys.append(prev)
    return keys


@dataclass
class Pipeline:
    """Stages chained in order.

    >>> Pipeline([]).run(pa.table({"prompt_id": ["a"]})).funnel.summary()
    ''
    """

    stages: list[Stage]

    def check(self, schema: pa.Schema) -> None:
        """Check every stage's required columns against what the stages before provide,
        before any work starts."""
        available = _available(schema)
        for s in self.stages:
            missing = [c for c in s.required_columns() if c not in available]
            if missing:
                raise MissingColumnsError(
                    f"stage {s.name} requires {missing}, which neither the input nor an "
                    f"earlier stage provides (available: {sorted(available)})"
                )
            available = s.columns_after(available)

    def run(self, table: pa.Table, *, progress: bool | None = None) -> PipelineResult:
        """Run every stage over ``table`` in memory; a bar over the stages (on a terminal
        unless ``progress`` says) names the one running."""
        from prefdata.progress import progress_bar

        self.check(table.schema)
        funnel, rejects = Funnel(), [empty_rejects()]
        with progress_bar(len(self.stages), desc="stages", unit="stages", enabled=progress) as bar:
            for s in self.stages:
                bar.set_postfix_str(s.name, refresh=True)
                rows_in = table.num_rows
                out = s(table)
                funnel.add(s.name, rows_in, out.kept, out.rejects.num_rows)
                table = out.table
                rejects.append(out.rejects)
                bar.update(1)
        return PipelineResult(table, pa.concat_tables(rejects), funnel)

    def keys(self) -> list[str]:
        return stage_keys(self.stages)


def count_rejects_by_reason(rejects: pa.Table) -> list[tuple[str, str, int]]:
    """(stage, reason, count) rows, most frequent first."""
    if rejects.num_rows == 0:
        return []
    g = rejects.group_by(["stage", "reason"]).aggregate([("reason", "count")])
    rows = sorted(g.to_pylist(), key=lambda r: (-r["reason_count"], r["stage"], r["reason"]))
    return [(r["stage"], r["reason"], r["reason_count"]) for r in rows]


__all__ = [
    "Funnel",
    "FunnelEntry",
    "MissingColumnsError",
    "Pipeline",
    "PipelineResult",
    "Stage",
    "StageOutput",
    "count_rejects_by_reason",
    "rejects_from",
    "split",
    "stage_keys",
]
