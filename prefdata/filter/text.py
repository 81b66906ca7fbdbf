"""Text normalisation and hashing shared by dedup, decontamination and degenerate flags.

All functions are columnar (pyarrow compute / polars); none loops over rows in Python.

>>> import pyarrow as pa
>>> normalise_text(pa.array(["  Hello,   WORLD! ", "ﬁne\\tday"])).to_pylist()
['hello world', 'fine day']
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from prefdata.arrow import list_lengths, offsets_of, one_chunk

_array = one_chunk


def _polars(t: pa.Array, expr: pl.Expr) -> pa.Array:
    # polars' Rust regex engine is several times faster than Arrow's RE2 kernels here
    out = pl.DataFrame({"t": pl.Series(t)}).select(expr.alias("t"))["t"].to_arrow()
    return out.cast(pa.string())


def normalise_text(texts: pa.Array | pa.ChunkedArray) -> pa.Array:
    """NFKC, lower case, every run of non-word characters to one space, trimmed."""
    t = pc.utf8_normalize(_array(texts).cast(pa.string()), "NFKC")
    expr = pl.col("t").str.to_lowercase().str.replace_all(r"[^\w]+", " ").str.strip_chars()
    return _polars(t, expr)


# (first code point, last code point, script) for the cheap script heuristic
SCRIPT_NAMES = (
    "latin",
    "greek",
    "cyrillic",
    "hebrew",
    "arabic",
    "devanagari",
    "thai",
    "hangul",
    "cjk",
)
_RANGES = np.array(
    sorted(
        [
            (0x41, 0x5A, 0),
            (0x61, 0x7A, 0),
            (0xC0, 0xD6, 0),
            (0xD8, 0xF6, 0),
            (0xF8, 0x24F, 0),
            (0x1E00, 0x1EFF, 0),
            (0x370, 0x3FF, 1),
            (0x1F00, 0x1FFF, 1),
            (0x400, 0x52F, 2),
            (0x590, 0x5FF, 3),
            (0x600, 0x6FF, 4),
            (0x750, 0x77F, 4),
            (0x900, 0x97F, 5),
            (0xE00, 0xE7F, 6),
            (0x1100, 0x11FF, 7),
            (0x3130, 0x318F, 7),
            (0xAC00, 0xD7AF, 7),
            (0x3040, 0x30FF, 8),
            (0x3400, 0x4DBF, 8),
            (0x4E00, 0x9FFF, 8),
            (0xF900, 0xFAFF, 8),
        ]
    ),
    dtype=np.int64,
)


_SCRIPT_TABLE = np.zeros(0x10000, dtype=np.uint8)
for _lo, _hi, _sid in _RANGES:
    _SCRIPT_TABLE[_lo : _hi + 1] = _sid + 1


def script_counts(texts: pa.Array | pa.ChunkedArray, max_chars: int = 500) -> np.ndarray:
    """``(rows, len(SCRIPT_NAMES))`` letter counts per script over the first ``max_chars``
    characters, decoding the UTF-8 buffer in NumPy (no Python per row).

    >>> script_counts(pa.array(["Hello", "Привет мир", "你好"])).argmax(axis=1).tolist()
    [0, 2, 8]
    """
    t = pc.fill_null(_array(texts).cast(pa.string()), "")
    t = pc.utf8_slice_codeunits(t, 0, max_chars)
    t = pa.concat_arrays([t]) if t.offset else t  # fresh buffers starting at offset 0
    n = len(t)
    out = np.zeros((n, len(SCRIPT_NAMES)), dtype=np.int64)
    if n == 0:
        return out
    offsets = np.frombuffer(t.buffers()[1], dtype=np.int32)[: n + 1].astype(np.int64)
    data = t.buffers()[2]
    b = (
        np.frombuffer(data, dtype=np.uint8)[offsets[0] : offsets[-1]]
        if data
        else np.zeros(0, np.uint8)
    )
    lead = np.flatnonzero((b & 0xC0) != 0x80)
    if not len(lead):
        return out
    cp = b[lead].astype(np.int32)
    # decode only the multi-byte sequences (most text is ASCII)
    multi = np.flatnonzero(cp >= 0xC0)
    if len(multi):
        at = lead[multi]
        b0 = cp[multi]

        def cont(k: int) -> np.ndarray:
            return b[np.minimum(at + k, len(b) - 1)].astype(np.int32) & 0x3F

        two = ((b0 & 0x1F) << 6) | cont(1)
        three = ((b0 & 0x0F) << 12) | (cont(1) << 6) | cont(2)
        four = ((b0 & 0x07) << 18) | (cont(1) << 12) | (cont(2) << 6) | cont(3)
        cp[multi] = np.where(b0 >= 0xF0, four, np.where(b0 >= 0xE0, three, two))
    sid = np.zeros(len(b), dtype=np.uint8)  # per byte: script id + 1 at lead bytes
    sid[lead] = _SCRIPT_TABLE[np.minimum(cp, 0xFFFF)] * (cp <= 0xFFFF)
    letters = np.flatnonzero(sid)
    row = np.repeat(np.arange(n, dtype=np.int32), np.diff(offsets))[letters].astype(np.int64)
    flat = np.bincount(row * len(SCRIPT_NAMES) + sid[letters] - 1, minlength=out.size)
    return flat.reshape(n, len(SCRIPT_NAMES))


def text_hash(texts: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """64-bit hash per string (polars' hash: stable within one polars version, so fit and
    apply of a two-pass stage must run on the same version). Null hashes as null's hash."""
    return pl.Series(_array(texts)).hash(seed=0).to_numpy()


def prompt_text(table: pa.Table, column: str = "prompt") -> pa.Array:
    """The contents of every prompt turn joined with newlines, one string per row (a null
    prompt gives ``""``, also when its list still spans messages).

    >>> msgs = pa.array([[{"role": "system", "content": "Be brief."},
    ...                   {"role": "user", "content": "Hi"}], [{"role": "user", "content": "x"}]])
    >>> null = pa.ListArray.from_arrays(msgs.offsets, msgs.values, mask=pa.array([False, True]))
    >>> prompt_text(pa.table({"prompt": null})).to_pylist()
    ['Be brief.\\nHi', '']
    """
    lists = _array(table[column])
    contents = pc.struct_field(lists.flatten(), "content")
    offsets = pa.array(offsets_of(list_lengths(lists)))
    joined = pa.ListArray.from_arrays(offsets, contents)  # a null prompt joins to ""
    return pc.binary_join(joined, "\n")


def word_lists(texts: pa.Array) -> pa.ListArray:
    """Words (split on single spaces) of already-normalised texts; empty text -> []."""
    t = pc.if_else(pc.equal(texts, ""), pa.scalar(None, pa.string()), texts)
    words = pc.split_pattern(t, " ")
    return pc.fill_null(words, pa.scalar([], pa.list_(pa.string())))


__all__ = [
    "SCRIPT_NAMES",
    "script_counts",
    "normalise_text",
    "prompt_text",
    "text_hash",
    "word_lists",
]
