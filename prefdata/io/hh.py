"""Anthropic HH-RLHF transcripts: ``"\\n\\nHuman: ...\\n\\nAssistant: ..."`` strings.

A turn starts at ``"\\n\\nHuman:"`` or ``"\\n\\nAssistant:"`` (the opening ``"\\n\\n"`` may be
missing at the very start). ``Human:`` inside a turn without the blank line before it is
part of that turn's text (HH has such lines, where a model wrote a fake human turn); it is
never treated as a boundary. Turn contents are stripped of surrounding whitespace.

Two turns of the same role in a row (HH has assistant turns where the model wrote
``"\n\nAssistant:"`` inside its answer; TRL's own HH split keeps them) are one turn: the
second marker and its text stay in the first turn's content, as written. The pair layout
records such rows in the pool's metadata (``"joined_turns"``), so they can be found.

Anything that cannot be split cleanly raises :class:`ValueError` with the reason; callers
turn that into a rejects entry rather than guessing.

>>> parse_transcript("\\n\\nHuman: Hi\\n\\nAssistant: Hello!")
[{'role': 'user', 'content': 'Hi'}, {'role': 'assistant', 'content': 'Hello!'}]
>>> split_pair("\\n\\nHuman: Hi\\n\\nAssistant: Hello!", "\\n\\nHuman: Hi\\n\\nAssistant: Go away")
([{'role': 'user', 'content': 'Hi'}], 'Hello!', 'Go away')

:func:`split_pairs` does the same as :func:`split_pair` on whole Arrow arrays.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prefdata.schema import MESSAGES_TYPE

_MARKER = re.compile(r"\n\n(Human|Assistant):")
_ROLE = {"Human": "user", "Assistant": "assistant"}


def parse_transcript(text: str) -> list[dict[str, str]]:
    """Split one transcript into messages (user/assistant, alternating, starting with a
    user turn; a repeated role joins the turn before it: module docstring). Non-final
    turns must not be empty; the final turn may be (HH has empty final assistant turns,
    which are real, if degenerate, responses).

    >>> parse_transcript("Human: a\\n\\nAssistant: b\\n\\nAssistant: c")
    [{'role': 'user', 'content': 'a'}, {'role': 'assistant', 'content': 'b\\n\\nAssistant: c'}]
    >>> parse_transcript("Assistant: a")
    Traceback (most recent call last):
    ...
    ValueError: does not start with a Human turn
    """
    return _parse(text)[0]


def _parse(text: str) -> tuple[list[dict[str, str]], int]:
    """:func:`parse_transcript` and the number of turns joined to the turn before."""
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
    if parts[1] != "Human":
        raise ValueError("does not start with a Human turn")
    raw: list[list[str]] = []  # [role word, content as written]
    joined = 0
    for i in range(1, len(parts), 2):
        if raw and raw[-1][0] == parts[i]:  # the same role again: part of that turn
            raw[-1][1] += f"\n\n{parts[i]}:{parts[i + 1]}"
            joined += 1
        else:
            raw.append([parts[i], parts[i + 1]])
    messages = [{"role": _ROLE[word], "content": content.strip()} for word, content in raw]
    for i, m in enumerate(messages[:-1]):
        if not m["content"]:
            raise ValueError(f"turn {i} ({m['role']}) is empty")
    return messages, joined


def split_pair(chosen: str, rejected: str) -> tuple[list[dict[str, str]], str, str]:
    """(prompt, chosen response, rejected response) of one HH row.

    Both transcripts must end with an assistant turn and agree on every turn before it;
    the prompt is that shared conversation and ends with a user turn.

    >>> split_pair("\\n\\nHuman: a\\n\\nAssistant: b", "\\n\\nHuman: x\\n\\nAssistant: b")
    Traceback (most recent call last):
    ...
    ValueError: chosen and rejected differ before the final assistant turn (turn 0)
    """
    return _split_pair(chosen, rejected)[:3]


def _split_pair(chosen: str, rejected: str) -> tuple[list[dict[str, str]], str, str, list[str]]:
    """:func:`split_pair` and the sides whose transcript had turns joined."""
    try:
        c, c_joined = _parse(chosen)
    except ValueError as e:
        raise ValueError(f"chosen: {e}") from None
    try:
        r, r_joined = _parse(rejected)
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
    sides = [name for name, k in (("chosen", c_joined), ("rejected", r_joined)) if k]
    return prompt_c, c[-1]["content"], r[-1]["content"], sides


# Every character str.isspace() accepts, which is exactly what str.strip() removes (a test
# checks this against all of Unicode): utf8_trim with it strips like Python.
_PY_WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_MARKER_WORDS = (b"Human:", b"Assistant:")  # role 0 (user) and 1 (assistant)


@dataclass
class SplitPairs:
    """:func:`split_pairs` of a column: null outputs where ``errors`` has the row."""

    prompt: pa.Array  # MESSAGES_TYPE
    chosen: pa.Array  # string
    rejected: pa.Array  # string
    errors: dict[int, str]  # row -> str(ValueError) of split_pair
    joined: dict[int, list[str]]  # row -> the sides with a repeated role joined into a turn


@dataclass
class _Turns:
    """A column of transcripts cut into pieces: per row the text before the first turn,
    then one piece per turn. Piece ``k`` is element ``2 * k`` of ``stripped`` (the odd
    elements are the markers between pieces)."""

    ok: np.ndarray  # row parses, alternates, ends with an assistant turn after a prompt
    turns: np.ndarray  # turns per row
    first: np.ndarray  # piece index of each row's turn 0
    stripped: pa.Array  # large_string
    length: np.ndarray  # byte length of each stripped piece

    def pieces(self, index: np.ndarray, mask: np.ndarray | None = None) -> pa.Array:
        """Stripped pieces ``index`` as string (null where ``mask``)."""
        return self.stripped.take(pa.array(2 * index, mask=mask)).cast(pa.string())

    def prompts(self, rows: np.ndarray) -> pa.Array:
        """Element ``2 * i``: row ``i``'s stripped text from turn 0 to the end of its
        second-to-last turn, markers between turns included (empty where not ``rows``);
        a view of ``stripped``, no copy."""
        offsets = np.frombuffer(self.stripped.buffers()[1], np.int64)[self.stripped.offset :]
        before = 2 * (self.first - 1)  # every row has that piece
        bounds = np.empty(2 * len(rows), np.int64)
        bounds[0::2] = offsets[np.where(rows, 2 * self.first, before)]
        bounds[1::2] = offsets[np.where(rows, 2 * (self.first + self.turns - 2) + 1, before)]
        data = self.stripped.buffers()[2] or pa.py_buffer(b"")
        return pa.LargeStringArray.from_buffers(2 * len(rows) - 1, pa.py_buffer(bounds), data)


def _one_array(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(arr, pa.ChunkedArray):
        return arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    return arr


def _as_text(arr: pa.Array) -> pa.Array | None:
    """``arr`` as string or large_string, or None when it is not a string column."""
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        return arr
    kind = arr.type.value_type if pa.types.is_dictionary(arr.type) else arr.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        return arr.cast(pa.large_string())
    return None


def _buffers(text: pa.Array) -> tuple[np.ndarray, pa.Buffer]:
    """Row offsets (int64, one more than rows) into the data buffer of a string array."""
    width = np.int64 if pa.types.is_large_string(text.type) else np.int32
    _, offsets, data = text.buffers()
    offsets = np.frombuffer(offsets, width)[text.offset : text.offset + len(text) + 1]
    return offsets.astype(np.int64), data if data is not None else pa.py_buffer(b"")


def _word_at(data: np.ndarray, pos: np.ndarray, end: np.ndarray, word: bytes) -> np.ndarray:
    """Whether ``word`` is at ``data[pos:]`` and ends by ``end``."""
    k = len(word)
    if len(data) < k:
        return np.zeros(len(pos), dtype=bool)
    windows = np.ndarray((len(data) - k + 1,), f"S{k}", data, strides=(1,))  # no copy
    return (pos + k <= end) & (windows[np.minimum(pos, len(data) - k)] == word)


def _turns(text: pa.Array) -> _Turns:
    """Cut every row at its markers (found with NumPy on the data buffer, which the pieces
    then share), strip the pieces with utf8_trim, and check each row's turns."""
    n = len(text)
    valid = text.is_valid().to_numpy(zero_copy_only=False)
    offsets, buf = _buffers(text)
    if (np.diff(offsets)[~valid] > 0).any():  # a null may span bytes (valid Arrow): drop them
        text = pc.if_else(pa.array(valid), text, pa.scalar("", text.type))
        offsets, buf = _buffers(text)
    row_start, row_end = offsets[:-1], offsets[1:]
    data = np.frombuffer(buf, np.uint8)[: offsets[-1]]

    # Markers: "\n\n" + word inside one row, or word at the very start of a row.
    newline = np.flatnonzero(data[offsets[0] :] == ord("\n")) + offsets[0]
    newline = newline[newline + 1 < len(data)]
    blank = newline[data[newline + 1] == ord("\n")]
    blank_end = row_end[np.searchsorted(offsets, blank, side="right") - 1]
    found = []  # (start, end, role) of each kind of marker
    for role, word in enumerate(_MARKER_WORDS):
        at = blank[_word_at(data, blank + 2, blank_end, word)]
        found.append((at, at + 2 + len(word), np.full(len(at), role)))
        at = row_start[_word_at(data, row_start, row_end, word)]
        found.append((at, at + len(word), np.full(len(at), role)))
    m_start, m_end, m_role = (np.concatenate(x) for x in zip(*found, strict=True))
    order = np.argsort(m_start, kind="stable")
    m_start, m_end, m_role = m_start[order], m_end[order], m_role[order]
    m_row = np.searchsorted(offsets, m_start, side="right") - 1

    # Pieces: per row the text before the first marker, then the text after each marker.
    turns = np.bincount(m_row, minlength=n)
    before = np.arange(n) + np.cumsum(turns) - turns  # piece index of each row's first piece
    after = np.arange(len(m_start)) + m_row + 1  # piece index of the text after each marker
    n_pieces = n + len(m_start)
    bounds = np.empty(2 * n_pieces, np.int64)  # start, end of each piece: monotonic
    bounds[2 * before] = row_start
    bounds[2 * after] = m_end
    bounds[2 * (before + turns) + 1] = row_end
    bounds[2 * (after - 1) + 1] = m_start
    pieces = pa.LargeStringArray.from_buffers(2 * n_pieces - 1, pa.py_buffer(bounds), buf)
    stripped = pc.utf8_trim(pieces, _PY_WHITESPACE)
    length = pc.binary_length(stripped).to_numpy()[::2].astype(np.int64)

    row = np.repeat(np.arange(n), turns + 1)
    turn = np.arange(n_pieces) - before[row] - 1  # -1: the text before the first turn
    role = np.full(n_pieces, -1)
    role[after] = m_role
    bad = np.where(
        turn < 0,
        length > 0,
        (role != turn % 2) | ((length == 0) & (turn < turns[row] - 1)),
    )
    ok = valid & (np.bincount(row[bad], minlength=n) == 0) & (turns >= 2) & (turns % 2 == 0)
    return _Turns(ok, turns, before + 1, stripped, length)


def _rows_as_py(arr: pa.Array, text: pa.Array | None, rows: np.ndarray) -> list:
    """``arr[i].as_py()`` for ``i`` in ``rows`` (``text``: ``arr`` as large_string, or None)."""
    if text is not None:  # take() has no kernel for some string types (string_view)
        return text.take(pa.array(rows, pa.int64())).to_pylist()
    values = arr.to_pylist()  # not a string column: every row is in ``rows``
    return [values[i] for i in rows.tolist()]


def _fallback(
    chosen: list, rejected: list, rows: np.ndarray, errors: dict[int, str], joined: dict
) -> dict[int, tuple[list[dict[str, str]], str, str]]:
    """split_pair on ``rows``: successes returned, errors recorded in ``errors`` and
    joined turns in ``joined``."""
    done = {}
    for i, c, r in zip(rows.tolist(), chosen, rejected, strict=True):
        try:
            *done[i], sides = _split_pair(c, r)
        except ValueError as e:
            errors[i] = str(e)
            continue
        if sides:
            joined[i] = sides
    return done


def split_pairs(chosen: pa.Array, rejected: pa.Array) -> SplitPairs:
    """:func:`split_pair` on every row of two columns, computed on whole arrays; the rows
    the columnar pass does not accept (nulls, non-strings, anything split_pair refuses) are
    run through :func:`split_pair` itself, for its exact error (or result).

    >>> out = split_pairs(
    ...     pa.array(["\\n\\nHuman: Hi\\n\\nAssistant: Hello!", None]),
    ...     pa.array(["Human: Hi\\n\\nAssistant:  Go away ", "x"]),
    ... )
    >>> out.prompt.to_pylist(), out.chosen.to_pylist(), out.rejected.to_pylist()
    ([[{'role': 'user', 'content': 'Hi'}], None], ['Hello!', None], ['Go away', None])
    >>> out.errors
    {1: 'chosen: not a string (NoneType)'}
    """
    chosen, rejected = _one_array(chosen), _one_array(rejected)
    if len(chosen) != len(rejected):
        raise ValueError(f"chosen has {len(chosen)} rows, rejected {len(rejected)}")
    n = len(chosen)
    c_text, r_text = _as_text(chosen), _as_text(rejected)
    ok = np.zeros(n, dtype=bool)
    if c_text is not None and r_text is not None and n:
        c, r = _turns(c_text), _turns(r_text)
        ok = c.ok & r.ok & (c.turns == r.turns)
        # The prompt (every turn but the last) must be the same in both: turns of the same
        # lengths (roles alternate in both), then the same text from the first turn to the
        # end of the prompt (the markers between turns are then the same too).
        prompt_len = np.where(ok, c.turns - 1, 0)
        rows = np.repeat(np.arange(n), prompt_len)
        turn = np.arange(len(rows)) - (np.cumsum(prompt_len) - prompt_len)[rows]
        ci = c.first[rows] + turn
        ok &= np.bincount(rows[c.length[ci] != r.length[r.first[rows] + turn]], minlength=n) == 0
        same = pc.equal(c.prompts(ok), r.prompts(ok)).to_numpy(zero_copy_only=False)[::2]
        ok &= same
        keep = ok[rows]
        rows, turn, ci = rows[keep], turn[keep], ci[keep]
        prompt_len = np.where(ok, prompt_len, 0)

        messages = pa.StructArray.from_arrays(
            [pa.array(["user", "assistant"]).take(turn % 2), c.pieces(ci)],
            fields=list(MESSAGES_TYPE.value_type),
        )
        offsets = pa.array(np.concatenate([[0], np.cumsum(prompt_len)]).astype(np.int32))
        prompt = pa.ListArray.from_arrays(offsets, messages, type=MESSAGES_TYPE, mask=pa.array(~ok))
        chosen_out = c.pieces(np.where(ok, c.first + c.turns - 1, 0), mask=~ok)
        rejected_out = r.pieces(np.where(ok, r.first + r.turns - 1, 0), mask=~ok)
    else:
        prompt = pa.nulls(n, MESSAGES_TYPE)
        chosen_out, rejected_out = pa.nulls(n, pa.string()), pa.nulls(n, pa.string())

    errors: dict[int, str] = {}
    joined: dict[int, list[str]] = {}
    rows = np.flatnonzero(~ok)
    done = _fallback(
        _rows_as_py(chosen, c_text, rows),
        _rows_as_py(rejected, r_text, rows),
        rows,
        errors,
        joined,
    )
    if done:  # split_pair accepted rows the columnar pass left out: put them in
        index = np.arange(n)
        index[list(done)] = n + np.arange(len(done))
        index = pa.array(index)
        p, ct, rt = zip(*done.values(), strict=True)
        prompt = pa.concat_arrays([prompt, pa.array(p, MESSAGES_TYPE)]).take(index)
        chosen_out = pa.concat_arrays([chosen_out, pa.array(ct, pa.string())]).take(index)
        rejected_out = pa.concat_arrays([rejected_out, pa.array(rt, pa.string())]).take(index)
    return SplitPairs(prompt, chosen_out, rejected_out, errors, joined)


__all__ = ["SplitPairs", "parse_transcript", "split_pair", "split_pairs"]
