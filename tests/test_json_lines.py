"""JSON Lines and JSON arrays read column-wise by Arrow (prefdata/io/json_lines.py) give
exactly what reading them record by record gives, and what Arrow might read differently is
read record by record."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prefdata.io import readers
from prefdata.io.json_lines import columnar_array, columnar_lines
from prefdata.io.readers import read_records


def as_text(table: pa.Table) -> str:
    """The values, NaN included (``json.dumps`` writes it)."""
    return json.dumps(table.to_pylist(), default=str)


def line_by_line(monkeypatch, path):
    with monkeypatch.context() as m:
        m.setattr(readers, "columnar_lines", lambda lines: None)
        return read_records(path)


def item_by_item(monkeypatch, path):
    with monkeypatch.context() as m:
        m.setattr(readers, "columnar_array", lambda text: None)
        return read_records(path)


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_infinity=False),
    st.text(max_size=4),
    st.sampled_from(["2020-01-01", "2021-03-04 05:06:07", "\U0001f600", "é"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from("xyz"), inner, max_size=3)
    ),
    max_leaves=6,
)
ANY_RECORD = st.dictionaries(st.sampled_from("abcd"), VALUES, max_size=4)
# records whose fields keep one type, as most files' do (Arrow reads these)
TYPED_RECORD = st.fixed_dictionaries(
    {},
    optional={
        "prompt": st.text(max_size=6),
        "n": st.integers(-(2**40), 2**40),
        "big": st.integers(-(2**66), 2**66),  # sometimes beyond int64
        "score": st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False)),
        "messages": st.lists(
            st.fixed_dictionaries(
                {"role": st.sampled_from(["user", "assistant"]), "content": st.text(max_size=5)},
                optional={"name": st.text(max_size=2)},
            ),
            max_size=3,
        ),
        "when": st.sampled_from(["2020-01-01", "2024-12-31 23:59:59"]),
        "ok": st.booleans(),
    },
)
LINE = st.one_of(
    st.builds(json.dumps, TYPED_RECORD),
    st.builds(lambda r: json.dumps(r, ensure_ascii=False), TYPED_RECORD),
    st.builds(json.dumps, ANY_RECORD),
    st.sampled_from(["", "{not json", "[1]", '{"a": 1, "a": 2}', '{"a": "\\ud800"}']),
    st.sampled_from(["null", "3", '"x"', "true", " {}", "{}", "{", '{"a": null}']),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(lines=st.lists(LINE, min_size=1, max_size=12))
def test_columnar_reading_gives_the_line_by_line_table_and_rejects(tmp_path, monkeypatch, lines):
    path = tmp_path / "in.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    raw, rejects = read_records(path)
    want_raw, want_rejects = line_by_line(monkeypatch, path)
    assert raw.schema == want_raw.schema
    assert as_text(raw) == as_text(want_raw)  # Table.equals takes NaN for unequal to itself
    assert rejects.equals(want_rejects)


def test_plain_files_are_read_column_wise_with_dates_as_strings():
    lines = [
        json.dumps(
            {
                "prompt": f"q{i}",
                "messages": [{"role": "user", "content": "hi"}],
                "score": i / 3,
                "n": i,
                "created": "2024-05-01 12:00:00",
            }
        ).encode()
        + b"\n"
        for i in range(50)
    ]
    table = columnar_lines(lines)
    assert table is not None and table.num_rows == 50
    assert table.schema.field("created").type == pa.string()
    assert table["created"][0].as_py() == "2024-05-01 12:00:00"


@pytest.mark.parametrize(
    "data",
    [
        b'{"a": 1}\n\n{"a": 2}\n',  # a blank line: rows are numbered by line
        b'{"a": 1}\n   \n{"a": 2}\n',
        b'{"a": 1}\n\xef\xbb\xbf{"a": 2}\n',  # a byte-order mark within the file
        b'{"a": 1}\n{"a": 10000000000000000000}\n',  # beyond int64: Arrow reads a double
        b'{"a": "x\xff"}\n',  # invalid UTF-8, which Arrow lets into the string
        b'{"x": {"a\xbfb": 1}}\n',  # ... and into a key, at any level
        b'{"x": [{"a\xbfb": 1}]}\n',
        b'{"a": [{"t": "2020-01-01"}]}\n',  # a nested date Arrow reads as a timestamp
        b'{"a": "\\ud800"}\n',  # a lone surrogate
        b'{"a": "x"}\n{"a": 1}\n',  # a field whose type changes
        b'{"a": 1, "a": 2}\n',  # a key given twice
        b"[1, 2]\n",  # not an object
        b"{}\n{}\n",  # no fields at all
        b"null\n",  # not an object (Arrow crashes on this file)
        b'{"a": 1}\nnull\n',  # Arrow: a row of nulls
        b' {"a": 1}\n',  # not starting with "{": read line by line to be sure
    ],
)
def test_what_arrow_might_read_differently_is_read_line_by_line(data):
    assert columnar_lines(data.splitlines(keepends=True)) is None


def test_a_nested_value_that_fits_only_alone_is_rejected_by_its_line(tmp_path):
    """``""`` reads as an empty list by itself (a string is a sequence), not beside
    ``[]``: the rarer row is rejected, naming its line and field."""
    path = tmp_path / "in.jsonl"
    path.write_text('{"a": {"x": []}}\n{"a": {"x": []}}\n{"a": {"x": ""}}\n')
    raw, rejects = read_records(path)
    assert raw.num_rows == 2
    [bad] = rejects.to_pylist()
    assert (bad["row"], bad["field"]) == (2, "a")
    assert bad["reason"].startswith("line 3: field 'a' does not fit the type of other rows")


@settings(max_examples=100, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 30), max_size=40),
    last_newline=st.booleans(),
    batch_bytes=st.sampled_from([1, 7, 50, 10**6]),
    batch_rows=st.sampled_from([1, 3, 1000]),
)
def test_plain_files_are_cut_into_the_chunks_of_the_line_by_line_loop(
    tmp_path_factory, lengths, last_newline, batch_bytes, batch_rows
):
    """A plain file read by ``readlines`` gives the chunks a gzip file, read line by line,
    gives (the same rule: a chunk ends at the line that brings it to the byte or row
    limit)."""
    import gzip

    data = b"".join(b"x" * n + b"\n" for n in lengths)
    if data and not last_newline:
        data = data[:-1]
    folder = tmp_path_factory.mktemp("chunks")
    (folder / "a.jsonl").write_bytes(data)
    (folder / "a.jsonl.gz").write_bytes(gzip.compress(data))
    with pytest.MonkeyPatch.context() as m:
        m.setattr(readers, "BATCH_BYTES", batch_bytes)
        m.setattr(readers, "BATCH_ROWS", batch_rows)
        plain = list(readers._line_chunks(folder / "a.jsonl"))
        by_line = list(readers._line_chunks(folder / "a.jsonl.gz"))
    assert plain == by_line
    assert b"".join(line for chunk in plain for line in chunk) == data
    # the rule, one line at a time: a chunk ends at the line reaching either limit
    want, chunk, size = [], [], 0
    for line in data.splitlines(keepends=True):
        chunk.append(line)
        size += len(line)
        if size >= batch_bytes or len(chunk) >= batch_rows:
            want, chunk, size = [*want, chunk], [], 0
    assert plain == want + ([chunk] if chunk else [])


ITEM = st.one_of(
    st.builds(json.dumps, TYPED_RECORD),
    st.builds(lambda r: json.dumps(r, indent=2, ensure_ascii=False), TYPED_RECORD),
    st.builds(json.dumps, ANY_RECORD),
    st.sampled_from(["null", "3", '"x"', "[1]", "{}", '{"a": null}', '{"a": 1, "a": 2}']),
    st.sampled_from(['{"a": "\\ud800"}', '{"a": "\\ud83d\\ude00"}', '{"when": "2020-01-01"}']),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(items=st.lists(ITEM, max_size=10), gz=st.booleans())
def test_columnar_arrays_give_the_item_by_item_table_and_rejects(tmp_path, monkeypatch, items, gz):
    import gzip

    text = ("[\n" + ",\n".join(items) + "\n]\n").encode()
    path = tmp_path / ("in.json.gz" if gz else "in.json")
    path.write_bytes(gzip.compress(text) if gz else text)
    try:
        want_raw, want_rejects = item_by_item(monkeypatch, path)
    except ValueError as e:  # no object at all: both say so
        with pytest.raises(type(e)):
            read_records(path)
        return
    raw, rejects = read_records(path)
    assert raw.schema == want_raw.schema
    assert as_text(raw) == as_text(want_raw)
    assert rejects.equals(want_rejects)


def test_arrays_are_read_column_wise_with_dates_as_strings():
    items = [
        {"prompt": f"q{i}", "messages": [{"role": "user", "content": "hi"}], "score": i / 3,
         "created": "2024-05-01 12:00:00"}
        for i in range(50)
    ]  # fmt: skip
    table = columnar_array(json.dumps(items, indent=4).encode())
    assert table is not None and table.num_rows == 50
    assert table.schema.field("created").type == pa.string()
    assert table.to_pylist() == items


@pytest.mark.parametrize(
    "data",
    [
        b"[]",  # no item
        b"[{}, {}]",  # no fields at all
        b'[{"a": 1}, null]',  # an item that is not an object
        b'[{"a": 1}, 2]',
        b"[1, 2]",
        b'\xef\xbb\xbf[{"a": 1}]',  # a byte-order mark
        b'[{"a": 1}, {"a": 10000000000000000000}]',  # beyond int64
        b'[{"a": [{"t": "2020-01-01"}]}]',  # a nested date
        b'[{"a": "x\xff"}]',  # invalid UTF-8
        b'[{"a\xbfb": 1}]',  # in a key
        b'[{"x": [{"a\xbfb": 1}]}]',
        b'[{"a": 1}] [{"a": 2}]',  # not one array
        b'{"a": 1}',  # not an array
    ],
)
def test_what_arrow_might_read_differently_is_read_item_by_item(data):
    assert columnar_array(data) is None


def test_a_key_of_invalid_utf8_rejects_its_line_on_both_paths(tmp_path, monkeypatch):
    """Arrow takes a key's bytes as they are (the table's field name cannot be read back
    in Python); the line reader rejects the line, naming it."""
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"x": {"a": 1}}\n{"x": {"a\xbfb": 2}}\n{"x": {"a": 3}}\n')
    raw, rejects = read_records(path)
    want_raw, want_rejects = line_by_line(monkeypatch, path)
    assert raw.equals(want_raw) and rejects.equals(want_rejects)
    assert rejects["row"].to_pylist() == [1] and raw.num_rows == 2
