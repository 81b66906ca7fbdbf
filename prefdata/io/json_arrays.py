r"""A JSON array of objects cut into pieces of whole items, so that a large ``.json`` file
is read in batches like JSON Lines, with memory bounded by a piece, not by the file.

The cuts are the array's own commas: those outside strings at depth 1. A block of the
file is scanned column-wise with numpy: the bytes that matter (quotes, backslashes,
commas, brackets, newlines) are picked out in one pass, quotes preceded by an odd run of
backslashes are dropped, the quotes left open and close strings, and the brackets
outside strings give the depth. The state (inside a string or not, the depth, the lines)
carries from block to block; a block never ends in a backslash, so no escape is cut.

UTF-8 never uses these bytes inside a multi-byte character, so the scan needs no
decoding. Each piece is parsed by a JSON parser afterwards: a file that is not valid
JSON still fails there (or at its end), with the position in the file.

>>> import io
>>> data = b'[{"a": "x,]\\\\"}, {"b": [1, 2]},\n {"c": "\\""}]'
>>> for p in array_pieces(io.BytesIO(data), 8):
...     print(p.offset, p.line, p.column, p.text)
1 1 2 b'{"a": "x,]\\\\"}'
16 1 17 b' {"b": [1, 2]}'
31 1 32 b'\n {"c": "\\""}'
>>> [p.text for p in array_pieces(io.BytesIO(data), 1 << 20)] == [data[1:-1]]
True
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

_QUOTE, _ESCAPE, _COMMA, _OPEN, _CLOSE, _NEWLINE = 1, 2, 3, 4, 5, 6
_CLASS = np.zeros(256, np.uint8)
for _ch, _k in ('"', _QUOTE), ("\\", _ESCAPE), (",", _COMMA), ("\n", _NEWLINE):
    _CLASS[ord(_ch)] = _k
_CLASS[[ord("["), ord("{")]] = _OPEN
_CLASS[[ord("]"), ord("}")]] = _CLOSE
_TABLE = _CLASS.tobytes()  # for bytes.translate: one pass in C
_SPACE = b" \t\r\n"
BOM = b"\xef\xbb\xbf"  # a UTF-8 byte-order mark


class ArrayError(ValueError):
    """The text is not one JSON array (the message gives the position)."""


@dataclass(frozen=True)
class Piece:
    """Whole items of the array with the commas between them (not the brackets):
    ``b"[" + text + b"]"`` is a JSON array. ``offset``: the file offset of ``text[0]``;
    ``line`` and ``column`` (from 1): where that is."""

    text: bytes
    offset: int
    line: int
    column: int

    def where(self, at: int) -> str:
        """The position of ``text[at]`` in the file, as ``json`` words it.

        >>> Piece(b'{"a":\\n 1}', 10, 3, 5).where(7)
        'line 4 column 2 (byte 17)'
        """
        before = self.text.rfind(b"\n", 0, at)
        line = self.line + self.text.count(b"\n", 0, at)
        column = at - before if before >= 0 else self.column + at
        return f"line {line} column {column} (byte {self.offset + at})"

    def within(self, at: int) -> str:
        """:meth:`where` for ``at`` in ``b"[" + text + b"]"``.

        >>> Piece(b'{"a": 1}', 10, 3, 5).within(0)
        'line 3 column 5 (byte 10)'
        """
        return self.where(min(max(at - 1, 0), len(self.text)))


class _Scan:
    """The scan's state across blocks."""

    def __init__(self) -> None:
        self.in_string = False
        self.depth = 0
        self.lines = 1  # the line at the start of the next block
        self.line_start = 0  # file offset where that line starts

    def block(self, data: bytes, offset: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """File offsets of this block's opening brackets of depth 1, commas at depth 1
        and closing brackets back to depth 0, all outside strings."""
        classes = np.frombuffer(data.translate(_TABLE), np.uint8)
        pos = np.flatnonzero(classes != 0)
        kind = classes[pos]
        quote = kind == _QUOTE
        escape = kind == _ESCAPE
        if escape.any():
            q = np.flatnonzero(quote)
            quote[q[_escaped(pos[q], pos[escape])]] = False
        # inside a string after each byte: the parity of the quotes so far
        inside = np.bitwise_xor.accumulate(quote.view(np.uint8)) ^ np.uint8(self.in_string)
        marks = (kind >= _COMMA) & (kind <= _CLOSE) & (inside == 0)
        at, kind_at = pos[marks], kind[marks]
        step = (kind_at == _OPEN).astype(np.int64) - (kind_at == _CLOSE)
        depth = self.depth + np.cumsum(step)
        opens = at[(kind_at == _OPEN) & (depth == 1)]
        commas = at[(kind_at == _COMMA) & (depth == 1)]
        closes = at[(kind_at == _CLOSE) & (depth == 0)]
        self.in_string = bool(inside[-1]) if len(inside) else self.in_string
        self.depth = int(depth[-1]) if len(depth) else self.depth
        self._newlines = pos[kind == _NEWLINE] + offset
        return opens + offset, commas + offset, closes + offset

    def place(self, at: int) -> tuple[int, int]:
        """(line, column) of file offset ``at`` within the block just scanned."""
        k = int(np.searchsorted(self._newlines, at))
        start = int(self._newlines[k - 1]) + 1 if k else self.line_start
        return self.lines + k, at - start + 1

    def next_block(self) -> None:
        if len(self._newlines):
            self.line_start = int(self._newlines[-1]) + 1
        self.lines += len(self._newlines)


def _escaped(quotes: np.ndarray, escapes: np.ndarray) -> np.ndarray:
    """Whether each quote follows an odd run of backslashes.

    >>> _escaped(np.array([1, 4, 8]), np.array([0, 2, 3, 5, 6, 7])).tolist()
    [True, False, True]
    """
    new_run = np.r_[True, np.diff(escapes) != 1]
    run_start = escapes[new_run][np.cumsum(new_run) - 1]
    k = np.minimum(np.searchsorted(escapes, quotes - 1), len(escapes) - 1)
    after_escape = escapes[k] == quotes - 1
    return after_escape & ((quotes - run_start[k]) % 2 == 1)


def _blocks(fh: BinaryIO, size: int) -> Iterator[bytes]:
    """The file in blocks of about ``size`` bytes, none ending in a backslash."""
    while block := fh.read(size):
        while block.endswith(b"\\") and (more := fh.read(1)):
            block += more
        yield block


def array_pieces(fh: BinaryIO, size: int) -> Iterator[Piece]:
    """The items of the JSON array in ``fh`` in pieces of about ``size`` bytes (a piece
    ends at the first comma after that; an item is never cut). Raises
    :class:`ArrayError` for text before the array, after it, or an array never closed;
    the pieces themselves are not parsed here."""
    scan = _Scan()
    pending = bytearray()
    start = -1  # file offset of pending[0]; -1 before the opening bracket
    line = column = 1
    offset = 0
    for data in _blocks(fh, size):
        opens, commas, closes = scan.block(data, offset)
        if start < 0:
            head = data[: opens[0] - offset] if len(opens) else data
            if not len(opens) or head.removeprefix(BOM).strip(_SPACE):
                raise ArrayError("the file does not start with a JSON array")
            start = int(opens[0]) + 1
            line, column = scan.place(start)
            pending += data[start - offset :]
        else:
            pending += data
        if len(closes):  # the end of the array: the rest must be blank
            end = int(closes[0])
            _blank_after(data[end + 1 - offset :], end + 1, fh, size, scan)
            commas = commas[commas < end]
            last = int(commas[-1]) if len(commas) else -1
            if len(pending) - (offset + len(data) - end) >= size and last >= start:
                piece, line, column = _cut(pending, start, last, line, column, scan)
                yield piece
                start = last + 1
            yield Piece(bytes(pending[: end - start]), start, line, column)
            return
        if len(pending) >= size and len(commas) and int(commas[-1]) >= start:
            last = int(commas[-1])
            piece, line, column = _cut(pending, start, last, line, column, scan)
            yield piece
            start = last + 1
        offset += len(data)
        scan.next_block()
    raise ArrayError(f"the file ends (byte {offset}) before the array's closing ']'")


def _blank_after(tail: bytes, at: int, fh: BinaryIO, size: int, scan: _Scan) -> None:
    """Raise :class:`ArrayError` at the first byte after the array that is not blank:
    ``tail`` (from file offset ``at``, in the block just scanned), then the file."""
    for data in (tail, *_blocks(fh, size)):
        junk = len(data) - len(data.lstrip(_SPACE))
        if junk < len(data):
            if data is tail:
                line, column = scan.place(at + junk)
                raise ArrayError(f"Extra data at line {line} column {column} (byte {at + junk})")
            raise ArrayError(f"Extra data at byte {at + junk}")
        at += len(data)


def _cut(
    pending: bytearray, start: int, comma: int, line: int, column: int, scan: _Scan
) -> tuple[Piece, int, int]:
    """The piece up to ``comma`` (taken out of ``pending``) and where the next starts."""
    piece = Piece(bytes(pending[: comma - start]), start, line, column)
    del pending[: comma + 1 - start]
    return (piece, *scan.place(comma + 1))


__all__ = ["BOM", "ArrayError", "Piece", "array_pieces"]
