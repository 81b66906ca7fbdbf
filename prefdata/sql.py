"""SQL over pool tables with DuckDB: a row-local :class:`Sql` stage and an ad-hoc :func:`query`.

DuckDB scans the Arrow table in place (no copy) through a registered view. Every connection
is opened with external access disabled and its configuration locked, so a query can read
only the tables handed to it: no files, no network, no extensions, no ``ATTACH``.

>>> import pyarrow as pa
>>> t = pa.table({"prompt_id": ["a", "b", "c"], "n": [1, 5, 9]})
>>> query("SELECT prompt_id, n * 2 AS twice FROM t WHERE n > 2", {"t": t}).to_pylist()
[{'prompt_id': 'b', 'twice': 10}, {'prompt_id': 'c', 'twice': 18}]
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prefdata.io.parquet import parquet_files
from prefdata.io.shards import read_files
from prefdata.pipeline import Stage, StageOutput, split
from prefdata.schema import CANDIDATE_TYPE, POOL_SCHEMA, conform, conform_types

Source = pa.Table | str | os.PathLike | Sequence[str | os.PathLike]

# Settings that keep a query inside the tables it is given. connect() adds
# lock_configuration, so a query cannot SET any of them back (DuckDB already refuses to
# re-enable external access on a running database; the lock covers the other options).
_SAFE_CONFIG: dict[str, Any] = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    # No replacement scans of Python variables: a query sees only the tables registered.
    "python_enable_replacements": False,
    # DuckDB keeps input order for queries without ORDER BY; we rely on it for determinism.
    "preserve_insertion_order": True,
}

_REASON_CHARS = 80


def connect(threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection that cannot touch files, the network or extensions.

    ``threads=None`` keeps DuckDB's default (all cores); set it where several workers share
    a machine. The configuration is locked: a query cannot change it.

    >>> con = connect(threads=1)
    >>> con.sql("SELECT current_setting('enable_external_access')").fetchall()
    [(False,)]
    """
    config = dict(_SAFE_CONFIG)
    if threads is not None:
        config["threads"] = int(threads)
    config["lock_configuration"] = True
    return duckdb.connect(":memory:", config=config)


def _check_statement(sql: str, allowed: tuple[str, ...] = ("SELECT",)) -> None:
    """Raise ValueError unless ``sql`` is exactly one statement of an allowed type."""
    with connect(threads=1) as con:
        try:
            statements = con.extract_statements(sql)
        except duckdb.Error as e:
            e.add_note(f"while parsing the SQL query {sql!r}")
            raise
    if len(statements) != 1:
        raise ValueError(f"expected exactly one SQL statement, got {len(statements)} in {sql!r}")
    kind = statements[0].type.name
    if kind not in allowed:
        raise ValueError(
            f"only {' or '.join(allowed)} statements are allowed here; {sql!r} is a {kind} "
            "statement"
        )


def _shorten(sql: str, limit: int = _REASON_CHARS) -> str:
    text = " ".join(sql.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _is_pool(schema: pa.Schema) -> bool:
    """A pool table that conform() can cast without losing or inventing candidate fields."""
    if not set(POOL_SCHEMA.names) <= set(schema.names):
        return False
    cand = schema.field("candidates").type
    if not (pa.types.is_list(cand) or pa.types.is_large_list(cand)):
        return False
    value = cand.value_type
    if not pa.types.is_struct(value):
        return False
    names = {f.name for f in value}
    return names == set(CANDIDATE_TYPE.names) and pa.types.is_struct(value.field("scores").type)


def canonical_result(table: pa.Table) -> pa.Table:
    """Cast a DuckDB result to canonical types: :func:`~prefdata.schema.conform` when it is
    still a pool table (all pool columns, candidates with exactly the canonical fields),
    :func:`~prefdata.schema.conform_types`'s plain types (string not large_string, list
    with ``item`` children, not DuckDB's ``l``) otherwise.

    >>> canonical_result(pa.table({"x": pa.array(["a"], pa.large_string())})).schema.field("x").type
    DataType(string)
    """
    names = table.column_names
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"SQL result has duplicate column names {dup}; alias them apart")
    try:
        if _is_pool(table.schema):
            return conform(table)
        return conform_types(table)  # also renames DuckDB's list<l: ...> children
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
        raise ValueError(
            f"SQL result does not cast to the canonical pool types: {e} "
            f"(result schema: {table.schema.to_string(show_schema_metadata=False)})"
        ) from e


def _run(con: duckdb.DuckDBPyConnection, sql: str, tables: Mapping[str, pa.Table]) -> pa.Table:
    """Register ``tables`` on a fresh cursor (registrations are per cursor, so concurrent
    calls do not see each other's batches), run ``sql`` and drain the result."""
    cur = con.cursor()
    try:
        for name, table in tables.items():
            cur.register(name, table)
        try:
            # to_arrow_table() drains the result (in DuckDB 2.x .arrow() is a lazy reader).
            return cur.sql(sql).to_arrow_table()
        except duckdb.Error as e:
            e.add_note(f"while running the SQL query {sql!r}")
            raise
    finally:
        cur.close()


def _first_duplicate(ids: pa.ChunkedArray) -> tuple[int, str] | None:
    values = ids.to_pylist()
    seen: set[str] = set()
    for i, v in enumerate(values):
        if v in seen:
            return i, v
        seen.add(v)
    return None


@dataclass(frozen=True)
class Sql(Stage):
    """Run a DuckDB ``SELECT`` over each batch of pools; rows it filters out are rejected.

    The batch is visible to the query as ``table_name`` (``pools`` by default), scanned in
    place. The query runs **per batch** (per shard under the executor): aggregates, window
    functions, ``ORDER BY``, ``LIMIT`` and ``DISTINCT`` see one batch only, so their result
    depends on how the data was split. Use it for row-local work: filters and derived
    columns, e.g. ``SELECT *, len(candidates) AS n_candidates FROM pools WHERE ...``, or
    ``SELECT * REPLACE (list_filter(candidates, lambda c: c.scores.rm > 0) AS candidates)
    FROM pools`` (DuckDB 2.x lambdas are ``lambda x: ...``).

    The result must keep ``prompt_id``; input rows whose ``prompt_id`` is not in the result
    go to the rejects with reason ``"filtered by sql: <query>"``. A result with a
    ``prompt_id`` that is not in the input, or twice, raises ValueError (the query is not
    row-local). Result types are cast back to canonical ones (plain strings and lists; the
    candidate struct in schema order with its score fields). Derived columns flow on;
    name them in ``adds`` when a later stage requires them (checked against the result).

    Only a single ``SELECT`` statement is accepted, and DuckDB runs with external access
    disabled: a query cannot read or write files, attach databases or load extensions.

    >>> import pyarrow as pa
    >>> t = pa.table({"prompt_id": ["a", "b", "c"], "n": [1, 5, 9]})
    >>> out = Sql("SELECT *, n > 4 AS big FROM pools WHERE n <> 5", adds=("big",))(t)
    >>> out.table.to_pylist()
    [{'prompt_id': 'a', 'n': 1, 'big': False}, {'prompt_id': 'c', 'n': 9, 'big': True}]
    >>> out.rejects["prompt_id"].to_pylist(), out.rejects["reason"][0].as_py()
    (['b'], 'filtered by sql: SELECT *, n > 4 AS big FROM pools WHERE n <> 5')
    """

    checkpoint = False  # DuckDB per batch is cheap; its setup() only opens a connection

    query: str
    table_name: str = "pools"
    adds: tuple[str, ...] = ()
    # Execution details that do not change the output.
    threads: int | None = field(default=None, metadata={"fingerprint": False})
    label: str = field(default="", metadata={"fingerprint": False})

    def __post_init__(self) -> None:
        if not self.table_name:
            raise ValueError("table_name must not be empty")
        # A list given for adds would make the frozen dataclass unhashable.
        object.__setattr__(self, "adds", tuple(self.adds))
        _check_statement(self.query)

    @property
    def name(self) -> str:
        # Two Sql stages in one pipeline get separate funnel entries when labelled.
        return f"Sql[{self.label}]" if self.label else "Sql"

    def required_columns(self) -> tuple[str, ...]:
        return ("prompt_id",)

    def provided_columns(self) -> tuple[str, ...]:
        return self.adds

    def setup(self) -> None:
        self.resources["duckdb"] = connect(self.threads)

    def process(self, table: pa.Table) -> StageOutput:
        ids = table["prompt_id"].cast(pa.string())
        if ids.null_count:
            row = int(np.flatnonzero(pc.is_null(ids).to_numpy(zero_copy_only=False))[0])
            raise ValueError(f"{self.name}: row {row} has a null prompt_id (field prompt_id)")
        dup = _first_duplicate(ids) if pc.count_distinct(ids).as_py() != len(ids) else None
        if dup is not None:
            raise ValueError(
                f"{self.name}: row {dup[0]} repeats prompt_id {dup[1]!r} (field prompt_id); "
                "the SQL stage matches result rows to input rows by prompt_id"
            )

        if self.resources.get("duckdb") is None:  # process() called without setup()
            self.setup()
        con = self.resources["duckdb"]
        result = _run(con, self.query, {self.table_name: table})

        if "prompt_id" not in result.column_names:
            raise ValueError(
                f"{self.name}: the query result lacks prompt_id (columns: {result.column_names}); "
                f"keep it in the SELECT list: {_shorten(self.query)!r}"
            )
        out_ids = result["prompt_id"].cast(pa.string())
        unknown = pc.invert(pc.is_in(out_ids, value_set=ids.combine_chunks()))
        if pc.any(unknown).as_py() or out_ids.null_count:
            bad = out_ids.filter(pc.fill_null(unknown, True)).to_pylist()[:3]
            raise ValueError(
                f"{self.name}: the query is not row-local: its result has prompt_id(s) {bad} "
                f"that are not in the input batch: {_shorten(self.query)!r}"
            )
        if pc.count_distinct(out_ids).as_py() != len(out_ids):
            dup = _first_duplicate(out_ids)
            raise ValueError(
                f"{self.name}: the query is not row-local: its result has prompt_id "
                f"{dup[1]!r} more than once (result row {dup[0]}): {_shorten(self.query)!r}"
            )
        missing = [c for c in self.adds if c not in result.column_names]
        if missing:
            raise ValueError(
                f"{self.name}: adds declares {missing}, which the query result lacks "
                f"(columns: {result.column_names})"
            )

        keep = pc.is_in(ids, value_set=out_ids.combine_chunks())
        _, rejects = split(
            table, keep, self.name, f"filtered by sql: {_shorten(self.query)}", field=None
        )
        return StageOutput(canonical_result(result), rejects)


def _load(source: Source) -> pa.Table:
    """A pa.Table as is; a Parquet file, a folder of ``*.parquet`` (or of a run's
    ``*.arrow`` shards; sorted, not recursive) or a list of files through
    :func:`prefdata.io.shards.read_files`."""
    return source if isinstance(source, pa.Table) else read_files(parquet_files(source))


def query(sql: str, tables: Mapping[str, Source], *, threads: int | None = None) -> pa.Table:
    """Run one ad-hoc ``SELECT`` (or ``DESCRIBE``/``SUMMARIZE``/``EXPLAIN``) over named
    sources and return an Arrow table with canonical types.

    Each source is a ``pa.Table`` or Parquet file(s) read with
    :func:`prefdata.io.parquet.read_parquet` (so pools stored without a score field come back
    with their empty ``scores`` struct); it is visible to the query under its name. The
    query runs on the whole tables, so aggregates are fine here. External access is
    disabled: the query reads only the sources given.

    >>> import pyarrow as pa
    >>> query("SELECT count(*) AS n FROM a JOIN b USING (k)",
    ...       {"a": pa.table({"k": [1, 2]}), "b": pa.table({"k": [2, 3]})}).to_pylist()
    [{'n': 1}]
    """
    _check_statement(sql, allowed=("SELECT", "EXPLAIN"))
    loaded = {name: _load(src) for name, src in tables.items()}
    with connect(threads) as con:
        return canonical_result(_run(con, sql, loaded))


def format_table(table: pa.Table, max_rows: int = 20, *, width: int = 160) -> str:
    """A readable text rendering of ``table`` (polars' table format): at most ``max_rows``
    rows (head and tail), every column, long strings cut, ``width`` characters wide.

    >>> print(format_table(pa.table({"prompt_id": ["a"], "n": [3]})))
    shape: (1, 2)
    ┌───────────┬─────┐
    │ prompt_id ┆ n   │
    │ ---       ┆ --- │
    │ str       ┆ i64 │
    ╞═══════════╪═════╡
    │ a         ┆ 3   │
    └───────────┴─────┘
    """
    import polars as pl

    df = pl.from_arrow(table)
    with pl.Config(
        tbl_rows=max_rows,
        tbl_cols=-1,
        fmt_str_lengths=60,
        fmt_table_cell_list_len=4,
        tbl_width_chars=width,
    ):
        return str(df)


__all__ = ["Sql", "canonical_result", "connect", "format_table", "query"]
