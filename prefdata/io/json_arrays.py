r"""A JSON array of objects cut into pieces of whole items, so that a large ``.json`` file
is read in batches like JSON Lines, with memory bounded by a piece, not by the file.

Where to cut: the last ``}`` ``,`` ``{`` (blanks between) in a block is nearly always
the boundary of two items, and a regular expression finds it in the block's tail without
reading the rest. Where it is not (the three characters lie inside a string or a nested
value), the piece before it ends inside that string or value, so it is not valid JSON
and its parse fails; from there on the pieces are cut by the exact scan: the array's own
commas, outside strings at depth 1. A piece always starts at an item, outside strings.

The exact scan is column-wise, with numpy: the bytes that matter (quotes, backslashes,
commas, brackets) are picked out in one pass, quotes after an odd run of backslashes are
dropped, the quotes left open and close strings, and the brackets outside strings give
the depth; the state carries from block to block, and a block never ends in a
backslash. UTF-8 never uses these bytes inside a multi-byte character, so nothing is
decoded. Every piece is parsed: a file that is not valid JSON fails as it does read
whole, at its first error (a cut next to that error can name the byte after it instead:
"Extra data" where the whole read says "Expecting ',' delimiter").

>>> import io, json
>>> data = b'[{"a": "x}, {y"}, {"b": [{}, {}]},\n {"c": "\\""}]'
>>> parse = lambda p: (p.offset, p.line, p.column, json.loads(b"[" + p.text + b"]"))
>>> for got in parsed_pieces(io.BytesIO(data), 8, parse):
...     print(*got)
1 1 2 [{'a': 'x}, {y'}]
17 1 18 [{'b': [{}, {}]}]
34 1 35 [{'c': '"'}]
>>> [p for _, _, _, p in parsed_pieces(io.BytesIO(data), 1 << 20, parse)]
[[{'a': 'x}, {y'}, {'b': [{}, {}]}, {'c': '"'}]]
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, TypeVar

import numpy as np

_QUOTE, _ESCAPE, _COMMA, _OPEN, _CLOSE = 1, 2, 3, 4, 5
_CLASS = np.zeros(256, np.uint8)
for _ch, _k in ('"', _QUOTE), ("\\", _ESCAPE), (",", _COMMA):
    _CLASS[ord(_ch)] = _k
_CLASS[[ord("["), ord("{")]] = _OPEN
_CLASS[[ord("]"), ord("}")]] = _CLOSE
_TABLE = _CLASS.tobytes()  # for bytes.translate: one pass in C
_SPACE = b" \t\r\n"
_GUESS = re.compile(rb"\}[ \t\r\n]*,[ \t\r\n]*\{")  # nearly always between two items
T = TypeVar("T")
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

    def __init__(self, depth: int) -> None:
        self.in_string = False
        self.depth = depth

    def block(self, data: bytes, offset: int) -> tuple[np.ndarray, np.ndarray]:
        """File offsets of this block's commas at depth 1 and closing brackets back to
        depth 0, outside strings."""
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
        commas = at[(kind_at == _COMMA) & (depth == 1)]
        closes = at[(kind_at == _CLOSE) & (depth == 0)]
        self.in_string = bool(inside[-1]) if len(inside) else self.in_string
        self.depth = int(depth[-1]) if len(depth) else self.depth
        return commas + offset, closes + offset


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


def parsed_pieces(fh: BinaryIO, size: int, parse: Callable[[Piece], T]) -> Iterator[T]:
    """``parse`` of each piece of the JSON array in ``fh``, in order: whole items of about
    ``size`` bytes (a piece ends at the first boundary after that; an item is never cut).
    ``parse`` raises ``ValueError`` for a piece that is not valid JSON: a guessed cut that
    was wrong is then made again by the exact scan, which also finds the file's own
    errors (raised as ``parse`` raised them). :class:`ArrayError`: text before the array
    or after it, or a file that ends before the array does."""
    blocks = _blocks(fh, size)
    first = next(blocks, b"")
    body = first.removeprefix(BOM).lstrip(_SPACE)
    if not body.startswith(b"["):
        raise ArrayError("the file does not start with a JSON array")
    cuts = _Cuts(first, len(first) - len(body) + 1, size)
    for data in blocks:
        cuts.add(data)
        if len(cuts.pending) >= size:
            yield from cuts.pieces(parse, final=False)
    yield from cuts.pieces(parse, final=True)


class _Cuts:
    """The text not yet cut into pieces, where it starts, and the exact scan once a
    guess was wrong."""

    def __init__(self, first: bytes, start: int, size: int) -> None:
        self.size = size
        self.pending = bytearray(first[start:])
        self.offset = start  # file offset of pending[0]
        self.line = first.count(b"\n", 0, start) + 1
        self.column = start - first.rfind(b"\n", 0, start)
        self.scan: _Scan | None = None
        self.scanned = 0  # file offset up to which the scan has read
        self.comma = self.close = -1  # file offsets the scan found (-1: none)
        self.ended = False

    def add(self, data: bytes) -> None:
        self.pending += data
        if self.ended:
            self._blank_rest()

    def here(self) -> Piece:
        return Piece(bytes(self.pending), self.offset, self.line, self.column)

    def pieces(self, parse: Callable[[Piece], T], final: bool) -> Iterator[T]:
        while not self.ended:
            cut = self._exact(final) if self.scan else self._guess(final)
            if cut is None:
                return
            end, last = cut
            piece = Piece(bytes(self.pending[:end]), self.offset, self.line, self.column)
            try:
                out = parse(piece)
            except ValueError:
                if self.scan is not None:
                    raise
                self._begin_exact()
                continue
            if last and end == len(self.pending) and self.scan is not None:
                at = self.offset + end
                raise ArrayError(f"the file ends (byte {at}) before the array's closing ']'")
            yield out
            self._advance(end + 1)
            self.ended = last
        self._blank_rest()

    def _guess(self, final: bool) -> tuple[int, bool] | None:
        if final:
            text = self.pending.rstrip(_SPACE)
            if text.endswith(b"]"):
                return len(text) - 1, True
            self._begin_exact()
            return self._exact(final)
        n = len(self.pending)
        for window in (1 << 16, 1 << 20, n):
            found = [m.start() for m in _GUESS.finditer(self.pending, max(0, n - window))]
            if found:
                return self.pending.index(b",", found[-1]), False
            if window >= n:
                break
        if n >= 4 * self.size:  # no guess in four blocks (items that are not objects?)
            self._begin_exact()
            return self._exact(final)
        return None

    def _begin_exact(self) -> None:
        """The exact scan from here on (a piece starts at an item: outside strings)."""
        self.scan, self.scanned = _Scan(depth=1), self.offset

    def _exact(self, final: bool) -> tuple[int, bool] | None:
        new = self.pending[self.scanned - self.offset :]
        if len(new) and self.close < 0:
            commas, closes = self.scan.block(bytes(new), self.scanned)
            self.comma = int(commas[-1]) if len(commas) else self.comma
            if len(closes):
                self.close = int(closes[0])
                before = commas[commas < self.close]
                self.comma = int(before[-1]) if len(before) else -1
            self.scanned += len(new)
        if self.close >= 0:
            return self.close - self.offset, True
        if final:  # no end: the rest as if the file closed the array, to find its errors
            return len(self.pending), True
        return (self.comma - self.offset, False) if self.comma >= self.offset else None

    def _advance(self, n: int) -> None:
        """Drop the first ``n`` bytes of ``pending``, keeping where it starts."""
        before = self.pending.rfind(b"\n", 0, n)
        if before >= 0:
            self.line += self.pending.count(b"\n", 0, n)
            self.column = n - before
        else:
            self.column += n
        del self.pending[:n]
        self.offset += n

    def _blank_rest(self) -> None:
        """After the array: blanks only."""
        rest = self.pending.lstrip(_SPACE)
        if rest:
            raise ArrayError(f"Extra data at {self.here().where(len(self.pending) - len(rest))}")
        self._advance(len(self.pending))


__all__ = ["BOM", "ArrayError", "Piece", "parsed_pieces"]
