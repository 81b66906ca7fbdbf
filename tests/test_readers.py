"""Readers: every source kind into plain Arrow, bad lines into rejects, funnels that add up."""

from __future__ import annotations

import gzip
import json

import datasets
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prefdata.io.readers import read_pools, read_records
from prefdata.schema import REJECTS_SCHEMA
from prefdata.validate import validate

ROWS = [
    {"prompt": "What is 2+2?", "response": "4", "generator": "m1", "rm": 0.9},
    {"prompt": "What is 2+2?", "response": "five", "generator": "m2", "rm": None},
    {"prompt": "Name a colour.", "response": "Red", "generator": "m1", "rm": 0.4},
]
EXPECTED = pa.Table.from_pylist(ROWS)


def large_types(schema: pa.Schema) -> bool:
    return any(
        pa.types.is_large_string(f.type)
        or pa.types.is_large_list(f.type)
        or pa.types.is_string_view(f.type)
        for f in schema
    )


def check_funnel(result, rows_in):
    read, layout = result.funnel.entries
    assert read.stage == "read" and read.rows_in == rows_in
    assert read.rows_in == read.rows_out + read.rows_rejected
    assert layout.rows_in == read.rows_out
    assert layout.rows_in == layout.rows_out + layout.rows_rejected
    assert result.rejects.num_rows == read.rows_rejected + layout.rows_rejected
    assert validate(result.table) == []


def write_jsonl(path, lines: list[bytes]):
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wb") as fh:
        fh.write(b"\n".join(lines) + b"\n")


def as_lines(rows):
    return [json.dumps(r).encode() for r in rows]


def assert_same_rows(raw: pa.Table):
    assert not large_types(raw.schema)
    assert raw.select(EXPECTED.column_names).to_pylist() == ROWS


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    d = tmp_path_factory.mktemp("sources")
    pq.write_table(EXPECTED, d / "rows.parquet")
    (d / "shards").mkdir()
    pq.write_table(EXPECTED.slice(0, 2), d / "shards" / "part-0.parquet")
    pq.write_table(EXPECTED.slice(2), d / "shards" / "part-1.parquet")
    write_jsonl(d / "rows.jsonl", as_lines(ROWS))
    write_jsonl(d / "rows.jsonl.gz", as_lines(ROWS))
    (d / "rows.json").write_text(json.dumps(ROWS))
    ds = datasets.Dataset(EXPECTED)
    ds.save_to_disk(str(d / "saved"))
    datasets.DatasetDict({"train": ds, "test": ds.select([2])}).save_to_disk(str(d / "saved_dict"))
    (d / "hf" / "data").mkdir(parents=True)
    pq.write_table(EXPECTED, d / "hf" / "data" / "train-00000-of-00001.parquet")
    pq.write_table(EXPECTED.slice(1), d / "hf" / "data" / "test-00000-of-00001.parquet")
    return d


@pytest.mark.parametrize(
    "name", ["rows.parquet", "shards", "rows.jsonl", "rows.jsonl.gz", "rows.json", "saved"]
)
def test_file_sources(sources, name):
    raw, rejects = read_records(sources / name)
    assert rejects.num_rows == 0 and rejects.schema == REJECTS_SCHEMA
    assert_same_rows(raw)
    result = read_pools(sources / name, "long", generator_col="generator", score_cols=["rm"])
    check_funnel(result, 3)
    assert result.table.num_rows == 2
    assert result.table["source"].to_pylist() == [name, name]
    assert [c["scores"]["rm"] for c in result.table["candidates"][0].as_py()] == [0.9, None]


def test_hf_dataset_dict_and_data_folder_need_a_split(sources):
    raw, _ = read_records(sources / "saved_dict", split="test")
    assert raw.to_pylist() == ROWS[2:]
    with pytest.raises(ValueError, match="pass split="):
        read_records(sources / "saved_dict")
    raw, _ = read_records(sources / "hf", split="test")  # datasets.load_dataset(folder)
    assert raw.to_pylist() == ROWS[1:]
    result = read_pools(sources / "hf", "long", split="train")
    assert result.table["source"][0].as_py() == "hf:train"


def test_in_memory_sources():
    objects = [
        EXPECTED,
        pl.from_arrow(EXPECTED),
        pd.DataFrame(ROWS),
        datasets.Dataset(EXPECTED),
        datasets.Dataset.from_polars(pl.from_arrow(EXPECTED)),  # large_string inside
        datasets.DatasetDict({"train": datasets.Dataset(EXPECTED)}),
    ]
    for obj in objects:
        raw, rejects = read_records(obj)
        assert rejects.num_rows == 0
        raw = raw.cast(pa.schema([raw.schema.field(n) for n in raw.column_names]))
        assert not large_types(raw.schema), type(obj)
        got = raw.to_pylist()
        assert [{k: r[k] for k in ("prompt", "response", "generator")} for r in got] == [
            {k: r[k] for k in ("prompt", "response", "generator")} for r in ROWS
        ]
        result = read_pools(obj, "long", score_cols=["rm"], source_name="mem")
        check_funnel(result, 3)
        assert result.table.num_rows == 2


def test_shuffled_dataset_keeps_its_order():
    ds = datasets.Dataset(EXPECTED).select([2, 0])
    raw, _ = read_records(ds)
    assert raw["response"].to_pylist() == ["Red", "4"]


def test_pandas_mixed_object_column_rejects_the_odd_row():
    df = pd.DataFrame({"prompt": ["a", "b", "c"], "response": ["x", 5, "z"]})
    raw, rejects = read_records(df)
    assert raw["response"].to_pylist() == ["x", "z"]
    assert rejects.to_pylist()[0]["row"] == 1
    assert rejects.to_pylist()[0]["field"] == "response"


def test_malformed_jsonl_lines_become_rejects(tmp_path):
    lines = [
        json.dumps({"prompt": "q1", "response": "a"}).encode(),
        b"",
        b'{"prompt": "q2", "response": ',
        b'{"prompt": "caf\xe9", "response": "x"}',
        b"[1, 2]",
        b"   ",
        json.dumps({"prompt": "q3", "response": 7}).encode(),
        json.dumps({"prompt": "q4", "response": "b"}).encode(),
        json.dumps({"prompt": "", "response": "c"}).encode(),
    ]
    path = tmp_path / "bad.jsonl.gz"
    write_jsonl(path, lines)
    raw, rejects = read_records(path)
    assert raw["prompt"].to_pylist() == ["q1", "q4", ""]
    got = {r["row"]: (r["field"], r["reason"]) for r in rejects.to_pylist()}
    assert sorted(got) == [2, 3, 4, 6]
    assert got[2][1].startswith("line 3: invalid JSON: Expecting value")
    assert got[3][1].startswith("line 4: invalid UTF-8 at byte")
    assert got[4][1] == "line 5: JSON array, not an object"
    assert got[6] == (
        "response",
        "line 7: field 'response' is a number where other rows hold a string",
    )
    result = read_pools(path, "long")
    check_funnel(result, 7)  # blank lines are not rows
    layout = {r["row"]: r for r in result.rejects.to_pylist() if r["stage"] == "layout:long"}
    # numbered by input line like the read rejects (line 9), not by the rows left after them
    assert list(layout) == [8] and layout[8]["field"] == "prompt"
    assert result.table.num_rows == 2


def test_a_lone_surrogate_rejects_its_line_naming_the_field(tmp_path):
    """JSON allows an unpaired UTF-16 escape that UTF-8 and Arrow cannot hold: that line
    is rejected with its number and field, and the lines around it are kept (an escaped
    pair, one emoji, is fine)."""
    path = tmp_path / "s.jsonl"
    path.write_text(
        '{"prompt": "a", "response": "x"}\n'
        '{"prompt": "b", "response": "bad \\ud800 here"}\n'
        '{"prompt": "c", "response": "\\ud83d\\ude00"}\n'
        '{"prompt": [{"role": "user", "content": "\\udfff"}], "response": "y"}\n'
    )
    raw, rejects = read_records(path)
    assert raw["prompt"].to_pylist() == ["a", "c"]
    assert raw["response"].to_pylist() == ["x", "\U0001f600"]
    got = [(r["row"], r["field"], r["reason"]) for r in rejects.to_pylist()]
    assert got[0][:2] == (1, "response") and got[0][2].startswith(
        "line 2: field 'response' holds a lone UTF-16 surrogate"
    )
    assert got[1][:2] == (3, "prompt") and "field 'prompt[0].content'" in got[1][2]
    check_funnel(read_pools(path, "long"), 4)


def test_all_numeric_response_column_is_rejected_per_row(tmp_path):
    path = tmp_path / "nums.jsonl"
    write_jsonl(path, as_lines([{"prompt": "q", "response": 1}, {"prompt": "r", "response": 2}]))
    result = read_pools(path, "long")
    check_funnel(result, 2)
    assert result.table.num_rows == 0
    assert result.rejects["reason"].to_pylist() == ["response is not a string (int64)"] * 2


def test_json_array_with_non_objects(tmp_path):
    path = tmp_path / "arr.json"
    path.write_text(json.dumps([{"prompt": "q", "response": "a"}, "oops"]))
    raw, rejects = read_records(path)
    assert raw.num_rows == 1 and rejects["reason"].to_pylist() == [
        "item 1: JSON string, not an object"
    ]
    # a .json file that is JSON Lines (common on the Hub) reads as JSON Lines
    (tmp_path / "lines.json").write_text('{"prompt": "q"}\n{"prompt": "r"}\n')
    assert read_records(tmp_path / "lines.json")[0]["prompt"].to_pylist() == ["q", "r"]


def test_folder_of_json_files_numbers_rows_across_files(tmp_path):
    """Rows run on across the files: an array counts its items (not its lines), JSON Lines
    their lines; the bad line 2 of the second file is row 3 + 1."""
    import gzip

    folder = tmp_path / "data"
    folder.mkdir()
    items = [{"prompt": f"q{i}", "response": "a"} for i in range(3)]
    with gzip.open(folder / "a.json.gz", "wt") as fh:
        fh.write(json.dumps(items, indent=2))  # 3 items over many lines
    write_jsonl(folder / "b.jsonl", [json.dumps(items[0]).encode(), b"{broken"])
    raw, rejects = read_records(folder)
    assert raw.num_rows == 4
    assert rejects["row"].to_pylist() == [4]
    assert rejects["reason"][0].as_py().startswith("b.jsonl: line 2: invalid JSON")


def test_missing_path_and_unknown_objects():
    with pytest.raises(FileNotFoundError):
        read_records("/no/such/file.jsonl")
    with pytest.raises(TypeError, match="cannot read"):
        read_records(42)


def test_hub_name_without_network_raises_datasets_error(monkeypatch):
    """The Hub is unreachable here: offline mode makes datasets fail fast, as it would
    without a network; the reader must let that error through, not swallow it."""
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConnectionError, match="someone/missing-dataset"):
        read_pools("someone/missing-dataset", "pairs", split="train")


def test_pools_written_before_any_scorer_read_back_in_the_pool_layout(tmp_path):
    from prefdata.io.parquet import write_parquet

    pools = read_pools(pa.table({"prompt": ["a", "b", "c"], "response": ["x", "y", "z"]}), "long")
    assert pools.table.schema.field("candidates").type.value_type.field("scores").type == pa.struct(
        []
    )
    path = write_parquet(pools.table.slice(1), tmp_path / "pools.parquet")  # no scores field
    again = read_pools(path, "pool")
    check_funnel(again, 2)
    assert again.table.equals(pools.table.slice(1))


def streamed_as_whole(path, raw: pa.Table, bad: pa.Table) -> list:
    """The batches of ``path``, checked to give the whole read's table and rejects."""
    from prefdata.io.readers import read_batches

    batches = list(read_batches(path))
    assert pa.concat_tables([b.table for b in batches]).equals(raw)
    assert pa.concat_tables([b.rejects for b in batches]).equals(bad)
    return batches


@pytest.mark.parametrize("batch_bytes", [40, 1 << 20])
def test_csv_streams_in_blocks_with_the_rows_and_rejects_of_a_whole_read(
    tmp_path, monkeypatch, batch_bytes
):
    """A CSV file is read block by block (memory stays a block) with the same rows, reject
    lines and input-row numbers as reading it whole; ragged rows anywhere, the last
    ones included, are rejected by their line."""
    from prefdata.io import readers

    lines = ["prompt,response,rm"]
    for i in range(40):
        lines.append(f"q{i % 5},r{i},{i}" if i % 9 != 4 else f"q{i},bad,row,extra")
    lines.append("tail,only")  # a ragged last line
    path = tmp_path / "in.csv"
    path.write_text("\n".join(lines) + "\n")
    raw, bad = read_records(path)
    monkeypatch.setattr(readers, "BATCH_BYTES", batch_bytes)
    batches = streamed_as_whole(path, raw, bad)
    assert (len(batches) > 3) == (batch_bytes == 40)
    assert sum(b.rows_in for b in batches) == 41
    rows = [int(r) for b in batches for r in b.rows]
    assert rows == [i for i in range(41) if i % 9 != 4 and i != 40]
    assert bad["row"].to_pylist() == [4, 13, 22, 31, 40]
    ref = read_pools(path, "long", score_cols=["rm"])
    from prefdata.execute import Ingest, LocalExecutor

    result = LocalExecutor(tmp_path / "w").run([], Ingest(path, "long", score_cols=["rm"]))
    assert result.read().equals(ref.table) and result.funnel.to_list() == ref.funnel.to_list()


@pytest.mark.parametrize("batch_bytes", [80, 1 << 20])
def test_a_csv_column_empty_in_the_first_block_is_read_as_text(tmp_path, monkeypatch, batch_bytes):
    """Arrow types a column from the first block: one empty there is typed null, and a
    later value stopped the read ("CSV conversion error to null"), streamed, or read
    whole past its 1 MiB first block. Such a column is read as text, its empty values
    null, and a whole read is the streamed batches joined, so both give one table."""
    from prefdata.io import readers

    lines = ["prompt,response,rm,generator"]
    lines += [f"q{i % 4},r{i},{i}," for i in range(30)]
    lines += [f"q{i % 4},s{i},{i},model-{i % 2}" for i in range(10)]
    path = tmp_path / "in.csv"
    path.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(readers, "BATCH_BYTES", batch_bytes)
    raw, bad = read_records(path)
    assert bad.num_rows == 0 and raw.num_rows == 40
    assert raw.schema.field("generator").type == pa.string()
    assert raw.schema.field("rm").type == pa.int64()
    # empty is null in a column typed null first (as before), "" in one typed text
    empty = None if batch_bytes == 80 else ""
    assert raw["generator"].to_pylist() == [empty] * 30 + ["model-0", "model-1"] * 5
    batches = streamed_as_whole(path, raw, bad)
    assert (len(batches) > 3) == (batch_bytes == 80)
    ref = read_pools(path, "long", score_cols=["rm"])
    from prefdata.execute import Ingest, LocalExecutor

    result = LocalExecutor(tmp_path / "w").run([], Ingest(path, "long", score_cols=["rm"]))
    assert result.read().equals(ref.table) and ref.table.num_rows == 4


@pytest.mark.parametrize("batch_bytes", [100, 1 << 20])
def test_a_csv_value_a_later_block_cannot_convert_retypes_its_column(
    tmp_path, monkeypatch, batch_bytes
):
    """Arrow types a column from the first block and stopped at a later value that does
    not convert ("CSV conversion error to int64"). The read starts again with the column
    retyped: whole numbers meeting a decimal are doubles, a number column meeting text
    keeps its numbers and rejects that row alone, naming its field, and any other
    column (here a flag) is text. Streamed or whole, the same table; the ingest gives
    the pools of a whole read."""
    from prefdata.io import readers

    lines = ["prompt,response,rm,rating,ok"]
    lines += [f"q{i % 5},r{i},{i},{i % 3},true" for i in range(30)]
    lines += ["q1,late,7.5,2,false", "q2,bad,8,unknown,maybe", "q3,fine,NA,1,"]
    path = tmp_path / "in.csv"
    path.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(readers, "BATCH_BYTES", batch_bytes)
    raw, bad = read_records(path)
    types = {f.name: f.type for f in raw.schema}
    if batch_bytes == 100:  # the first block holds whole numbers and true only
        assert types == {
            "prompt": pa.string(), "response": pa.string(), "rm": pa.float64(),
            "rating": pa.int64(), "ok": pa.string(),
        }  # fmt: skip
        assert [(r["row"], r["field"], r["reason"]) for r in bad.to_pylist()] == [
            (31, "rating", "field 'rating' is 'unknown', not a number (int64) as in the first rows")
        ]
        assert raw["ok"].to_pylist()[-2:] == ["false", None]  # "maybe": a rejected row
        from prefdata.io.csv_files import _CsvRead, csv_batches

        how = _CsvRead(batch_bytes)
        assert sum(b.rows_in for b in csv_batches(path, batch_bytes, how)) == 33
        assert how.wider == ["rm"] and how.checked == {"rating": pa.int64()}
        assert how.text == ["ok"] and not how.latin1  # retyped, read as UTF-8 still
    else:  # one block: Arrow's inference sees every value
        assert types["rm"] == pa.float64() and types["rating"] == pa.string()
        assert bad.num_rows == 0
    assert raw["rm"].to_pylist()[:3] == [0.0, 1.0, 2.0] and raw["rm"][30].as_py() == 7.5
    assert raw["rm"][-1].as_py() is None
    if batch_bytes > 100:
        streamed_as_whole(path, raw, bad)
    else:  # streamed, the rows before the retyping keep their first types
        streamed = list(readers.read_batches(path))
        assert len(streamed) > 3
        assert pa.concat_tables([b.rejects for b in streamed]).equals(bad)

        def same(r: dict) -> dict:  # True as the text "true", 3 as 3.0
            return {k: str(v).lower() if v is True else v for k, v in r.items()} | {
                "rm": None if r["rm"] is None else float(r["rm"])
            }

        got = [same(r) for b in streamed for r in b.table.to_pylist()]
        assert got == [same(r) for r in raw.to_pylist()]
    ref = read_pools(path, "long", score_cols=["rm"])
    from prefdata.execute import Ingest, LocalExecutor

    result = LocalExecutor(tmp_path / "w").run([], Ingest(path, "long", score_cols=["rm"]))
    assert result.read().equals(ref.table)
    assert result.funnel.to_list() == ref.funnel.to_list()


def test_a_csv_read_again_as_latin1_keeps_the_first_reads_types(tmp_path, monkeypatch):
    """Read as Latin-1, UTF-8 text takes more bytes, so the first block holds fewer rows
    and Arrow could type a column otherwise (here ``rm``: text in the first UTF-8 block,
    whole numbers in the first Latin-1 one). A read that starts again keeps the first
    read's types: streamed or whole, one table, and the ingest gives the same pools."""
    from prefdata.io import readers

    lines = [b"prompt,response,rm", "q1,\u65e5\u672c\u8a9e\u65e5\u672c\u8a9e,3".encode()]
    lines += [b"q2,ok,x"] + [b"q%d,r%d,%d" % (i % 4, i, i) for i in range(20)]
    lines += [b"q3,caf\xe9,1,extra"] + [b"q%d,s%d,%d" % (i % 4, i, i) for i in range(5)]
    path = tmp_path / "in.csv"
    path.write_bytes(b"\n".join(lines) + b"\n")
    monkeypatch.setattr(readers, "BATCH_BYTES", 64)
    raw, bad = read_records(path)
    assert raw.schema.field("rm").type == pa.string() and raw.num_rows == 27
    assert [(r["row"], r["field"]) for r in bad.to_pylist()] == [(22, None)]
    streamed_as_whole(path, raw, bad)
    ref = read_pools(path, "long")
    from prefdata.execute import Ingest, LocalExecutor

    result = LocalExecutor(tmp_path / "w").run([], Ingest(path, "long"))
    assert result.read().equals(ref.table)


def test_small_parquet_row_groups_are_read_together(tmp_path, monkeypatch):
    """Consecutive row groups share a batch up to BATCH_ROWS rows (and BATCH_BYTES), a
    very large one is cut; the rows are the file's, in order, either way."""
    from prefdata.io import readers
    from prefdata.io.readers import read_batches

    path = tmp_path / "in.parquet"
    table = pa.table({"prompt": [f"q{i % 7}" for i in range(100)], "rm": list(range(100))})
    pq.write_table(table, path, row_group_size=10)
    monkeypatch.setattr(readers, "BATCH_ROWS", 25)
    batches = list(read_batches(path))
    assert [b.table.num_rows for b in batches] == [20, 20, 20, 20, 20]
    assert pa.concat_tables([b.table for b in batches]).equals(table)
    monkeypatch.setattr(readers, "BATCH_ROWS", 1 << 18)
    assert [b.table.num_rows for b in read_batches(path)] == [100]
    monkeypatch.setattr(readers, "BATCH_BYTES", 50)  # each group "very large": cut
    cut = list(read_batches(path))
    assert len(cut) > 10 and pa.concat_tables([b.table for b in cut]).equals(table)


@pytest.mark.parametrize("streamed", [False, True])
def test_a_column_name_that_is_not_utf8_is_named_with_its_file(tmp_path, streamed):
    """Arrow keeps a CSV header's bytes as they are; reading the name back fails. The
    error names the file and the name's bytes (the command line shows it as one line)."""
    from prefdata.io.readers import read_batches

    path = tmp_path / "in.csv"
    path.write_bytes(b"prom\xbfpt,response\nq,a\n")
    with pytest.raises(ValueError, match=r"in\.csv: a column name is not valid UTF-8: b'prom"):
        list(read_batches(path)) if streamed else read_records(path)


def test_a_csv_value_that_is_not_utf8_rejects_its_row_in_any_block(tmp_path, monkeypatch):
    """Arrow's own check would type a column with a Latin-1 byte in the first block as
    binary (every row then unusable) and stop at one in a later block; each such row is
    rejected by itself, naming its field, read whole or streamed."""
    from prefdata.io import readers

    lines = [b"prompt,response"] + [b"q%d,answer %d" % (i, i) for i in range(60)]
    lines[3] = b"q2,caf\xe9"  # first block
    lines[50] = b"q49,na\xefve"  # a later one
    path = tmp_path / "in.csv"
    path.write_bytes(b"\n".join(lines) + b"\n")
    raw, bad = read_records(path)
    assert raw.num_rows == 58 and raw.schema.field("response").type == pa.string()
    assert [(r["row"], r["field"]) for r in bad.to_pylist()] == [(2, "response"), (49, "response")]
    assert bad["reason"][0].as_py() == "field 'response' is not valid UTF-8 at byte 3"
    assert json.loads(bad["record"][0].as_py()) == {"prompt": "q2", "response": "caf\ufffd"}
    monkeypatch.setattr(readers, "BATCH_BYTES", 200)
    batches = streamed_as_whole(path, raw, bad)
    assert len(batches) > 2
    assert [int(r) for b in batches for r in b.rows] == [i for i in range(60) if i not in (2, 49)]


@pytest.mark.parametrize("batch_bytes", [60, 1 << 20])
def test_a_ragged_csv_row_that_is_not_utf8_is_rejected_by_itself(
    tmp_path, monkeypatch, batch_bytes
):
    """pyarrow cannot decode such a row for its row handler, and its read stops. The file
    is then read again as Latin-1 (streamed: on from the rows already given) and its bytes
    taken back: the same table, types and rejects as the file with that row in plain
    ASCII, whole or in blocks, with UTF-8 text, a Latin-1 value and a byte-order mark."""
    from prefdata.io import readers

    def csv(name: str, ragged: bytes):
        lines = [b"\xef\xbb\xbfprompt,response,rm"]
        lines += [f"q{i},réponse ✓ 日本 {i},{i}".encode() for i in range(30)]
        lines[5] = b"q4,caf\xe9,4"  # a Latin-1 value: that row rejected
        lines[12] = ragged
        lines[25] = b"q24,\xf0\x9f\x98\x80 \xc3\xa9,24"  # UTF-8 made of C3 and F0 bytes
        path = tmp_path / name
        path.write_bytes(b"\n".join(lines) + b"\n")
        return path

    ragged = csv("in.csv", b"q11,na\xefve,extra,11")
    plain = csv("plain.csv", b"q11,naXve,extra,11")
    raw, bad = read_records(ragged)
    want, want_bad = read_records(plain)
    assert raw.equals(want) and raw.schema.field("rm").type == pa.int64()
    assert raw.column_names == ["prompt", "response", "rm"]
    assert raw["response"][22].as_py() == "\U0001f600 é"  # row 24
    assert [(r["row"], r["field"], r["reason"]) for r in bad.to_pylist()] == [
        (4, "response", "field 'response' is not valid UTF-8 at byte 3"),
        (11, None, "line 13: 4 fields where the header has 3"),
    ]
    assert json.loads(bad["record"][1].as_py()) == {"line": "q11,na\ufffdve,extra,11"}
    assert bad.drop_columns("record").equals(want_bad.drop_columns("record"))
    monkeypatch.setattr(readers, "BATCH_BYTES", batch_bytes)
    batches = streamed_as_whole(ragged, raw, bad)
    assert (len(batches) > 3) == (batch_bytes == 60)
    assert sum(b.rows_in for b in batches) == 30
    assert [int(r) for b in batches for r in b.rows] == [i for i in range(30) if i not in (4, 11)]


def test_rejected_rows_with_bytes_are_written_as_json():
    """polars panics writing binary to JSON (a Rust panic, not an Exception): the records
    of rows holding bytes are written by ``json.dumps``."""
    from prefdata.pipeline import rejects_from

    table = pa.table({"prompt": ["q"], "blob": pa.array([b"caf\xe9"], pa.binary())})
    record = rejects_from(table, "demo", "bad")["record"].to_pylist()
    assert json.loads(record[0]) == {"prompt": "q", "blob": "caf\ufffd"}
