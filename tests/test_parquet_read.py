"""``prefdata.io.parquet.read_row_group``: a row group's leaves decoded on several threads
and merged back must equal pyarrow's own single-reader result, for every nested shape a
pool table has (null lists, null structs, empty lists, scores whose names are dotted
prefixes of each other)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import prefdata.io.parquet as parquet_io
from prefdata.io.parquet import read_row_group
from prefdata.schema import pool_schema


def _pools(n: int) -> pa.Table:
    rows = []
    for i in range(n):
        cands = [
            {
                "candidate_id": f"c{i}-{j}",
                "response": None if (i + j) % 7 == 0 else f"answer {j} " * (j + 1),
                "generator": f"g{j % 2}",
                "sample_index": j,
                "seed": i * 10 + j,
                "finish_reason": "stop",
                "num_tokens": j,
                "scores": {"a": None if j == 2 else float(i - j), "a.z": float(j)},
                "flags": ["empty"] * (i % 3 == 0 and j == 1),
            }
            for j in range(i % 4)
        ]
        if i % 5 == 1:
            cands.insert(0, None)  # a null candidate
        rows.append(
            {
                "prompt_id": f"p{i}",
                "prompt": [{"role": "user", "content": f"question {i}"}],
                "source": None,
                "metadata": None,
                "candidates": None if i % 11 == 3 else cands,
            }
        )
    return pa.Table.from_pylist(rows, schema=pool_schema(["a", "a.z"]))


@pytest.fixture
def merges(monkeypatch):
    """Every row group goes the parallel way; counts the columns merged from parts."""
    monkeypatch.setattr(parquet_io, "PARALLEL_MIN_BYTES", 0)
    seen = []
    merge = parquet_io._merge

    def spy(parts, type):
        seen.append(len(parts))
        return merge(parts, type)

    monkeypatch.setattr(parquet_io, "_merge", spy)
    return seen


@pytest.mark.parametrize("threads", [2, 3, 5])
def test_parallel_row_group_equals_pyarrow(tmp_path, merges, threads):
    path = tmp_path / "pools.parquet"
    pq.write_table(_pools(60), path, row_group_size=17)
    file = pq.ParquetFile(path)
    for g in range(file.num_row_groups):
        got = read_row_group(path, g, threads=threads)
        want = file.read_row_group(g)
        assert str(got.schema) == str(want.schema)  # list item names too
        assert got.equals(want), f"row group {g}"
    assert max(merges) >= 2  # the candidates column really came from several readers
    # generators, finish reasons and flags were read as dictionaries and made plain again
    meta = file.metadata.row_group(0)
    repeated = [meta.column(j).path_in_schema for j in range(meta.num_columns)]
    repeated = [p for j, p in enumerate(repeated) if parquet_io._repetitive(meta.column(j))]
    assert "candidates.list.element.generator" in repeated


@pytest.mark.parametrize(
    "columns",
    [
        ["prompt_id", "candidates.list.element.scores"],
        ["candidates.list.element.scores.a", "candidates.list.element.flags"],
        ["candidates.list.element.response", "candidates.list.element.candidate_id"],
        ["prompt", "candidates"],
    ],
)
def test_parallel_selection_equals_pyarrow(tmp_path, merges, columns):
    path = tmp_path / "pools.parquet"
    pq.write_table(_pools(40), path, row_group_size=25)
    file = pq.ParquetFile(path)
    for g in range(file.num_row_groups):
        got = read_row_group(path, g, columns=columns, threads=2)
        want = file.read_row_group(g, columns=columns)
        assert got.schema == want.schema and got.equals(want), (g, columns)
    assert max(merges) >= 2


def test_stored_dictionaries_stay_dictionaries(tmp_path, merges):
    table = _pools(30)
    gen = pa.array([f"g{i % 2}" for i in range(30)]).dictionary_encode()
    table = table.append_column("kind", gen).append_column("n", pa.array(range(30)))
    path = tmp_path / "dict.parquet"
    pq.write_table(table, path)
    got = read_row_group(path, 0, threads=2)
    want = pq.ParquetFile(path).read_row_group(0)
    assert pa.types.is_dictionary(got.schema.field("kind").type)
    assert str(got.schema) == str(want.schema) and got.equals(want)


def test_large_types_order_and_duplicate_names_match_pyarrow(tmp_path, merges):
    """Repetitive large strings come back large (read as dictionaries, cast to the file's
    type); columns come in the order asked; duplicate column names are left to pyarrow."""
    n = 2000
    table = pa.table(
        {
            "a": pa.array([f"id-{i}" for i in range(n)]),
            "b": pa.array(
                [[{"g": f"g{i % 2}", "x": float(i)}] for i in range(n)],
                pa.large_list(pa.struct([("g", pa.large_string()), ("x", pa.float64())])),
            ),
            "c": pa.array(range(n)),
        }
    )
    path = tmp_path / "large.parquet"
    pq.write_table(table, path)
    file = pq.ParquetFile(path)
    for columns in (None, ["b", "a"], ["c", "b.list.element.g"], ["a", "c"]):
        got = read_row_group(path, 0, columns=columns, threads=2)
        want = file.read_row_group(0, columns=columns)
        assert got.column_names == want.column_names, columns
        assert got.schema == want.schema and got.equals(want), columns
    assert got.schema.field("a").type == pa.string()
    assert read_row_group(path, 0, threads=2).schema.field("b").type == table.schema.field("b").type

    twice = tmp_path / "twice.parquet"
    pq.write_table(pa.Table.from_arrays([pa.array([1, 2]), pa.array([3, 4])], ["x", "x"]), twice)
    assert read_row_group(twice, 0, threads=2).equals(pq.ParquetFile(twice).read_row_group(0))


def test_small_or_unmergeable_row_groups_are_read_whole(tmp_path, merges, monkeypatch):
    path = tmp_path / "map.parquet"
    table = pa.table({"m": pa.array([[("k", 1)]], pa.map_(pa.string(), pa.int64())), "x": [1]})
    pq.write_table(table, path)
    assert read_row_group(path, 0, threads=4).equals(table)
    monkeypatch.setattr(parquet_io, "PARALLEL_MIN_BYTES", 1 << 40)
    pq.write_table(_pools(5), path)
    assert read_row_group(path, 0, threads=4).equals(pq.ParquetFile(path).read_row_group(0))
    assert merges == []


def test_one_thread_reads_on_the_calling_thread_alone(tmp_path, merges, monkeypatch):
    """``threads=1`` (the executor's read-ahead, beside the stages' thread) asks pyarrow for
    no threads of its own; the table is the same."""
    path = tmp_path / "pools.parquet"
    pq.write_table(_pools(60), path, row_group_size=30)
    asked, real = [], pq.ParquetFile.read_row_group

    def spy(self, i, columns=None, use_threads=True, **kw):
        asked.append(use_threads)
        return real(self, i, columns=columns, use_threads=use_threads, **kw)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", spy)
    got = read_row_group(path, 1, threads=1)
    assert asked == [False] and merges == []
    assert got.equals(real(pq.ParquetFile(path), 1))
