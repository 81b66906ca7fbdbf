"""What every scorer shares: the candidate view of a pool table, writing score fields and
flags back without per-row Python, and provenance for the dataset card.

A scorer is a :class:`~prefdata.pipeline.Stage` that adds one float64 field per candidate to
``candidates.scores`` (several for multi-objective scorers, named ``<name>.<objective>``),
keeping the existing score fields and every other candidate field in schema order.

>>> import pyarrow as pa
>>> from prefdata.schema import pool_schema
>>> t = pa.Table.from_pylist([{"prompt_id": "p", "prompt": [{"role": "user", "content": "Hi"}],
...     "source": None, "metadata": None, "candidates": [
...     {"candidate_id": "a", "response": "x", "generator": "g", "scores": {}, "flags": []},
...     {"candidate_id": "b", "response": "y", "generator": "g", "scores": {}, "flags": []}]}],
...     schema=pool_schema())
>>> out = with_scores(t, {"rm": [0.5, float("nan")]}, flags=[["low"], []])
>>> out["candidates"].to_pylist()[0][0]["scores"], out["candidates"].to_pylist()[0][0]["flags"]
({'rm': 0.5}, ['low'])
>>> out["candidates"].to_pylist()[0][1]["scores"]  # NaN means not scored: null
{'rm': None}
"""

from __future__ import annotations

import importlib.metadata
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prefdata.arrow import list_lengths, offsets_of, parents_of, plain_list
from prefdata.ids import digest
from prefdata.pipeline import Stage
from prefdata.schema import empty_scores

__all__ = [
    "Candidates",
    "Scorer",
    "candidates_view",
    "last_user_text",
    "package_version",
    "seed_for",
    "with_scores",
]


def _merge_flags(old: pa.ListArray, new: Sequence[Sequence[str]] | None) -> pa.ListArray:
    """Append ``new[i]`` to candidate i's flags (skipping flags it already has).

    Built from offsets with numpy: the only Python loop runs over candidates that get a flag.
    """
    if new is None or not any(new):
        return old
    n = len(old)
    if len(new) != n:
        raise ValueError(f"flags has {len(new)} entries for {n} candidates")
    old_counts = list_lengths(old)
    old_off = offsets_of(old_counts, np.int64)
    old_vals = old.flatten()
    existing = None
    add_counts = np.zeros(n, dtype=np.int64)
    add_vals: list[str] = []
    for i in (i for i, f in enumerate(new) if f):
        if existing is None:
            existing = old.to_pylist()
        have = set(existing[i] or ())
        fresh = [f for f in dict.fromkeys(new[i]) if f not in have]
        add_counts[i] = len(fresh)
        add_vals.extend(fresh)
    counts = old_counts + add_counts
    offsets = offsets_of(counts)
    # Index into concat(old values, new values): candidate i takes its old range, then its new.
    add_off = offsets_of(add_counts, np.int64)
    total = int(offsets[-1])
    owner = parents_of(counts)
    pos = np.arange(total) - offsets[:-1][owner]
    is_old = pos < old_counts[owner]
    idx = np.where(
        is_old,
        old_off[owner] + pos,
        len(old_vals) + add_off[owner] + (pos - old_counts[owner]),
    )
    values = pa.concat_arrays([old_vals.cast(pa.string()), pa.array(add_vals, pa.string())])
    return pa.ListArray.from_arrays(pa.array(offsets), values.take(pa.array(idx)))


def with_scores(
    table: pa.Table,
    scores: Mapping[str, Sequence[float] | np.ndarray | pa.Array],
    *,
    flags: Sequence[Sequence[str]] | None = None,
) -> pa.Table:
    """Return ``table`` with new float64 score fields (and flags) on its candidates.

    ``scores`` maps a field name to one value per candidate, aligned with the flattened
    candidates (pool 0's candidates first). NaN and None mean not scored (null). A field that
    already exists is replaced in place; new fields go after the existing ones. ``flags``
    (one list per candidate) are appended to each candidate's flags.
    """
    if "candidates" not in table.column_names:
        raise KeyError("pool table lacks column 'candidates'")
    lists = plain_list(table["candidates"])
    cands: pa.StructArray = lists.flatten()  # respects slicing and hidden values
    n = len(cands)
    cand_type: pa.StructType = cands.type
    old_scores: pa.StructArray = cands.field("scores")
    fields = {f.name: old_scores.field(i) for i, f in enumerate(old_scores.type)}
    for key, values in scores.items():
        arr = (
            values
            if isinstance(values, pa.Array)
            else pa.array(np.asarray(values, dtype=np.float64), from_pandas=True)
        )
        if len(arr) != n:
            raise ValueError(f"score {key!r} has {len(arr)} values for {n} candidates")
        arr = arr.cast(pa.float64())
        # Scores are finite floats: NaN / inf become null (not scored).
        fields[key] = pc.if_else(pc.is_finite(arr), arr, pa.scalar(None, pa.float64()))
    if fields:
        new_scores = pa.StructArray.from_arrays(list(fields.values()), names=list(fields))
    else:
        new_scores = empty_scores(n)
    new_flags = _merge_flags(cands.field("flags"), flags)
    children, names = [], []
    for i, f in enumerate(cand_type):
        col = cands.field(i)
        if f.name == "scores":
            col = new_scores
        elif f.name == "flags":
            col = new_flags
        children.append(col)
        names.append(f.name)
    new_cands = pa.StructArray.from_arrays(children, names=names, mask=pc.invert(cands.is_valid()))
    off = pa.array(offsets_of(list_lengths(lists)))
    new_lists = pa.ListArray.from_arrays(off, new_cands, mask=pc.invert(lists.is_valid()))
    i = table.column_names.index("candidates")
    return table.set_column(i, pa.field("candidates", new_lists.type), new_lists)


@dataclass
class Candidates:
    """A flat view of a pool table's candidates: ``row[k]`` is the pool row of candidate k.

    >>> import pyarrow as pa
    >>> v = candidates_view(pa.table({"candidates": [[{"response": "a"}, {"response": "b"}], []]}))
    >>> v.row.tolist(), v.responses, v.offsets.tolist()
    ([0, 0], ['a', 'b'], [0, 2, 2])
    """

    row: np.ndarray
    offsets: np.ndarray
    responses: list[str | None]
    struct: pa.StructArray

    def __len__(self) -> int:
        return len(self.row)

    def field(self, name: str) -> list[Any]:
        """One candidate field per candidate (None for a null candidate)."""
        return pc.struct_field(self.struct, name).to_pylist()


def candidates_view(table: pa.Table) -> Candidates:
    lists = plain_list(table["candidates"])
    struct = lists.flatten()
    lengths = list_lengths(lists)
    return Candidates(
        row=parents_of(lengths),
        offsets=offsets_of(lengths, np.int64),
        # struct_field honours a null candidate (field() would show its hidden child)
        responses=pc.struct_field(struct, "response").to_pylist(),
        struct=struct,
    )


def last_user_text(prompt: Sequence[Mapping[str, str]] | None) -> str:
    """Content of the last user turn of a prompt (the whole text if there is none).

    >>> last_user_text([{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}])
    'Q'
    """
    if not prompt:
        return ""
    for m in reversed(prompt):
        if m["role"] == "user":
            return m["content"]
    return "\n".join(m["content"] for m in prompt)


def seed_for(*parts: Any) -> int:
    """A 31-bit seed derived from ``parts`` (run seed, prompt_id, ...).

    >>> seed_for(0, "p-1") == seed_for(0, "p-1")
    True
    """
    return int(digest(*parts, size=8), 16) & 0x7FFFFFFF


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except TypeError:
        return repr(value)


@dataclass(frozen=True)
class Scorer(Stage):
    """Base of the scorers: subclasses declare a ``name`` field (the score name) and implement
    :meth:`score_fields` when they write more than ``name``.

    The stage's :attr:`name` (used in the funnel and rejects) is its score name.
    """

    requires: ClassVar[tuple[str, ...]] = ("prompt_id", "prompt", "candidates")
    # a progress bar inside each shard for the costly scorers (models, judges): on a
    # terminal unless set; never part of the config
    progress: bool | None = field(default=None, kw_only=True, metadata={"fingerprint": False})

    def score_fields(self) -> tuple[str, ...]:
        """The score fields this scorer writes (known before any model is loaded)."""
        return (self.name,)

    def provided_columns(self) -> tuple[str, ...]:
        return tuple(f"scores.{f}" for f in self.score_fields())

    def source(self) -> dict[str, Any]:
        """Model path and revision, or function name: overridden by each scorer."""
        return {"function": f"{type(self).__module__}.{type(self).__qualname__}"}

    def provenance(self) -> dict[str, Any]:
        """What the dataset card records about this score: scorer type, fields, source (model
        and revision, or function), the fingerprinted config and its fingerprint."""
        return {
            "scorer": type(self).__qualname__,
            "name": self.name,
            "fields": list(self.score_fields()),
            **self.source(),
            "config": {k: _jsonable(v) for k, v in self.config().items()},
            "fingerprint": self.fingerprint,
            "version": self.version,
        }


def model_source(path: str | None, loaded: Any = None, revision: str | None = None) -> dict:
    """Model path and the revision (commit hash) that was loaded, when transformers knows it."""
    commit = revision
    config = getattr(loaded, "config", None)
    if commit is None and config is not None:
        commit = getattr(config, "_commit_hash", None)
    return {"model": str(path) if path is not None else None, "revision": commit}


def pools_from_texts(
    prompts: Sequence[str | Sequence[Mapping[str, str]]],
    responses: Sequence[Sequence[str]],
    *,
    generator: str = "unknown",
    source: str | None = None,
    columns: Mapping[str, Sequence[Any]] | None = None,
) -> pa.Table:
    """A pool table from prompts and their responses (ids derived; no scores yet), handy
    for scoring texts directly. ``columns`` adds pool-level columns (gold answers, tests).

    >>> t = pools_from_texts(["2+2?"], [["4", "5"]], columns={"gold": ["4"]})
    >>> t.num_rows, t["candidates"].to_pylist()[0][1]["response"], t["gold"].to_pylist()
    (1, '5', ['4'])
    """
    from prefdata.ids import candidate_id, prompt_id
    from prefdata.schema import pool_schema

    rows = []
    for p, rs in zip(prompts, responses, strict=True):
        msgs = [{"role": "user", "content": p}] if isinstance(p, str) else [dict(m) for m in p]
        pid = prompt_id(msgs)
        cands = [
            {
                "candidate_id": candidate_id(pid, generator, i, r),
                "response": r,
                "generator": generator,
                "sample_index": i,
                "scores": {},
                "flags": [],
            }
            for i, r in enumerate(rs)
        ]
        rows.append(
            {
                "prompt_id": pid,
                "prompt": msgs,
                "source": source,
                "metadata": None,
                "candidates": cands,
            }
        )
    table = pa.Table.from_pylist(rows, schema=pool_schema())
    for k, v in (columns or {}).items():
        table = table.append_column(k, pa.array(list(v)))
    return table
