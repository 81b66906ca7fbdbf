"""The DuckDB Sql stage and the ad-hoc query helper, on real DuckDB over real pool tables."""

from __future__ import annotations

import json
import pickle
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from prefdata.ids import candidate_id, prompt_id
from prefdata.io.parquet import write_parquet
from prefdata.pipeline import MissingColumnsError, Pipeline, Stage
from prefdata.schema import pool_schema
from prefdata.sql import Sql, connect, format_table, query

FILTER_RM = (
    "SELECT * REPLACE (list_filter(candidates, lambda c: c.scores.rm > 0) AS candidates) "
    "FROM pools WHERE len(list_filter(candidates, lambda c: c.scores.rm > 0)) >= 2"
)


def make_pools(n: int, scores: tuple[str, ...] = ("rm", "judge"), seed: int = 0) -> pa.Table:
    """``n`` pools with 0-5 candidates each; about one score in ten is null (not scored)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        prompt = [{"role": "user", "content": f"question {i}: {rng.integers(1000)}"}]
        pid = prompt_id(prompt)
        cands = []
        for j in range(int(rng.integers(0, 6))):
            text = f"answer {j} to {i}" + " more" * int(rng.integers(0, 4))
            gen = ["strong", "weak"][j % 2]
            cands.append(
                {
                    "candidate_id": candidate_id(pid, gen, j, text),
                    "response": text,
                    "generator": gen,
                    "sample_index": j,
                    "seed": 1000 + j,
                    "finish_reason": "stop" if j < 4 else "length",
                    "num_tokens": len(text.split()),
                    "scores": {
                        s: None if rng.random() < 0.1 else float(rng.normal()) for s in scores
                    },
                    "flags": ["truncated"] if j >= 4 else [],
                }
            )
        rows.append(
            {
                "prompt_id": pid,
                "prompt": prompt,
                "source": "synthetic/test",
                "metadata": json.dumps({"i": i}),
                "candidates": cands,
            }
        )
    return pa.Table.from_pylist(rows, schema=pool_schema(list(scores)))


def large_types(t: pa.DataType) -> list[str]:
    """Names of large/view types anywhere inside ``t``."""
    bad = []
    if (
        pa.types.is_large_string(t)
        or pa.types.is_string_view(t)
        or pa.types.is_large_list(t)
        or pa.types.is_list_view(t)
        or pa.types.is_large_binary(t)
    ):
        bad.append(str(t))
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        if t.value_field.name != "item":
            bad.append(f"list child named {t.value_field.name!r}")
        bad += large_types(t.value_type)
    if pa.types.is_struct(t):
        for f in t:
            bad += large_types(f.type)
    return bad


@pytest.fixture(scope="module")
def pools() -> pa.Table:
    return make_pools(60)


def test_filter_by_candidate_score(pools):
    out = Sql(FILTER_RM)(pools)
    # The same filter, in Python over the input rows.
    expected = []
    for row in pools.to_pylist():
        kept = [
            c for c in row["candidates"] if c["scores"]["rm"] is not None and c["scores"]["rm"] > 0
        ]
        if len(kept) >= 2:
            expected.append({**row, "candidates": kept})
    assert 0 < len(expected) < pools.num_rows
    assert out.table.schema == pools.schema
    assert out.table.schema.to_string() == pools.schema.to_string()  # list child names too
    assert out.table.to_pylist() == expected
    # Candidate structs keep their field order, with the score fields in order.
    cand = out.table.schema.field("candidates").type.value_type
    assert [f.name for f in cand] == [
        f.name for f in pools.schema.field("candidates").type.value_type
    ]
    assert [f.name for f in cand.field("scores").type] == ["rm", "judge"]


def test_derived_columns_flow_on(pools):
    sql = (
        "SELECT *, len(candidates) AS n_candidates, "
        "list_max(list_transform(candidates, lambda c: c.scores.rm)) AS best_rm, "
        "list_transform(candidates, lambda c: c.generator) AS generators FROM pools"
    )
    out = Sql(sql, adds=("n_candidates", "best_rm", "generators"))(pools)
    t = out.table
    assert out.rejects.num_rows == 0
    assert t.column_names == pools.column_names + ["n_candidates", "best_rm", "generators"]
    assert t.schema.field("n_candidates").type == pa.int64()
    assert t.schema.field("best_rm").type == pa.float64()
    assert t.schema.field("generators").type == pa.list_(pa.string())
    assert t.select(pools.column_names).equals(pools)
    for row in t.to_pylist():
        rms = [c["scores"]["rm"] for c in row["candidates"] if c["scores"]["rm"] is not None]
        assert row["n_candidates"] == len(row["candidates"])
        assert row["best_rm"] == (max(rms) if rms else None)
        assert row["generators"] == [c["generator"] for c in row["candidates"]]


def test_rejects_and_funnel_add_up(pools):
    stage = Sql("SELECT * FROM pools WHERE len(candidates) >= 3")
    res = Pipeline([stage]).run(pools)
    kept = {r["prompt_id"] for r in pools.to_pylist() if len(r["candidates"]) >= 3}
    assert set(res.table["prompt_id"].to_pylist()) == kept
    # Kept rows stay in input order.
    order = [p for p in pools["prompt_id"].to_pylist() if p in kept]
    assert res.table["prompt_id"].to_pylist() == order

    entry = res.funnel.to_list()[0]
    assert entry == {
        "stage": "Sql",
        "rows_in": pools.num_rows,
        "rows_out": len(kept),
        "rows_rejected": pools.num_rows - len(kept),
    }
    rej = res.rejects.to_pylist()
    assert {r["prompt_id"] for r in rej} == set(pools["prompt_id"].to_pylist()) - kept
    ids = pools["prompt_id"].to_pylist()
    for r in rej:
        assert r["stage"] == "Sql"
        assert r["reason"] == "filtered by sql: SELECT * FROM pools WHERE len(candidates) >= 3"
        assert r["field"] is None
        assert ids[r["row"]] == r["prompt_id"]
        assert json.loads(r["record"])["prompt_id"] == r["prompt_id"]


def test_long_query_is_shortened_in_reason(pools):
    sql = (
        "SELECT *\n  FROM pools\n  WHERE "
        + " AND ".join(f"prompt_id <> 'nope-{i}'" for i in range(10))
        + " AND len(candidates) > 4"
    )
    rej = Sql(sql)(pools).rejects
    assert rej.num_rows > 0
    reason = rej["reason"][0].as_py()
    assert reason.startswith("filtered by sql: SELECT * FROM pools WHERE prompt_id <> 'nope-0'")
    assert reason.endswith("…") and len(reason) <= len("filtered by sql: ") + 80


@pytest.mark.parametrize(
    ("sql", "match"),
    [
        ("SELECT * FROM pools UNION ALL SELECT * FROM pools", "more than once"),
        ("SELECT * FROM pools, range(2)", "more than once"),
        (
            "SELECT * REPLACE (prompt_id || '-x' AS prompt_id) FROM pools",
            "not in the input batch",
        ),
        ("SELECT count(*) AS n FROM pools", "lacks prompt_id"),
        ("SELECT prompt_id AS pid FROM pools", "lacks prompt_id"),
    ],
)
def test_not_row_local_raises(pools, sql, match):
    with pytest.raises(ValueError, match=match):
        Sql(sql)(pools)


def test_only_one_select_statement():
    with pytest.raises(ValueError, match="only SELECT"):
        Sql("COPY pools TO 'out.parquet'")
    with pytest.raises(ValueError, match="only SELECT"):
        Sql("CREATE TABLE x AS SELECT 1")
    with pytest.raises(ValueError, match="exactly one"):
        Sql("DROP VIEW pools; SELECT * FROM pools")
    with pytest.raises(duckdb.ParserException):
        Sql("SELEC * FROM pools")


def test_bad_input_rows_named(pools):
    dup = pa.concat_tables([pools.slice(0, 3), pools.slice(1, 1)])
    with pytest.raises(ValueError, match=r"row 3 repeats prompt_id .* \(field prompt_id\)"):
        Sql("SELECT * FROM pools")(dup)
    ids = pools["prompt_id"].to_pylist()[:4]
    ids[2] = None
    nulls = pools.slice(0, 4).set_column(0, "prompt_id", pa.array(ids, pa.string()))
    with pytest.raises(ValueError, match="row 2 has a null prompt_id"):
        Sql("SELECT * FROM pools")(nulls)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT *, (SELECT count(*) FROM read_csv('/etc/passwd')) AS n FROM pools",
        "SELECT *, (SELECT count(*) FROM read_text('/etc/hostname')) AS n FROM pools",
        "SELECT * FROM pools WHERE prompt_id IN (SELECT prompt_id FROM read_parquet('{path}'))",
        "SELECT *, (SELECT count(*) FROM glob('/*')) AS n FROM pools",
    ],
)
def test_stage_cannot_read_files(pools, tmp_path, sql):
    path = write_parquet(pools, tmp_path / "pools.parquet")
    with pytest.raises(duckdb.PermissionException, match="disabled by configuration"):
        Sql(sql.format(path=path))(pools)


@pytest.mark.parametrize(
    "statement",
    [
        "COPY pools TO '{dir}/x.parquet'",
        "COPY (SELECT 1) TO '{dir}/x.csv'",
        "ATTACH '{dir}/x.duckdb' AS x",
        "EXPORT DATABASE '{dir}/export'",
        "INSTALL httpfs",
        "LOAD httpfs",
    ],
)
def test_connection_blocks_external_access(pools, tmp_path, statement):
    con = connect()
    con.register("pools", pools)
    with pytest.raises(duckdb.Error, match="disabled"):
        con.sql(statement.format(dir=tmp_path))
    assert list(tmp_path.iterdir()) == []  # nothing was written


def test_connection_config_is_locked():
    con = connect(threads=1)
    with pytest.raises(duckdb.Error):
        con.sql("SET enable_external_access = true")
    with pytest.raises(duckdb.Error, match="locked"):
        con.sql("SET threads = 4")
    assert con.sql("SELECT current_setting('threads')").fetchall() == [(1,)]


def test_query_sees_no_python_variables(pools):
    secret = pa.table({"prompt_id": ["leak"]})  # noqa: F841  (what a replacement scan would find)
    with pytest.raises(duckdb.CatalogException):
        Sql("SELECT * FROM pools WHERE prompt_id IN (SELECT prompt_id FROM secret)")(pools)
    with pytest.raises(duckdb.CatalogException):
        query("SELECT * FROM secret", {})


@dataclass(frozen=True)
class NeedsCount(Stage):
    """A later stage that requires the column the Sql stage derives."""

    requires = ("prompt_id", "n_candidates")

    def process(self, table):
        return table.append_column(
            "twice", pa.array([2 * n for n in table["n_candidates"].to_pylist()], pa.int64())
        )


def test_in_pipeline_with_later_stage(pools):
    stages = [
        Sql(
            "SELECT *, len(candidates) AS n_candidates FROM pools WHERE len(candidates) > 0",
            adds=("n_candidates",),
            label="count",
        ),
        Sql(FILTER_RM, label="rm"),
        NeedsCount(),
    ]
    res = Pipeline(stages).run(pools)
    assert [e["stage"] for e in res.funnel.to_list()] == ["Sql[count]", "Sql[rm]", "NeedsCount"]
    for e in res.funnel.to_list():
        assert e["rows_in"] == e["rows_out"] + e["rows_rejected"]
    assert res.funnel.to_list()[0]["rows_rejected"] > 0  # pools with no candidates
    assert res.table.num_rows + res.rejects.num_rows == pools.num_rows
    assert res.table["twice"].to_pylist() == [2 * n for n in res.table["n_candidates"].to_pylist()]
    # n_candidates was computed before the rm filter dropped candidates.
    assert any(
        n > len(c)
        for n, c in zip(
            res.table["n_candidates"].to_pylist(), res.table["candidates"].to_pylist(), strict=True
        )
    )

    # Without declaring the derived column, the pipeline refuses before any work.
    with pytest.raises(MissingColumnsError, match="n_candidates"):
        Pipeline([Sql("SELECT *, len(candidates) AS n_candidates FROM pools"), NeedsCount()]).check(
            pools.schema
        )
    # A declared column that the query does not produce is an error.
    with pytest.raises(ValueError, match="adds declares"):
        Sql("SELECT * FROM pools", adds=("n_candidates",))(pools)


def test_pools_with_empty_scores_struct():
    pools = make_pools(20, scores=())
    assert pools.schema.field("candidates").type.value_type.field("scores").type.num_fields == 0
    out = Sql("SELECT * FROM pools WHERE len(candidates) BETWEEN 1 AND 3")(pools)
    assert out.table.schema.to_string() == pools.schema.to_string()
    assert out.table.to_pylist() == [r for r in pools.to_pylist() if 1 <= len(r["candidates"]) <= 3]
    # A score can be added in SQL: it becomes a canonical float64 score field.
    add = (
        "SELECT * REPLACE (list_transform(candidates, lambda c: struct_update(c, scores := "
        "struct_insert(c.scores, n_words := c.num_tokens))) AS candidates) FROM pools"
    )
    scored = Sql(add)(pools).table
    assert scored.schema == pool_schema(["n_words"])
    for row in scored.to_pylist():
        for c in row["candidates"]:
            assert c["scores"] == {"n_words": float(c["num_tokens"])}


def test_reshaped_candidates_are_kept_not_conformed(pools):
    """A query that adds a field to the candidate struct no longer gives a canonical pool:
    the field is kept (conform would drop it silently), with plain types."""
    sql = (
        "SELECT * REPLACE (list_transform(candidates, lambda c: struct_insert(c, "
        "chars := length(c.response))) AS candidates) FROM pools"
    )
    t = Sql(sql)(pools).table
    cand = t.schema.field("candidates").type.value_type
    assert cand.names[-1] == "chars"
    assert large_types(t.schema.field("candidates").type) == []
    first = next(r for r in t.to_pylist() if r["candidates"])
    assert all(c["chars"] == len(c["response"]) for c in first["candidates"])


def test_result_types_are_plain(pools):
    big = pl.from_arrow(pools).to_arrow()  # large_string / large_list, as polars gives them
    assert large_types(big.schema.field("candidates").type)
    sql = "SELECT *, upper(source) AS src, [prompt_id, source] AS pair FROM pools"
    t = Sql(sql)(big).table
    for f in t.schema:
        assert large_types(f.type) == [], f.name
    assert t.select(pools.column_names).equals(pools)
    # Results from shards concatenate (DuckDB's list<l: ...> would not).
    halves = [Sql(sql)(pools.slice(0, 30)).table, Sql(sql)(pools.slice(30)).table]
    assert pa.concat_tables(halves).equals(t)


def test_per_batch_equals_whole_for_row_local_query(pools):
    stage = Sql(FILTER_RM)
    whole = stage(pools)
    parts = [stage(pools.slice(i, 7)) for i in range(0, pools.num_rows, 7)]
    assert pa.concat_tables([p.table for p in parts]).equals(whole.table)
    assert (
        pa.concat_tables([p.rejects for p in parts])
        .drop_columns("row")
        .equals(whole.rejects.drop_columns("row"))
    )


def test_deterministic_picklable_and_thread_safe(pools):
    stage = Sql(FILTER_RM, threads=2)
    first = stage(pools)
    assert "duckdb" in stage.resources
    again = pickle.loads(pickle.dumps(stage))  # the connection is not pickled
    assert "duckdb" not in again.resources
    assert again.fingerprint == stage.fingerprint == Sql(FILTER_RM).fingerprint
    assert Sql(FILTER_RM + " AND true").fingerprint != stage.fingerprint
    second = again(pools)
    assert second.table.equals(first.table) and second.rejects.equals(first.rejects)
    batches = [pools.slice(i, 10) for i in range(0, pools.num_rows, 10)] * 3
    with ThreadPoolExecutor(4) as ex:
        together = list(ex.map(stage, batches))
    for b, out in zip(batches, together, strict=True):
        assert out.table.equals(stage(b).table)


def test_query_over_tables_and_parquet(tmp_path):
    scored = make_pools(30)
    bare = make_pools(10, scores=(), seed=1)
    write_parquet(bare, tmp_path / "shards" / "part-0.parquet")
    write_parquet(make_pools(5, scores=(), seed=2), tmp_path / "shards" / "part-1.parquet")
    one = write_parquet(bare, tmp_path / "bare.parquet")

    # Parquet cannot store an empty struct: read_parquet restores it, so does query().
    back = query("SELECT * FROM bare", {"bare": one})
    assert back.schema.to_string() == bare.schema.to_string()
    assert back["prompt_id"].equals(bare["prompt_id"])

    # Aggregates are fine here: the query sees whole tables, not batches.
    counts = query(
        "SELECT c.generator AS generator, count(*) AS n, avg(c.scores.rm) AS mean_rm "
        "FROM (SELECT unnest(candidates) AS c FROM s) GROUP BY ALL ORDER BY generator",
        {"s": scored},
    )
    rows = [c for r in scored.to_pylist() for c in r["candidates"]]
    for r in counts.to_pylist():
        mine = [c for c in rows if c["generator"] == r["generator"]]
        rms = [c["scores"]["rm"] for c in mine if c["scores"]["rm"] is not None]
        assert r["n"] == len(mine)
        assert r["mean_rm"] == pytest.approx(sum(rms) / len(rms))
    assert counts.schema.field("generator").type == pa.string()

    # A folder of shards, a list of files, and a join across sources.
    n = query("SELECT count(*) AS n FROM shards", {"shards": tmp_path / "shards"})
    assert n["n"].to_pylist() == [15]
    files = sorted((tmp_path / "shards").glob("*.parquet"))
    joined = query(
        "SELECT a.prompt_id FROM a JOIN b USING (prompt_id) ORDER BY a.prompt_id",
        {"a": [str(f) for f in files], "b": one},
    )
    assert joined["prompt_id"].to_pylist() == sorted(bare["prompt_id"].to_pylist())

    assert query("DESCRIBE s", {"s": scored}).num_rows == len(scored.column_names)
    with pytest.raises(ValueError, match="only SELECT or EXPLAIN"):
        query("COPY s TO 'x.parquet'", {"s": scored})
    with pytest.raises(duckdb.PermissionException):
        query(f"SELECT * FROM read_parquet('{one}')", {})
    with pytest.raises(FileNotFoundError):
        query("SELECT 1", {"x": tmp_path / "missing.parquet"})
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no \\*.parquet"):
        query("SELECT 1", {"x": tmp_path / "empty"})


def test_query_restores_empty_scores_from_parquet(tmp_path):
    bare = make_pools(10, scores=(), seed=1)
    back = query("SELECT * FROM bare", {"bare": write_parquet(bare, tmp_path / "b.parquet")})
    assert back.equals(bare)


def test_format_table():
    t = make_pools(50)
    text = format_table(t, max_rows=6)
    assert text.startswith("shape: (50, 5)")
    for name in t.column_names:
        assert name in text
    first, last = t["prompt_id"][0].as_py(), t["prompt_id"][-1].as_py()
    middle = t["prompt_id"][25].as_py()
    assert first in text and last in text and middle not in text
    assert "…" in text
    assert max(len(line) for line in text.splitlines()) <= 160
    small = format_table(query("SELECT prompt_id, len(candidates) AS n FROM t", {"t": t}), 100)
    assert all(p in small for p in t["prompt_id"].to_pylist())
