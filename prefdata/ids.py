"""Stable identifiers: digests of canonical content, one at a time or in bulk.

The canonical text of a record (id scheme 2) is its kind, then ``:`` and its fields
joined by ``:``, each field written as ``<UTF-8 byte length>:<value>`` (a null as ``~:``
with no value). The lengths make it unambiguous: content cannot forge a boundary.

- prompt: kind ``prompt``; fields: the role and the content of each message, in order;
- candidate: kind ``candidate``; fields: prompt_id, generator, sample_index (decimal),
  response.

An id is a prefix (``p-`` / ``c-``) and the first 16 hex digits of the MD5 of that text.
MD5 is a standard digest (used here for identity, not security), so the same content gives
the same id on every platform, version, process and shard. :func:`prompt_id` and
:func:`candidate_id` hash one record with :mod:`hashlib`; :func:`prompt_ids` and
:func:`candidate_ids` build the same texts column-wise with Arrow and hash them in DuckDB,
with no Python per row.

>>> canonical_prompt([{"role": "user", "content": "Hi"}])
'prompt:4:user:2:Hi'
>>> prompt_id([{"role": "user", "content": "Hi"}])
'p-d7317f9c18d28540'
>>> prompt_id([{"role": "user", "content": "Hi"}]) == prompt_id([{"content": "Hi", "role": "user"}])
True
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SIZE = 16  # hex digits kept of an id's digest


def digest(*parts: Any, size: int = 16) -> str:
    """Hex digest (``size`` hex characters) of JSON-serialisable parts (fingerprints and
    seeds; not the id scheme).

    >>> digest("a", 1) == digest("a", 1) != digest("a", 2)
    True
    """
    payload = json.dumps(parts, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(payload.encode("utf-8"), digest_size=size // 2).hexdigest()


def fields(*values: str | None) -> str:
    """Fields of the canonical text, each ``<byte length>:<value>`` (``~:`` for null),
    joined by ``:``.

    >>> fields("héllo", None, "")
    '6:héllo:~::0:'
    """
    return ":".join("~:" if v is None else f"{len(v.encode('utf-8'))}:{v}" for v in values)


def canonical_messages(messages: Sequence[dict[str, Any]]) -> list[list[str]]:
    """Messages as ``[role, content]`` lists, ignoring key order and extra keys."""
    return [[m["role"], m["content"]] for m in messages]


def canonical_prompt(messages: Sequence[dict[str, Any]]) -> str:
    """The canonical text of a prompt (module docstring)."""
    return "prompt:" + fields(*(x for m in canonical_messages(messages) for x in m))


def canonical_candidate(
    prompt_id: str, generator: str | None, sample_index: int | None, response: str
) -> str:
    """The canonical text of a candidate (module docstring).

    >>> canonical_candidate("p-1", None, 0, "ok")
    'candidate:3:p-1:~::1:0:2:ok'
    """
    index = None if sample_index is None else str(int(sample_index))
    return "candidate:" + fields(prompt_id, generator, index, response)


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()[:SIZE]


def prompt_id(messages: Sequence[dict[str, Any]]) -> str:
    """Digest of a canonical prompt (its roles and contents, in order)."""
    return "p-" + _md5(canonical_prompt(messages))


def candidate_id(
    prompt_id: str, generator: str | None, sample_index: int | None, response: str
) -> str:
    """Digest of (prompt_id, generator, sample index, response text).

    >>> candidate_id("p-1", "gpt", 0, "Hello")
    'c-27a2b3443aed1248'
    """
    return "c-" + _md5(canonical_candidate(prompt_id, generator, sample_index, response))


# --------------------------------------------------------------------------- in bulk


def _plain(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def _lit(x: str, like: pa.Array) -> pa.Scalar:
    return pa.scalar(x, like.type)


def _texts(columns: Sequence[pa.Array]) -> list[pa.Array]:
    """The columns as strings, large ones (2 GiB of text or more) as large strings."""
    plain = [_plain(c) for c in columns]
    big = sum(c.nbytes for c in plain) >= (1 << 31) - (1 << 24)
    t = pa.large_string() if big else pa.string()
    return [c if c.type == t else c.cast(t) for c in plain]


def field_columns(*columns: pa.Array, kind: str | None = None) -> pa.Array:
    """:func:`fields` of every row of string columns (after ``kind``, when given), in one
    Arrow kernel call.

    >>> field_columns(pa.array(["héllo", None]), pa.array(["", "x"])).to_pylist()
    ['6:héllo:0:', '~::1:x']
    >>> field_columns(pa.array(["a"]), kind="k").to_pylist()
    ['k:1:a']
    """
    parts = []
    for text in _texts(columns):
        length = decimal_strings(pc.binary_length(text)).cast(text.type)
        if text.null_count:
            length = pc.fill_null(length, _lit("~", text))
            text = pc.fill_null(text, _lit("", text))
        parts += [length, text]
    if kind is not None:
        parts.insert(0, _lit(kind, parts[0]))
    return pc.binary_join_element_wise(*parts, _lit(":", parts[0]))


def _decimals(n: int) -> pa.Array:
    """``"0"`` .. ``str(n - 1)``, built from buffers (``pa.array`` of a list would import
    pandas, a second of start-up)."""
    texts = [str(i).encode() for i in range(n)]
    offsets = np.cumsum([0, *map(len, texts)], dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(b"".join(texts)))


_DECIMALS = _decimals(4096)


def decimal_strings(ints: pa.Array) -> pa.Array:
    """Integers as decimal strings (null stays null): small ones by a lookup, which
    costs a third of Arrow's cast.

    >>> decimal_strings(pa.array([0, 42, None, 100000])).to_pylist()
    ['0', '42', None, '100000']
    """
    ints = _plain(ints)
    if len(ints) and ints.null_count < len(ints):
        low, high = pc.min_max(ints).values()
        if low.as_py() >= 0 and high.as_py() < len(_DECIMALS):
            return _DECIMALS.take(ints)
    return ints.cast(pa.string())


_local = threading.local()
_database: list = []  # the process's in-memory DuckDB database, opened once
_database_lock = threading.Lock()


def _connection():
    """This thread's connection to the process's in-memory DuckDB database: a
    ``cursor()`` of it, as DuckDB asks of threads (a connection must not be used by two
    at once). A cursor costs next to nothing; opening a database took about 30 ms a
    thread, and each database ran a thread pool of its own."""
    con = getattr(_local, "con", None)
    if con is None:
        with _database_lock:
            if not _database:
                import duckdb

                _database.append(duckdb.connect())
            con = _local.con = _database[0].cursor()
    return con


def md5_hex(texts: pa.Array, prefix: str) -> pa.Array:
    """``prefix`` + the first 16 hex digits of the MD5 of each text (DuckDB's ``md5``,
    vectorised); null stays null.

    >>> md5_hex(pa.array(["prompt:4:user:2:Hi", None]), "p-").to_pylist()
    ['p-d7317f9c18d28540', None]
    """
    texts = _plain(texts)
    n = len(texts)
    if not n:
        return pa.array([], pa.string())
    con = _connection()
    con.register("texts", pa.table({"t": texts}))
    try:
        # 32 hex digits on every row (a null's are dropped below)
        hexes = con.sql("SELECT coalesce(md5(t), repeat('0', 32)) AS h FROM texts")
        hexes = _plain(hexes.to_arrow_table()["h"])
    finally:
        con.unregister("texts")
    data = np.frombuffer(hexes.buffers()[2], np.uint8)
    if hexes.type != pa.string():
        hexes = hexes.cast(pa.string())
    start = int(np.frombuffer(hexes.buffers()[1], np.int32)[hexes.offset])
    width = len(prefix) + SIZE
    out = np.empty((n, width), np.uint8)
    out[:, : len(prefix)] = np.frombuffer(prefix.encode(), np.uint8)
    out[:, len(prefix) :] = data[start : start + 32 * n].reshape(n, 32)[:, :SIZE]
    ids = pa.StringArray.from_buffers(
        n,
        pa.py_buffer(np.arange(0, width * n + 1, width, dtype=np.int32)),
        pa.py_buffer(out),
    )
    return pc.if_else(texts.is_valid(), ids, pa.nulls(n, pa.string())) if texts.null_count else ids


def canonical_prompts(prompts: pa.Array) -> pa.Array:
    """:func:`canonical_prompt` of every prompt of a ``list<struct<role, content>>`` array;
    a null prompt gives null."""
    prompts = _plain(prompts)
    if prompts.offset or prompts.values.offset:
        prompts = pa.concat_arrays([prompts])  # a slice: offsets from zero
    flat = prompts.flatten()
    per_message = field_columns(pc.struct_field(flat, "role"), pc.struct_field(flat, "content"))
    offsets = pc.subtract(prompts.offsets, prompts.offsets[0]).cast(pa.int64())
    lists = pa.LargeListArray.from_arrays(offsets, per_message, mask=prompts.is_null())
    joined = pc.binary_join(lists, _lit(":", per_message))
    return pc.binary_join_element_wise(_lit("prompt", joined), joined, _lit(":", joined))


def prompt_ids(prompts: pa.Array, *, distinct: bool = False) -> pa.Array:
    """:func:`prompt_id` of every prompt (null for a null prompt), each distinct prompt
    hashed once; ``distinct``: the caller knows the prompts are distinct (no grouping).

    >>> from prefdata.schema import MESSAGES_TYPE
    >>> msgs = [[{"role": "user", "content": "Hi"}], None, [{"role": "user", "content": "Hi"}]]
    >>> got = prompt_ids(pa.array(msgs, MESSAGES_TYPE)).to_pylist()
    >>> got == [prompt_id(msgs[0]), None, prompt_id(msgs[0])]
    True
    """
    canon = canonical_prompts(prompts)
    if distinct:
        return md5_hex(canon, "p-")
    enc = pc.dictionary_encode(canon)
    return md5_hex(enc.dictionary, "p-").take(enc.indices)


def candidate_ids(
    prompt_id: pa.Array, generator: pa.Array, sample_index: pa.Array, response: pa.Array
) -> pa.Array:
    """:func:`candidate_id` of every candidate, column-wise.

    >>> got = candidate_ids(pa.array(["p-1"]), pa.array([None], pa.string()), pa.array([0]),
    ...                     pa.array(["Hello"])).to_pylist()
    >>> got == [candidate_id("p-1", None, 0, "Hello")]
    True
    """
    index = decimal_strings(_plain(sample_index))
    return md5_hex(field_columns(prompt_id, generator, index, response, kind="candidate"), "c-")
