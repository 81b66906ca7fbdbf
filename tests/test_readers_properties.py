"""Properties of the readers and the funnel over generated JSON Lines files: good lines,
garbage, blank lines, wrong kinds and bad rows mixed at random.

- every non-blank line is a row, either read or rejected by ``read``, and the rejects name
  their lines (0-based ``row``, 1-based in the reason);
- reading in streamed batches numbers every row by its line, and one batch gives the rows
  and rejects of reading the whole file (a field's kind is judged within a batch);
- after the layout, every input row is in exactly one place: a pool's candidate, or one
  reject (read or layout), numbered by its line, and each funnel step adds up;
- the executor's ingest of the same file gives the same pools, rejects and funnel;
- a generated CSV file gives the rows an independent reading of its fields owes, each
  ragged or non-UTF-8 row rejected by itself, whole, streamed and ingested.
"""

from __future__ import annotations

import json

import pyarrow.compute as pc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prefdata.execute import Ingest, LocalExecutor
from prefdata.io import readers
from prefdata.io.readers import read_batches, read_pools, read_records

GOOD = st.builds(
    lambda p, r, s: json.dumps({"prompt": f"q{p}", "response": r, "rm": s}),
    st.integers(0, 4),
    st.text(min_size=1, max_size=8),
    st.one_of(st.none(), st.floats(-5, 5)),
)
LINES = st.lists(
    st.one_of(
        GOOD,
        GOOD,
        GOOD,
        st.just(""),  # blank: not a row
        st.just("{not json"),  # read reject
        st.just("[1, 2]"),  # read reject: not an object
        st.just(json.dumps({"prompt": "", "response": "x", "rm": 1.0})),  # layout reject
        st.just(json.dumps({"prompt": "q1", "response": None, "rm": 1.0})),  # layout reject
        st.just(json.dumps({"prompt": "q2", "response": "y", "rm": "NaN?"})),  # kind reject
    ),
    max_size=40,
)
SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def write(tmp_path, lines: list[str]):
    path = tmp_path / "in.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    return path


def rows_of(lines: list[str]) -> list[int]:
    return [i for i, line in enumerate(lines) if line.strip()]


@SETTINGS
@given(lines=LINES, batch=st.sampled_from([40, 200, 1 << 20]))
def test_every_line_is_read_or_rejected_and_batches_agree(tmp_path, monkeypatch, lines, batch):
    path = write(tmp_path, lines)
    raw, bad = read_records(path)
    rows = rows_of(lines)
    assert raw.num_rows + bad.num_rows == len(rows)
    for r in bad.to_pylist():
        assert r["row"] in rows and r["stage"] == "read"
        assert r["reason"].startswith(f"line {r['row'] + 1}: ")
    monkeypatch.setattr(readers, "BATCH_BYTES", batch)
    batches = list(read_batches(path))
    assert sum(b.rows_in for b in batches) == len(rows)
    got_rows = [int(x) for b in batches for x in b.rows]
    # a field's kind is judged within a batch (read_batches' docstring): take its rejects
    streamed_bad = {r["row"] for b in batches for r in b.rejects.to_pylist()}
    assert got_rows == sorted(set(rows) - streamed_bad)  # each row's input line, in order
    if batch == 1 << 20:  # one batch: judged like the whole file
        assert batches[0].table.equals(raw) and batches[0].rejects.equals(bad)


@SETTINGS
@given(lines=LINES)
def test_every_row_ends_in_one_pool_or_one_reject(tmp_path, lines):
    path = write(tmp_path, lines)
    result = read_pools(path, "long", score_cols=["rm"])
    for e in result.funnel.entries:
        assert e.rows_in == e.rows_out + e.rows_rejected
    read, layout = result.funnel.entries
    assert read.rows_in == len(rows_of(lines)) and read.rows_out == layout.rows_in
    candidates = sum(len(c) for c in result.table["candidates"].to_pylist())
    assert candidates == layout.rows_out
    rejected = [r["row"] for r in result.rejects.to_pylist()]
    assert len(rejected) == len(set(rejected)) == read.rows_rejected + layout.rows_rejected
    assert set(rejected) <= set(rows_of(lines))  # numbered by input line
    for r in result.rejects.to_pylist():
        line = json.loads(lines[r["row"]]) if r["stage"] == "layout:long" else None
        if line is not None:  # a layout reject names a field of that very line
            assert r["field"] in line


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(lines=LINES)
def test_the_executor_ingest_gives_what_the_reader_gives(tmp_path_factory, lines):
    tmp = tmp_path_factory.mktemp("ingest")
    path = write(tmp, lines)
    ref = read_pools(path, "long", score_cols=["rm"])
    result = LocalExecutor(tmp / "w").run(
        [], Ingest(path, "long", score_cols=["rm"], partition_bytes=512)
    )
    # several partitions (a file over 512 bytes) give their pools partition by partition
    by_prompt = lambda t: t.take(pc.sort_indices(t["prompt_id"]))  # noqa: E731
    assert by_prompt(result.read()).equals(by_prompt(ref.table))
    key = lambda r: (r["row"], r["stage"])  # noqa: E731
    assert sorted(result.rejects().to_pylist(), key=key) == sorted(ref.rejects.to_pylist(), key=key)
    assert result.funnel.to_list() == ref.funnel.to_list()


# --------------------------------------------------------------------------- CSV

FIELD = st.one_of(
    st.sampled_from(["a", "ok", "q1", "two words", "café", "日本", "a,b", ""]).map(str.encode),
    st.just(b"caf\xe9"),  # Latin-1: not UTF-8
)
NUMBER = st.one_of(
    st.integers(-9, 99).map(lambda i: str(i).encode()),
    st.sampled_from([b"1.5", b"-0.25", b"NA", b""]),
)
CSV_ROWS = st.lists(
    st.one_of(
        st.tuples(FIELD, FIELD, NUMBER),
        st.tuples(FIELD, FIELD, NUMBER),
        st.tuples(FIELD, FIELD, NUMBER, FIELD),  # a field too many
        st.tuples(FIELD.filter(bool)),  # too few (an empty line is no row at all)
    ),
    max_size=40,
)


def csv_line(fields: tuple[bytes, ...]) -> bytes:
    return b",".join(b'"' + f + b'"' if b"," in f else f for f in fields)


def expected_csv(rows: list[tuple[bytes, ...]]) -> tuple[list[tuple], dict[int, str]]:
    """What a reader owes, worked out from the rows themselves: the (prompt, response,
    rm) of each row kept, and the start of each rejected row's reason."""
    kept, bad = [], {}
    for i, fields in enumerate(rows):
        if len(fields) != 3:
            bad[i] = f"line {i + 2}: {len(fields)} fields where the header has 3"
            continue
        try:
            p, r = (f.decode() for f in fields[:2])
        except UnicodeDecodeError:
            name = "prompt" if b"\xe9" in fields[0] and b"caf\xe9" == fields[0] else "response"
            bad[i] = f"field {name!r} is not valid UTF-8"
            continue
        rm = fields[2].decode()
        kept.append((p, r, None if rm in ("", "NA") else float(rm)))
    return kept, bad


@SETTINGS
@given(rows=CSV_ROWS, batch=st.sampled_from([60, 200, 1 << 20]))
def test_a_csv_file_gives_its_good_rows_and_rejects_each_bad_one(
    tmp_path, monkeypatch, rows, batch
):
    """Ragged rows, Latin-1 bytes (in a ragged row too: the read starts again as
    Latin-1) and a number column whose later blocks hold decimals or NA (retyped): every
    row is kept as written or rejected by itself with its reason, whole or streamed, and
    the executor's ingest gives the pools of a whole read."""
    path = tmp_path / "in.csv"
    path.write_bytes(b"prompt,response,rm\n" + b"".join(csv_line(r) + b"\n" for r in rows))
    monkeypatch.setattr(readers, "BATCH_BYTES", batch)
    raw, bad = read_records(path)
    want, want_bad = expected_csv(rows)
    rm = [None if v is None else float(v) for v in raw["rm"].to_pylist()] if rows else []
    got = list(zip(raw["prompt"].to_pylist(), raw["response"].to_pylist(), rm, strict=True))
    got = [(p or "", r or "", v) for p, r, v in got]  # an empty text field may be null
    assert got == want
    assert {r["row"]: r["reason"] for r in bad.to_pylist()}.keys() == want_bad.keys()
    for r in bad.to_pylist():
        assert r["reason"].startswith(want_bad[r["row"]]), (r, want_bad[r["row"]])
    batches = list(read_batches(path))
    assert sum(b.rows_in for b in batches) == len(rows)
    streamed = [(p or "", r or "") for b in batches for p, r in zip(
        b.table["prompt"].to_pylist(), b.table["response"].to_pylist(), strict=True)]  # fmt: skip
    assert streamed == [(p, r) for p, r, _ in want]
    assert sorted(r["row"] for b in batches for r in b.rejects.to_pylist()) == sorted(want_bad)
    ref = read_pools(path, "long", score_cols=["rm"])
    result = LocalExecutor(tmp_path / "w").run(
        [], Ingest(path, "long", score_cols=["rm"], partition_bytes=512)
    )
    by_prompt = lambda t: t.take(pc.sort_indices(t["prompt_id"]))  # noqa: E731
    assert by_prompt(result.read()).equals(by_prompt(ref.table))
    assert result.funnel.to_list() == ref.funnel.to_list()
