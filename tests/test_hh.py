"""HH-RLHF transcript parsing: split cleanly or refuse with a reason, never mis-split."""

from __future__ import annotations

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
        ("\n\nHuman: a\n\nAssistant: b\n\nAssistant: c", "turns not alternating: turn 2"),
        ("\n\nHuman: a\n\nHuman: b", "turns not alternating: turn 1"),
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
            "\n\nHuman: Q\n\nAssistant: a",
            "\n\nHuman: Q\n\nAssistant: b\n\nAssistant: c",
            "rejected: turns not alternating",
        ),
    ],
)
def test_split_pair_refuses(chosen, rejected, reason):
    with pytest.raises(ValueError) as err:
        split_pair(chosen, rejected)
    assert reason in str(err.value)
