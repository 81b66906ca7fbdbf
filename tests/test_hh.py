"""HH-RLHF transcript parsing: split cleanly or refuse with a reason, never mis-split."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from prefdata.io.hh import parse_transcript, split_pair

U = "user"
A = "assistant"


def roles(text):
    return [(m["role"], m["content"]) for m in parse_transcript(text)]


def test_parse_clean_transcript():
    text = "\n\nHuman: Hi there\n\nAssistant:  Hello!\n\nHuman: Bye\n\nAssistant: See you."
    assert roles(text) == [(U, "Hi there"), (A, "Hello!"), (U, "Bye"), (A, "See you.")]
    assert roles("Human: no blank line\n\nAssistant: ok") == [(U, "no blank line"), (A, "ok")]


def test_inline_marker_without_blank_line_is_content():
    text = "\n\nHuman: Q\n\nAssistant: Sure.  Human: fake turn? Yes."
    assert roles(text) == [(U, "Q"), (A, "Sure.  Human: fake turn? Yes.")]


def test_multiline_content_is_kept():
    text = "\n\nHuman: List:\n1. a\n2. b\n\nAssistant: Done\n\nwith gaps"
    assert roles(text) == [(U, "List:\n1. a\n2. b"), (A, "Done\n\nwith gaps")]


def test_empty_final_assistant_turn_is_an_empty_response():
    assert roles("\n\nHuman: Q\n\nAssistant: ") == [(U, "Q"), (A, "")]


@pytest.mark.parametrize(
    "text,reason",
    [
        ("\n\nAssistant: hi\n\nHuman: q", "does not start with a Human turn"),
        ("Preamble\n\nHuman: a\n\nAssistant: b", "text before the first turn"),
        ("just text", "text before the first turn"),
        ("", "no '\\n\\nHuman:'"),
        ("\n\nHuman:   \n\nAssistant: b", "turn 0 (user) is empty"),
        (None, "not a string"),
    ],
)
def test_parse_refuses_unclean(text, reason):
    with pytest.raises(ValueError) as err:
        parse_transcript(text)
    assert reason in str(err.value)


@pytest.mark.parametrize(
    "text,want",
    [
        ("\n\nHuman: a\n\nAssistant: b\n\nAssistant:  c ", [(U, "a"), (A, "b\n\nAssistant:  c")]),
        ("\n\nHuman: a\n\nHuman: b", [(U, "a\n\nHuman: b")]),
        (
            "Human: q\n\nAssistant: x\n\nAssistant: y\n\nAssistant: z\n\nHuman: r",
            [(U, "q"), (A, "x\n\nAssistant: y\n\nAssistant: z"), (U, "r")],
        ),
    ],
)
def test_a_repeated_role_joins_the_turn_before_as_written(text, want):
    """HH has assistant turns where the model wrote "\\n\\nAssistant:" in its answer: the
    text stays one turn (TRL's HH split keeps these rows too) instead of a rejected row."""
    assert [(m["role"], m["content"]) for m in parse_transcript(text)] == want


def test_split_pair():
    c = "\n\nHuman: Q1\n\nAssistant: A1\n\nHuman: Q2\n\nAssistant: good"
    r = "\n\nHuman: Q1\n\nAssistant: A1\n\nHuman: Q2\n\nAssistant: bad"
    prompt, chosen, rejected = split_pair(c, r)
    assert [m["role"] for m in prompt] == [U, A, U]
    assert (chosen, rejected) == ("good", "bad")


@pytest.mark.parametrize(
    "chosen,rejected,reason",
    [
        (
            "\n\nHuman: Q\n\nAssistant: a",
            "\n\nHuman: Other\n\nAssistant: b",
            "differ before the final assistant turn (turn 0)",
        ),
        (
            "\n\nHuman: Q\n\nAssistant: a\n\nHuman: more",
            "\n\nHuman: Q\n\nAssistant: b",
            "chosen: last turn is not an Assistant turn",
        ),
        (
            "\n\nHuman: Q\n\nAssistant: a",
            "\n\nHuman: Q\n\nAssistant: x\n\nHuman: y\n\nAssistant: b",
            "differ before the final assistant turn",
        ),
        (
            "\n\nHuman: Q\n\nAssistant: a\n\nAssistant: c\n\nHuman: R\n\nAssistant: x",
            "\n\nHuman: Q\n\nAssistant: a\n\nHuman: R\n\nAssistant: y",
            "chosen and rejected differ before the final assistant turn (turn 1)",
        ),
    ],
)
def test_split_pair_refuses(chosen, rejected, reason):
    with pytest.raises(ValueError) as err:
        split_pair(chosen, rejected)
    assert reason in str(err.value)


def test_hh_layout_records_joined_turns_in_the_pool_metadata():
    from prefdata.io.readers import read_pools

    joined = "\n\nHuman: Q\n\nAssistant: a\n\nAssistant: b"
    raw = pa.table(
        {
            "chosen": [joined, "\n\nHuman: P\n\nAssistant: x"],
            "rejected": ["\n\nHuman: Q\n\nAssistant: no", "\n\nHuman: P\n\nAssistant: y"],
            "m": [1.5, 2.0],
        }
    )
    out = read_pools(raw, "hh", margin_col="m")
    assert out.rejects.num_rows == 0
    meta = [json.loads(m) for m in out.table["metadata"].to_pylist()]
    assert meta == [{"margin": 1.5, "joined_turns": ["chosen"]}, {"margin": 2.0}]
    responses = [c["response"] for c in out.table["candidates"][0].as_py()]
    assert responses == ["a\n\nAssistant: b", "no"]
