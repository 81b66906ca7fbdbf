"""Anthropic HH-RLHF transcripts: ``"\\n\\nHuman: ...\\n\\nAssistant: ..."`` strings.

A turn starts at ``"\\n\\nHuman:"`` or ``"\\n\\nAssistant:"`` (the opening ``"\\n\\n"`` may be
missing at the very start). ``Human:`` inside a turn without the blank line before it is
part of that turn's text (HH has such lines, where a model wrote a fake human turn); it is
never treated as a boundary. Turn contents are stripped of surrounding whitespace.

Anything that cannot be split cleanly raises :class:`ValueError` with the reason; callers
turn that into a rejects entry rather than guessing.

>>> parse_transcript("\\n\\nHuman: Hi\\n\\nAssistant: Hello!")
[{'role': 'user', 'content': 'Hi'}, {'role': 'assistant', 'content': 'Hello!'}]
>>> split_pair("\\n\\nHuman: Hi\\n\\nAssistant: Hello!", "\\n\\nHuman: Hi\\n\\nAssistant: Go away")
([{'role': 'user', 'content': 'Hi'}], 'Hello!', 'Go away')
"""

from __future__ import annotations

import re

_MARKER = re.compile(r"\n\n(Human|Assistant):")
_ROLE = {"Human": "user", "Assistant": "assistant"}


def parse_transcript(text: str) -> list[dict[str, str]]:
    """Split one transcript into messages (user/assistant, strictly alternating, starting
    with a user turn). Non-final turns must not be empty; the final turn may be (HH has
    empty final assistant turns, which are real, if degenerate, responses).

    >>> parse_transcript("Human: a\\n\\nHuman: b")
    Traceback (most recent call last):
    ...
    ValueError: turns not alternating: turn 1 is a user turn after a user turn
    """
    if not isinstance(text, str):
        raise ValueError(f"not a string ({type(text).__name__})")
    if text.startswith(("Human:", "Assistant:")):
        text = "\n\n" + text
    parts = _MARKER.split(text)
    # parts = [before, role0, content0, role1, content1, ...]
    if parts[0].strip():
        raise ValueError(f"text before the first turn: {parts[0][:40]!r}")
    if len(parts) < 3:
        raise ValueError("no '\\n\\nHuman:' or '\\n\\nAssistant:' turn found")
    messages = [
        {"role": _ROLE[parts[i]], "content": parts[i + 1].strip()} for i in range(1, len(parts), 2)
    ]
    if messages[0]["role"] != "user":
        raise ValueError("does not start with a Human turn")
    for i in range(1, len(messages)):
        if messages[i]["role"] == messages[i - 1]["role"]:
            role = messages[i]["role"]
            raise ValueError(
                f"turns not alternating: turn {i} is a{'n' if role == 'assistant' else ''} "
                f"{role} turn after a{'n' if role == 'assistant' else ''} {role} turn"
            )
    for i, m in enumerate(messages[:-1]):
        if not m["content"]:
            raise ValueError(f"turn {i} ({m['role']}) is empty")
    return messages


def split_pair(chosen: str, rejected: str) -> tuple[list[dict[str, str]], str, str]:
    """(prompt, chosen response, rejected response) of one HH row.

    Both transcripts must end with an assistant turn and agree on every turn before it;
    the prompt is that shared conversation and ends with a user turn.

    >>> split_pair("\\n\\nHuman: a\\n\\nAssistant: b", "\\n\\nHuman: x\\n\\nAssistant: b")
    Traceback (most recent call last):
    ...
    ValueError: chosen and rejected differ before the final assistant turn (turn 0)
    """
    try:
        c = parse_transcript(chosen)
    except ValueError as e:
        raise ValueError(f"chosen: {e}") from None
    try:
        r = parse_transcript(rejected)
    except ValueError as e:
        raise ValueError(f"rejected: {e}") from None
    for name, msgs in (("chosen", c), ("rejected", r)):
        if msgs[-1]["role"] != "assistant":
            raise ValueError(f"{name}: last turn is not an Assistant turn")
    prompt_c, prompt_r = c[:-1], r[:-1]
    if prompt_c != prompt_r:
        turn = next(
            (i for i, (a, b) in enumerate(zip(prompt_c, prompt_r, strict=False)) if a != b),
            min(len(prompt_c), len(prompt_r)),
        )
        raise ValueError(
            f"chosen and rejected differ before the final assistant turn (turn {turn})"
        )
    if not prompt_c:
        raise ValueError("empty prompt: no turn before the final assistant turn")
    if prompt_c[-1]["role"] != "user":  # guaranteed by alternation; checked to never mis-split
        raise ValueError("prompt does not end with a Human turn")
    return prompt_c, c[-1]["content"], r[-1]["content"]


__all__ = ["parse_transcript", "split_pair"]
