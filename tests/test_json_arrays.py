"""A large ``.json`` array streams in pieces of whole items (prefdata.io.json_arrays):
the pieces hold exactly the array's items, the streamed batches give the rows and rejects
of reading the file whole, and a broken file fails at the same place either way."""

from __future__ import annotations

import gzip
import io
import json

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prefdata.execute import Ingest, LocalExecutor
from prefdata.io import readers
from prefdata.io.json_arrays import ArrayError, parsed_pieces
from prefdata.io.readers import read_batches, read_pools, read_records

# strings full of what the scan must get right: quotes, backslashes (runs of them),
# brackets and commas inside strings, non-ASCII text
TRICKY = st.text(alphabet=st.sampled_from(list('a,[]{}"\\: é中\n\t')), max_size=12)
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-5, 5), TRICKY),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(TRICKY, inner, max_size=3)
    ),
    max_leaves=8,
)
ITEMS = st.lists(st.one_of(st.dictionaries(TRICKY, JSON_VALUES, max_size=4), JSON_VALUES))
SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@SETTINGS
@given(
    items=ITEMS,
    indent=st.sampled_from([None, 0, 2]),
    ascii_=st.booleans(),
    size=st.integers(1, 64),
)
def test_pieces_hold_exactly_the_items(items, indent, ascii_, size):
    text = json.dumps(items, indent=indent, ensure_ascii=ascii_).encode()
    parse = lambda p: (p, json.loads(b"[" + p.text + b"]"))  # noqa: E731
    parsed = list(parsed_pieces(io.BytesIO(text), size, parse))
    assert [x for _, got in parsed for x in got] == items
    pieces = [p for p, _ in parsed]
    # memory stays a few blocks: a guess is taken from one block, the exact scan's cut
    # from four at most (items that are not objects give no guess)
    longest = max((len(json.dumps(x, indent=indent)) for x in items), default=0)
    assert all(len(p.text) <= 5 * size + 2 * longest + 16 for p in pieces)
    assert all(text[p.offset : p.offset + len(p.text)] == p.text for p in pieces)
    for p in pieces:  # each piece says where it starts
        assert p.line == text.count(b"\n", 0, p.offset) + 1
        assert p.column == p.offset - text.rfind(b"\n", 0, p.offset)


def long_items(n: int) -> list:
    out = []
    for i in range(n):
        if i % 29 == 5:
            out.append([1, 2])  # not an object: rejected by item number
        elif i % 31 == 7:
            out.append({"prompt": "", "response": f"r{i}", "rm": i})  # layout reject
        else:
            text = f'q{i % 11} says "hi, [there]" \\ é'
            out.append({"prompt": text, "response": f"r{i},]}}", "rm": i * 0.5})
    return out


@pytest.mark.parametrize("gz", [False, True])
def test_a_large_array_streams_in_batches_as_read_whole(tmp_path, monkeypatch, gz):
    path = tmp_path / ("in.json.gz" if gz else "in.json")
    text = json.dumps(long_items(200), indent=1).encode()
    path.write_bytes(gzip.compress(text) if gz else text)
    raw, bad = read_records(path)
    monkeypatch.setattr(readers, "BATCH_BYTES", 700)
    batches = list(read_batches(path))
    assert len(batches) > 10
    assert pa.concat_tables([b.table for b in batches]).equals(raw)
    assert pa.concat_tables([b.rejects for b in batches]).equals(bad)
    assert sum(b.rows_in for b in batches) == 200
    assert bad["reason"].to_pylist()[0] == "item 5: JSON array, not an object"
    # each batch holds about BATCH_BYTES of text: the file is never read whole
    assert max(b.table.num_rows for b in batches) < 20


def test_the_ingest_of_a_streamed_array_gives_the_pools_read_whole(tmp_path, monkeypatch):
    path = tmp_path / "in.json"
    path.write_text(json.dumps(long_items(150)))
    ref = read_pools(path, "long", score_cols=["rm"])
    monkeypatch.setattr(readers, "BATCH_BYTES", 500)
    assert len(list(read_batches(path))) > 5
    source = Ingest(path, "long", score_cols=["rm"], partition_bytes=2000)
    result = LocalExecutor(tmp_path / "work").run([], source)
    plan = json.loads((tmp_path / "work" / "ingest" / "manifest.json").read_text())
    assert plan["partitions"] > 1
    by_prompt = lambda t: sorted(t.to_pylist(), key=lambda r: r["prompt_id"])  # noqa: E731
    assert by_prompt(result.read()) == by_prompt(ref.table)
    by_row = lambda t: sorted(t.to_pylist(), key=lambda r: (r["row"], r["stage"]))  # noqa: E731
    assert by_row(result.rejects()) == by_row(ref.rejects)
    assert result.funnel.to_list()[:2] == ref.funnel.to_list()


BASE = json.dumps([{"prompt": f"q{i}", "response": "a"} for i in range(40)], indent=1)
BROKEN = {
    "syntax": BASE.replace('"q20"', '"q20" 1').encode(),
    "leading comma": ("[ ," + BASE[1:]).encode(),
    "double comma": BASE.replace('"a"\n },', '"a"\n },,', 1).encode(),
    "trailing comma": (BASE[:-2] + ",\n]").encode(),
    "latin-1": BASE.replace("q30", "q\xe930").encode("latin-1"),
    "text after": (BASE + "\n\n x").encode(),
    "byte-order mark, then a syntax error": b"\xef\xbb\xbf" + BASE.replace('"q9"', "q9").encode(),
    # the first error is named: JSON before UTF-8, and a lost quote (every string after it
    # turned inside out for the scan) before the end the scan then misses
    "syntax error, then a Latin-1 byte": BASE.replace('"q3"', '"q3" x')
    .replace("q30", "q\xe930")
    .encode("latin-1"),
    "a quote lost": BASE.replace('"q12"', 'q12"', 1).encode(),
}


@pytest.mark.parametrize("name", list(BROKEN))
def test_a_broken_array_fails_at_the_same_place_streamed_or_whole(tmp_path, monkeypatch, name):
    path = tmp_path / "in.json"
    path.write_bytes(BROKEN[name])
    errors = []
    for size in (64 << 20, 300):
        monkeypatch.setattr(readers, "BATCH_BYTES", size)
        with pytest.raises(ValueError) as e:
            list(read_batches(path))
        errors.append(str(e.value))
    assert errors[0] == errors[1]
    assert errors[0].startswith(f"{path}: not valid ")
    assert " at line " in errors[0] and "(byte " in errors[0]


def test_where_a_broken_array_fails(tmp_path, monkeypatch):
    path = tmp_path / "in.json"
    path.write_bytes(BROKEN["syntax"])
    with pytest.raises(ValueError, match=r"Expecting ',' delimiter at line 83 column 19 \(byte"):
        list(read_batches(path))
    monkeypatch.setattr(readers, "BATCH_BYTES", 300)
    path.write_bytes(BASE[:-1].encode())  # cut short
    with pytest.raises(ValueError, match=r"the file ends \(byte 1751\) before the array's"):
        list(read_batches(path))
    path.write_bytes(b"[" + b" " * 1000 + b"]")  # an empty array: no rows, no error
    assert sum(b.table.num_rows for b in read_batches(path)) == 0


def test_a_byte_order_mark_before_an_array_is_skipped(tmp_path, monkeypatch):
    path = tmp_path / "in.json"
    path.write_bytes(b"\xef\xbb\xbf" + BASE.encode())
    raw, bad = read_records(path)
    assert raw.num_rows == 40 and bad.num_rows == 0
    monkeypatch.setattr(readers, "BATCH_BYTES", 300)
    assert pa.concat_tables([b.table for b in read_batches(path)]).equals(raw)


def test_text_before_the_array_is_an_error():
    with pytest.raises(ArrayError, match="does not start with a JSON array"):
        list(parsed_pieces(io.BytesIO(b'x [{"a": 1}]'), 4, lambda p: p))


def test_read_records_joins_the_pieces_of_a_very_large_array(tmp_path, monkeypatch):
    """Above WHOLE_JSON_BYTES even a whole read takes the pieces (json.loads would hold
    every item as Python objects); where their column types do not join (a field holds
    numbers in one piece and strings in another), it reads the file as a whole, which
    rejects the minority rows."""
    path = tmp_path / "in.json"
    path.write_text(json.dumps(long_items(200), indent=1))
    whole, whole_bad = read_records(path)
    monkeypatch.setattr(readers, "WHOLE_JSON_BYTES", 100)
    monkeypatch.setattr(readers, "BATCH_BYTES", 700)
    calls, parse = [], readers._json_items
    monkeypatch.setattr(readers, "_json_items", lambda *a: calls.append(1) or parse(*a))
    table, bad = read_records(path)
    assert len(calls) > 10  # read in pieces
    assert table.equals(whole) and bad.equals(whole_bad)
    mixed = [{"prompt": "q", "response": "r", "rm": i if i < 100 else f"s{i}"} for i in range(200)]
    path.write_text(json.dumps(mixed, indent=1))
    table, bad = read_records(path)
    assert table["rm"].type == pa.int64() and bad.num_rows == 100
    assert bad["reason"][0].as_py().startswith("item 100: ")
