"""Candidate entries, the middle of every layout: what a layout reads from each input row
(one entry per candidate, or a prompt-only entry), as columns, and how entries group into
pools.

:func:`assemble` groups entries by prompt id in order of first appearance and builds the
candidates: ``sample_index`` is the position among the pool's candidates from the same
generator and ``candidate_id`` is :func:`prefdata.ids.candidate_id`, both computed
column-wise. Entries of one prompt can be grouped apart from all others (the executor
partitions entries by prompt id on disk), so :meth:`Entries.to_table` and
:meth:`Entries.from_table` round-trip them exactly.

>>> import pyarrow as pa
>>> from prefdata.io.layouts.columns import Rejects, user_messages
>>> e = Entries.of(row=[0, 1], prompt=user_messages(pa.array(["Q", "Q"])),
...                response=pa.array(["a", "b"]))
>>> table, info = assemble(e, Rejects(), source=None, id_field=None)
>>> table.num_rows, [c["sample_index"] for c in table["candidates"][0].as_py()]
(1, [0, 1])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prefdata import ids
from prefdata.arrow import offsets_of
from prefdata.io.layouts.columns import Rejects
from prefdata.schema import MESSAGES_TYPE, candidate_type, empty_scores, pool_schema


@dataclass
class Entries:
    """Entries as aligned columns; ``row`` and ``pos`` (the entry's place within its input
    row) order them, ``key`` is the prompt's content digest (:func:`with_keys`)."""

    row: np.ndarray  # int64: input row of each entry
    pos: np.ndarray  # int32: order within the input row (chosen 0, rejected 1, ...)
    prompt: pa.Array  # MESSAGES_TYPE
    response: pa.Array  # string (null for prompt-only entries)
    generator: pa.Array  # string
    scores: dict[str, pa.Array]  # name -> float64
    is_cand: np.ndarray  # bool
    given_id: pa.Array | None = None  # string
    metadata: pa.Array | None = None  # string, pool-level (first entry of the pool wins)
    key: pa.Array | None = None  # string: ids.prompt_ids(prompt)
    record: pa.Array | None = None  # string: the input row as JSON (for late rejects)

    @classmethod
    def of(
        cls,
        row: Sequence[int] | np.ndarray,
        prompt: pa.Array,
        response: pa.Array,
        *,
        pos: np.ndarray | None = None,
        generator: pa.Array | None = None,
        scores: dict[str, pa.Array] | None = None,
        is_cand: np.ndarray | None = None,
        given_id: pa.Array | None = None,
        metadata: pa.Array | None = None,
    ) -> Entries:
        """Entries with the defaults filled in (no generator, no scores, all candidates)."""
        row = np.asarray(row, dtype=np.int64)
        n = len(row)
        return cls(
            row,
            np.zeros(n, np.int32) if pos is None else np.asarray(pos, np.int32),
            prompt,
            response,
            pa.nulls(n, pa.string()) if generator is None else generator,
            scores or {},
            np.ones(n, bool) if is_cand is None else is_cand,
            given_id,
            metadata,
        )

    @classmethod
    def empty(cls, score_names: Sequence[str] = ()) -> Entries:
        return cls.of(
            [],
            pa.array([], MESSAGES_TYPE),
            pa.array([], pa.string()),
            scores={s: pa.array([], pa.float64()) for s in score_names},
        )

    def __len__(self) -> int:
        return len(self.row)

    def num_rows(self) -> int:
        """How many input rows the entries come from."""
        rows = (
            self.row if len(self.row) < 2 or (np.diff(self.row) >= 0).all() else np.sort(self.row)
        )
        return int(len(rows) and 1 + np.count_nonzero(np.diff(rows)))

    def take(self, idx: np.ndarray) -> Entries:
        i = pa.array(idx, pa.int64())
        opt = lambda a: None if a is None else a.take(i)  # noqa: E731
        return Entries(
            self.row[idx],
            self.pos[idx],
            self.prompt.take(i),
            self.response.take(i),
            self.generator.take(i),
            {k: v.take(i) for k, v in self.scores.items()},
            self.is_cand[idx],
            opt(self.given_id),
            opt(self.metadata),
            opt(self.key),
            opt(self.record),
        )

    def without(self, rej: Rejects) -> Entries:
        """The entries of rows not rejected."""
        dropped = rej.mask(self.row)
        return self.take(np.flatnonzero(~dropped)) if dropped.any() else self

    def with_keys(self) -> Entries:
        """Entries with ``key``: the content digest of each prompt (its id unless given)."""
        return self if self.key is not None else replace(self, key=ids.prompt_ids(self.prompt))

    def sorted(self) -> Entries:
        """In input order: by row, then position within the row."""
        step_row, step_pos = np.diff(self.row), np.diff(self.pos)
        if ((step_row > 0) | ((step_row == 0) & (step_pos > 0))).all():
            return self  # already in order (how batches are read and spilled)
        return self.take(np.lexsort((self.pos, self.row)))

    def prompt_ids(self) -> pa.Array:
        """Each entry's prompt id: the given one, else the content digest."""
        return self.given_id if self.given_id is not None else self.with_keys().key

    def to_table(self) -> pa.Table:
        """The entries as one table (for spilling to disk); :meth:`from_table` reads it."""
        cols = {
            "row": pa.array(self.row, pa.int64()),
            "pos": pa.array(self.pos, pa.int32()),
            "prompt": self.prompt,
            "response": self.response,
            "generator": self.generator,
            "is_cand": pa.array(self.is_cand, pa.bool_()),
        }
        for name in ("given_id", "metadata", "key", "record"):
            if (value := getattr(self, name)) is not None:
                cols[name] = value
        for s, v in self.scores.items():
            cols[f"score:{s}"] = v
        return pa.table(cols)

    @classmethod
    def from_table(cls, table: pa.Table) -> Entries:
        t = table.combine_chunks()
        col = lambda name: t[name].combine_chunks() if name in t.column_names else None  # noqa: E731
        return cls(
            col("row").to_numpy(),
            col("pos").to_numpy(),
            col("prompt").cast(MESSAGES_TYPE),
            col("response").cast(pa.string()),
            col("generator").cast(pa.string()),
            {
                c.removeprefix("score:"): col(c).cast(pa.float64())
                for c in t.column_names
                if c.startswith("score:")
            },
            np_bool_array(col("is_cand")),
            col("given_id"),
            col("metadata"),
            col("key"),
            col("record"),
        )


def np_bool_array(arr: pa.Array) -> np.ndarray:
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=bool)


@dataclass
class Assembly:
    """Where each entry went: its pool, and its candidate id (null for prompt-only)."""

    row: np.ndarray
    pool: np.ndarray
    candidate_id: pa.Array
    metadata: pa.Array | None


def rank_within(groups: np.ndarray, generator: pa.Array) -> np.ndarray:
    """Each candidate's position among the earlier candidates of its pool from the same
    generator (null is a generator of its own).

    >>> rank_within(np.array([0, 0, 0, 1]), pa.array(["a", "b", "a", "a"])).tolist()
    [0, 0, 1, 0]
    """
    gcodes, names = _codes(generator)
    key = groups.astype(np.int64) * (len(names) + 1) + gcodes
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    starts = np.flatnonzero(np.r_[True, sorted_key[1:] != sorted_key[:-1]])
    rank = np.arange(len(key)) - np.repeat(starts, np.diff(np.r_[starts, len(key)]))
    out = np.empty(len(key), np.int64)
    out[order] = rank
    return out


def _first_index(codes: np.ndarray, n_codes: int) -> np.ndarray:
    """Where each code first appears, for codes numbered in order of first appearance
    (as ``dictionary_encode`` numbers them): a code first appears where it exceeds every
    code before it.

    >>> _first_index(np.array([0, 1, 0, 2, 1]), 3).tolist()
    [0, 1, 3]
    """
    first = np.full(n_codes, -1, dtype=np.int64)
    if len(codes):
        before = np.maximum.accumulate(np.r_[-1, codes[:-1]])
        new = np.flatnonzero(codes > before)
        first[codes[new]] = new
    return first


def _codes(arr: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Codes in order of first appearance (null: ``len(values)``), and the distinct
    values."""
    enc = pc.dictionary_encode(arr)
    codes = pc.fill_null(enc.indices, len(enc.dictionary)) if arr.null_count else enc.indices
    return codes.to_numpy().astype(np.int64), enc.dictionary


def reject_id_clashes(e: Entries, rej: Rejects, id_field: str | None) -> Entries:
    """A given prompt id must name one prompt: later rows naming another are rejected
    (naming the first row)."""
    if e.given_id is None or not len(e):
        return e
    e = e.with_keys()
    pcodes, _ = _codes(e.given_id)
    kcodes, _ = _codes(e.key)
    pfirst = _first_index(pcodes, int(pcodes.max()) + 1)
    clash = np.flatnonzero(kcodes != kcodes[pfirst[pcodes]])
    if not len(clash):
        return e
    pid = e.given_id.take(pa.array(clash)).to_pylist()
    for k, p in zip(clash.tolist(), pid, strict=True):
        first_row = int(e.row[pfirst[pcodes[k]]])
        reason = f"prompt_id {p!r} is already used by row {first_row} for a different prompt"
        rej.add(e.row[k], id_field, reason, prompt_id=p)
        if e.record is not None:
            rej.records[int(e.row[k])] = e.record[k].as_py()
    return e.without(rej)


def assemble(
    e: Entries, rej: Rejects, *, source: str | None, id_field: str | None
) -> tuple[pa.Table, Assembly]:
    """Group entries (in input order, rejected rows removed) into pools, in order of
    first appearance, and build the candidates column-wise."""
    e = reject_id_clashes(e.without(rej), rej, id_field)
    n = len(e)
    score_names = list(e.scores)
    pid_arr = e.prompt_ids() if n else pa.array([], pa.string())
    pcode, pool_ids = _codes(pid_arr) if n else (np.zeros(0, np.int64), pa.array([], pa.string()))
    n_pools = len(pool_ids)
    pool_first = _first_index(pcode, n_pools)

    cand = np.flatnonzero(e.is_cand)
    cand_ids = pa.nulls(n, pa.string())
    ctype = candidate_type(score_names)
    if len(cand):
        ci = pa.array(cand)
        pick = (lambda a: a) if len(cand) == n else (lambda a: a.take(ci))  # noqa: E731
        gen = pick(e.generator)
        sample_index = pa.array(rank_within(pcode[cand], gen), pa.int32())
        resp = pick(e.response)
        cids = ids.candidate_ids(pick(pid_arr), gen, sample_index, resp)
        if len(cand) == n:
            cand_ids = cids
        else:  # prompt-only entries have no candidate id
            at = np.full(n, -1, np.int64)
            at[cand] = np.arange(len(cand))
            got = cids.take(pa.array(np.maximum(at, 0)))
            cand_ids = pc.if_else(pa.array(at >= 0), got, cand_ids)
        oi = pa.array(np.argsort(pcode[cand], kind="stable"))
        m = len(cand)
        scores = (
            pa.StructArray.from_arrays(
                [pick(e.scores[s]).take(oi) for s in score_names],
                fields=list(ctype.field("scores").type),
            )
            if score_names
            else empty_scores(m)
        )
        values = pa.StructArray.from_arrays(
            [
                cids.take(oi),
                resp.take(oi),
                gen.take(oi),
                sample_index.take(oi),
                pa.nulls(m, pa.int64()),
                pa.nulls(m, pa.string()),
                pa.nulls(m, pa.int32()),
                scores,
                pa.ListArray.from_arrays(
                    pa.array(np.zeros(m + 1, np.int32)), pa.array([], pa.string())
                ),
            ],
            fields=list(ctype),
        )
        counts = np.bincount(pcode[cand], minlength=n_pools)
    else:
        values = pa.array([], ctype)
        counts = np.zeros(n_pools, np.int64)
    candidates = pa.ListArray.from_arrays(pa.array(offsets_of(counts)), values)
    firsts = pa.array(pool_first, pa.int64())
    metadata = e.metadata.take(firsts) if e.metadata is not None else pa.nulls(n_pools, pa.string())
    table = pa.table(
        {
            "prompt_id": pool_ids.cast(pa.string()),
            "prompt": e.prompt.take(firsts),
            "source": pa.repeat(pa.scalar(source, pa.string()), n_pools),
            "metadata": metadata,
            "candidates": candidates,
        },
        schema=pool_schema(score_names),
    )
    return table, Assembly(e.row, pcode, cand_ids, e.metadata)
