"""split_pairs (columnar HH splitting) agrees with split_pair on every row, errors included."""

from __future__ import annotations

import gzip
import json
import sys
from unittest import mock

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prefdata.io import hh
from prefdata.io.hh import split_pair, split_pairs
from prefdata.schema import MESSAGES_TYPE


def check(chosen: pa.Array, rejected: pa.Array) -> hh.SplitPairs:
    """split_pairs(chosen, rejected) matches split_pair row by row, and only the rows it
    refuses went through split_pair; returns the result."""
    with mock.patch.object(hh, "_split_pair", wraps=hh._split_pair) as spy:
        out = split_pairs(chosen, rejected)
    assert out.prompt.type == MESSAGES_TYPE
    assert out.chosen.type == out.rejected.type == pa.string()
    assert len(out.prompt) == len(out.chosen) == len(out.rejected) == len(chosen)
    for i, (c, r) in enumerate(zip(chosen.to_pylist(), rejected.to_pylist(), strict=True)):
        try:
            want = split_pair(c, r)
        except ValueError as e:
            assert out.errors.get(i) == str(e), (i, c, r)
            assert not out.prompt[i].is_valid
            assert not out.chosen[i].is_valid and not out.rejected[i].is_valid
        else:
            assert i not in out.errors, (i, c, r, out.errors[i])
            got = (out.prompt[i].as_py(), out.chosen[i].as_py(), out.rejected[i].as_py())
            assert got == want, (i, c, r)
    assert set(out.errors) <= set(range(len(chosen)))
    # the columnar pass refuses what split_pair refuses or has to join: only those go there
    assert spy.call_count == len(out.errors) + len(out.joined)
    return out


def test_python_whitespace_table_is_exactly_str_isspace():
    every = "".join(chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace())
    assert hh._PY_WHITESPACE == every


# --- property test -------------------------------------------------------------------------

TOKENS = [
    "\n\nHuman:",
    "\n\nAssistant:",
    "Human:",
    "Assistant:",
    "Human: ",
    "\n",
    "\n\n",
    " ",
    "\t",
    "\u00a0",
    "\u2028",
    "\x1c",
    "\x1f",
    "\x85",
    "\u200b",
    "\x00",
    "a",
    "b",
    "é",
    "猫",
]
WS = [" ", "\n", "\t", "\u00a0", "\u2028", "\x1c", "\x85", "\u3000"]  # all str.isspace()

noise = st.lists(st.sampled_from(TOKENS), max_size=12).map("".join)
pad = st.lists(st.sampled_from(WS), max_size=3).map("".join)
word = st.lists(st.sampled_from(["a", "b", "é", "猫", " ", "a\n", "Human:", "x\x85"]), max_size=4)


@st.composite
def content(draw) -> str:
    """Padded text, occasionally blank."""
    first = "" if rarely(draw) else draw(st.sampled_from(["a", "é", "猫", "\u200b", "Human:"]))
    return draw(pad) + first + "".join(draw(word)) + draw(pad)


def rarely(draw) -> bool:
    """True one time in eight (hypothesis favours the simplest value of a single draw)."""
    return draw(st.booleans()) and draw(st.booleans()) and draw(st.booleans())


@st.composite
def structured_pair(draw) -> tuple[str, str]:
    """A mostly well-formed pair: shared prompt (padded differently on each side), then a
    final assistant turn each; now and then a defect (role order, a differing or missing
    turn, text before the first turn, a spliced-in token)."""
    n_prompt = 2 * draw(st.integers(0, 2)) + 1 - rarely(draw)
    roles = [("Human" if i % 2 == 0 else "Assistant") for i in range(n_prompt)]
    if roles and rarely(draw):
        k = draw(st.integers(0, len(roles) - 1))
        roles[k] = "Assistant" if roles[k] == "Human" else "Human"
    contents = [draw(content()) for _ in roles]

    def render(side_contents: list[str]) -> str:
        head = draw(st.sampled_from([" \n", "x"] if rarely(draw) else ["\n\n", ""]))
        body = "\n\n".join(f"{role}:{c}" for role, c in zip(roles, side_contents, strict=True))
        return head + body + "\n\nAssistant:" + draw(content())

    def other_side() -> list[str]:
        same = [c.strip() for c in contents]
        if same and rarely(draw):
            k = draw(st.integers(0, len(same) - 1))
            same[k] = draw(content())
        return [draw(pad) + c + draw(pad) for c in same]

    chosen, rejected = render(contents), render(other_side())
    if rarely(draw):
        k = draw(st.integers(0, len(chosen)))
        chosen = chosen[:k] + draw(st.sampled_from(TOKENS)) + chosen[k:]
    return chosen, rejected


cell = st.one_of(noise, st.none())
pair = st.one_of(structured_pair(), structured_pair(), structured_pair(), st.tuples(cell, cell))


@pytest.mark.slow
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pairs=st.lists(pair, max_size=12),
    kind=st.sampled_from([pa.string(), pa.large_string(), pa.string_view()]),
    skip=st.integers(0, 2),
)
def test_split_pairs_matches_split_pair(pairs, kind, skip):
    chosen = pa.array([None] * skip + [c for c, _ in pairs], kind)[skip:]  # a sliced array
    rejected = pa.array([r for _, r in pairs], kind)
    check(chosen, rejected)


# --- real data -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hh_rows(shared_data) -> tuple[list, list]:
    path = shared_data / "hh_rlhf_harmless_test.jsonl.gz"  # the fixture checked it is there
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    return [r["chosen"] for r in rows], [r["rejected"] for r in rows]


@pytest.mark.shared_data
def test_real_hh_rows_match_split_pair_and_stay_columnar(hh_rows):
    chosen, rejected = hh_rows
    out = check(pa.array(chosen), pa.array(rejected))  # only refused rows via split_pair
    assert len(chosen) == 2312
    # every row splits; 9 have a second "Assistant:" marker inside an assistant turn
    assert out.errors == {} and len(out.joined) == 9
    for i in out.joined:
        texts = [m["content"] for m in out.prompt[i].as_py()] + [
            out.chosen[i].as_py(),
            out.rejected[i].as_py(),
        ]
        assert any("\n\nAssistant:" in t for t in texts)


# --- hand-written edge cases ------------------------------------------------------------------

OK = "\n\nHuman: Q\n\nAssistant: A"


def test_nulls_and_empty_strings():
    out = check(pa.array([None, OK, "", OK, None]), pa.array([OK, None, OK, "", None]))
    assert out.errors == {
        0: "chosen: not a string (NoneType)",
        1: "rejected: not a string (NoneType)",
        2: "chosen: no '\\n\\nHuman:' or '\\n\\nAssistant:' turn found",
        3: "rejected: no '\\n\\nHuman:' or '\\n\\nAssistant:' turn found",
        4: "chosen: not a string (NoneType)",
    }


def test_null_typed_and_non_string_columns():
    out = check(pa.nulls(2), pa.array([OK, OK]))
    assert out.errors == {i: "chosen: not a string (NoneType)" for i in range(2)}
    out = check(pa.array([OK, None]), pa.array([1, 2]))
    assert out.errors == {0: "rejected: not a string (int)", 1: "chosen: not a string (NoneType)"}
    out = check(pa.array([b"x"], pa.binary()), pa.array([OK]))
    assert out.errors == {0: "chosen: not a string (bytes)"}


def test_empty_columns_and_length_mismatch():
    out = check(pa.array([], pa.string()), pa.array([], pa.string()))
    assert out.errors == {} and len(out.prompt) == 0
    check(pa.array(["", ""]), pa.array(["", ""]))  # no data bytes at all
    check(pa.array([None, None], pa.string()), pa.array(["", OK]))
    with pytest.raises(ValueError, match="rows"):
        split_pairs(pa.array([OK]), pa.array([OK, OK]))


def test_nul_and_odd_bytes_are_plain_text():
    out = check(pa.array([OK + "\x00!", OK]), pa.array(["Human: Q \n\nAssistant:", OK]))
    assert out.errors == {}
    assert out.chosen.to_pylist() == ["A\x00!", "A"]
    assert out.rejected.to_pylist() == ["", "A"]


def test_rows_the_columnar_pass_leaves_out_are_filled_in_by_split_pair(monkeypatch):
    turns = hh._turns

    def distrust_first_row(text):
        t = turns(text)
        t.ok[0] = False
        return t

    monkeypatch.setattr(hh, "_turns", distrust_first_row)
    chosen = pa.array([OK + "\n\nHuman: more\n\nAssistant: B", None, OK])
    rejected = pa.array([OK + "\n\nHuman: more\n\nAssistant: C", OK, OK])
    out = split_pairs(chosen, rejected)
    assert out.prompt.to_pylist()[0] == split_pair(chosen[0].as_py(), rejected[0].as_py())[0]
    assert out.chosen.to_pylist() == ["B", None, "A"]
    assert out.rejected.to_pylist() == ["C", None, "A"]
    assert out.errors == {1: "chosen: not a string (NoneType)"}
    assert out.prompt.type == MESSAGES_TYPE and out.chosen.type == pa.string()


def test_chunked_and_dictionary_columns():
    chosen = pa.chunked_array([[OK], ["\n\nHuman: Q\n\nAssistant: B\n\nHuman: x"]])
    rejected = pa.array([OK, OK]).dictionary_encode()
    out = split_pairs(chosen, rejected)
    assert out.chosen.to_pylist() == ["A", None]
    assert out.errors == {1: "chosen: last turn is not an Assistant turn"}


def test_python_strip_not_arrow_whitespace():
    # \x1c and \x85 are whitespace to str.strip(), \u200b is not.
    c = "\n\nHuman:\x1c Q\x85\n\nAssistant: \u200bA\u2028"
    r = "\n\nHuman: Q \n\nAssistant:\x1f"
    out = check(pa.array([c, "\n\nHuman:\x1c\x85\n\nAssistant: A"]), pa.array([r, r]))
    assert out.prompt[0].as_py() == [{"role": "user", "content": "Q"}]
    assert out.chosen[0].as_py() == "\u200bA" and out.rejected[0].as_py() == ""
    assert out.errors == {1: "chosen: turn 0 (user) is empty"}


def test_null_spanning_bytes_and_sliced_arrays():
    """A null may still span bytes (valid Arrow); a slice starts inside the buffers."""
    hidden = "Human: x\n\nAssistant: y"
    data = (hidden + OK).encode()
    offsets = pa.array([0, len(hidden), len(data)], pa.int32()).buffers()[1]
    validity = pa.array([False, True]).buffers()[1]
    chosen = pa.StringArray.from_buffers(2, offsets, pa.py_buffer(data), validity)
    assert chosen.to_pylist() == [None, OK]
    out = check(chosen, pa.array([OK, OK]))
    assert out.errors == {0: "chosen: not a string (NoneType)"}
    out = check(pa.array(["x", OK, "\n\nHuman: Q\n\nAssistant: B"])[1:], pa.array([OK, OK]))
    assert out.chosen.to_pylist() == ["A", "B"]
