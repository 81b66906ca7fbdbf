"""Columnar building blocks shared by the export writers.

Message lists are built from flat ``role``/``content`` arrays plus per-row lengths with
numpy index arithmetic, so no writer loops over rows in Python. Validation returns one
reason (or ``None``) per row; the writers turn those into rejects.

>>> t = pa.table({"prompt": [[{"role": "user", "content": "Hi"}]], "chosen": ["Hello"]})
>>> m = Messages.of(t["prompt"])
>>> m.append("assistant", t["chosen"]).to_array().to_pylist()
[[{'role': 'user', 'content': 'Hi'}, {'role': 'assistant', 'content': 'Hello'}]]
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from prefdata.arrow import list_lengths, list_parents, offsets_of, one_chunk, parents_of, starts_of
from prefdata.io.atomic import atomic_path
from prefdata.pipeline import rejects_from
from prefdata.schema import PROMPT_END_ROLES, ROLES, empty_rejects


def column(table: pa.Table, name: str) -> pa.Array:
    """One column as a single (non-chunked) array."""
    return one_chunk(table[name])


def _as_array(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    return one_chunk(values).cast(pa.string())


@dataclass(frozen=True)
class Messages:
    """A column of message lists held flat: ``role_array``/``contents`` and per-row
    ``lengths``. Roles stay an Arrow array: building and converting numpy object arrays was
    half the cost of a TRL export.

    Null lists count as empty (validation rejects them before anything is written).
    """

    role_array: pa.Array  # string
    contents: pa.Array  # string
    lengths: np.ndarray  # int64, one per row

    @classmethod
    def of(cls, lists: pa.Array | pa.ChunkedArray) -> Messages:
        lists = one_chunk(lists)
        lengths = list_lengths(lists)
        flat = lists.flatten()
        # struct_field, not StructArray.field: a null message reads as a null role and
        # content, not as the values its struct still hides
        role, content = (pc.struct_field(flat, f).cast(pa.string()) for f in ("role", "content"))
        return cls(role, content, lengths)

    @classmethod
    def single(cls, role: str, contents: pa.Array | pa.ChunkedArray) -> Messages:
        """One message per row."""
        contents = _as_array(contents)
        n = len(contents)
        return cls(_repeat(role, n), contents, np.ones(n, dtype=np.int64))

    @property
    def num_rows(self) -> int:
        return len(self.lengths)

    @property
    def starts(self) -> np.ndarray:
        return starts_of(self.lengths)

    @property
    def row_ids(self) -> np.ndarray:
        """The row each flat message belongs to."""
        return parents_of(self.lengths)

    @property
    def positions(self) -> np.ndarray:
        """Index of each flat message within its row."""
        return np.arange(len(self.role_array)) - np.repeat(self.starts, self.lengths)

    def role_in(self, roles: Sequence[str]) -> np.ndarray:
        """Per flat message, whether its role is one of ``roles`` (null: False)."""
        hit = pc.is_in(self.role_array, pa.array(list(roles), pa.string()))
        return pc.fill_null(hit, False).to_numpy(zero_copy_only=False)

    def first_role_in(self, roles: Sequence[str]) -> np.ndarray:
        """Per row, whether its first message's role is one of ``roles`` (empty: False)."""
        return self._row_role_in(roles, self.starts)

    def last_role_in(self, roles: Sequence[str]) -> np.ndarray:
        """Per row, whether its last message's role is one of ``roles`` (empty: False)."""
        return self._row_role_in(roles, self.starts + self.lengths - 1)

    def _row_role_in(self, roles: Sequence[str], at: np.ndarray) -> np.ndarray:
        out = np.zeros(self.num_rows, dtype=bool)
        has = self.lengths > 0
        if has.any():
            picked = self.role_array.take(pa.array(at[has]))
            hit = pc.fill_null(pc.is_in(picked, pa.array(list(roles), pa.string())), False)
            out[has] = hit.to_numpy(zero_copy_only=False)
        return out

    def any_per_row(self, flat_mask: np.ndarray) -> np.ndarray:
        return np.bincount(self.row_ids[flat_mask], minlength=self.num_rows) > 0

    def take_flat(self, keep: np.ndarray) -> Messages:
        """Keep the flat messages where ``keep`` is true (rows keep their order)."""
        lengths = np.bincount(self.row_ids[keep], minlength=self.num_rows).astype(np.int64)
        idx = pa.array(np.flatnonzero(keep))
        return Messages(self.role_array.take(idx), self.contents.take(idx), lengths)

    def take_rows(self, rows: np.ndarray) -> Messages:
        rows = np.asarray(rows, dtype=np.int64)
        starts, lengths = self.starts[rows], self.lengths[rows]
        idx = np.repeat(starts - starts_of(lengths), lengths)
        idx = pa.array(idx + np.arange(lengths.sum()))
        return Messages(self.role_array.take(idx), self.contents.take(idx), lengths)

    def append(self, role: str, contents: pa.Array | pa.ChunkedArray) -> Messages:
        """Append one message with ``role`` to every row."""
        return self.concat(Messages.single(role, contents))

    def concat(self, other: Messages) -> Messages:
        """Row-wise concatenation: row i is self[i] followed by other[i]."""
        lengths = self.lengths + other.lengths
        total = int(lengths.sum())
        starts = starts_of(lengths)
        # Destination of each source element: own offset within the row + row start.
        dest_self = np.repeat(starts, self.lengths) + self.positions
        dest_other = np.repeat(starts + self.lengths, other.lengths) + other.positions
        mine, theirs = len(self.role_array), len(other.role_array)
        order = np.empty(total, dtype=np.int64)
        order[dest_self] = np.arange(mine)
        order[dest_other] = mine + np.arange(theirs)
        order = pa.array(order)
        roles = pa.concat_arrays([self.role_array, other.role_array]).take(order)
        contents = pa.concat_arrays([self.contents, other.contents]).take(order)
        return Messages(roles, contents, lengths)

    def struct_values(
        self, keys: tuple[str, str] = ("role", "content"), role_map: dict[str, str] | None = None
    ) -> pa.StructArray:
        role_arr = apply_map(self.role_array, role_map) if role_map else self.role_array
        fields = [pa.field(keys[0], pa.string()), pa.field(keys[1], pa.string())]
        return pa.StructArray.from_arrays([role_arr, self.contents], fields=fields)

    def to_array(
        self, keys: tuple[str, str] = ("role", "content"), role_map: dict[str, str] | None = None
    ) -> pa.ListArray:
        """The message lists as ``list<struct<role, content>>`` (or other key names)."""
        offsets = pa.array(offsets_of(self.lengths))
        return pa.ListArray.from_arrays(offsets, self.struct_values(keys, role_map))

    def to_struct(
        self, keys: tuple[str, str] = ("role", "content"), role_map: dict[str, str] | None = None
    ) -> pa.StructArray:
        """Rows of exactly one message as a struct column (not a list)."""
        if not (self.lengths == 1).all():
            raise ValueError("to_struct needs exactly one message per row")
        return self.struct_values(keys, role_map)


def apply_map(values: pa.Array, mapping: dict[str, str]) -> pa.Array:
    """Map role names through ``mapping`` (one vectorised pass per mapped name).

    >>> apply_map(pa.array(["user", "assistant", None]), {"user": "human"}).to_pylist()
    ['human', 'assistant', None]
    """
    out = values
    for src, dst in mapping.items():
        hit = pc.fill_null(pc.equal(values, src), False)
        out = pc.if_else(hit, pa.scalar(dst, pa.string()), out)
    return out


def _repeat(value: str, n: int) -> pa.Array:
    """``value`` n times as a plain string array."""
    return pa.repeat(pa.scalar(value, pa.string()), n)


# ---------------------------------------------------------------- validation


class Reasons:
    """One rejection reason (and field) per row; the first reason set wins.

    >>> r = Reasons(3)
    >>> r.add(np.array([True, False, True]), "a", "x")
    >>> r.add(np.array([True, True, False]), "b", "y")
    >>> r.reason.tolist(), r.ok.tolist()
    (['a', 'b', 'a'], [False, False, False])
    """

    def __init__(self, n: int) -> None:
        self.reason = np.full(n, None, dtype=object)
        self.field = np.full(n, None, dtype=object)
        self._open = np.ones(n, dtype=bool)  # no reason yet (cheaper than reason == None)

    def add(self, mask: np.ndarray, reason: str, field: str) -> None:
        mask = np.asarray(mask, dtype=bool) & self._open
        if mask.any():
            self.reason[mask] = reason
            self.field[mask] = field
            self._open &= ~mask

    @property
    def ok(self) -> np.ndarray:
        return self._open.copy()


def check_text(reasons: Reasons, table: pa.Table, name: str, *, nonblank: bool = False) -> None:
    """Reject rows whose ``name`` is null (or blank when ``nonblank``)."""
    arr = column(table, name)
    reasons.add(arr.is_null().to_numpy(zero_copy_only=False), f"{name} is null", name)
    if nonblank:
        blank = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(arr), ""), False)
        reasons.add(blank.to_numpy(zero_copy_only=False), f"{name} is empty", name)


def check_prompt(reasons: Reasons, table: pa.Table, msgs: Messages, name: str = "prompt") -> None:
    """The canonical prompt rules: not null, not empty, known roles, no null content,
    and the last turn is a user (or tool) turn."""
    arr = column(table, name)
    reasons.add(arr.is_null().to_numpy(zero_copy_only=False), f"{name} is null", name)
    reasons.add(msgs.lengths == 0, f"{name} is an empty message list", name)
    bad_role = ~msgs.role_in(ROLES)
    reasons.add(msgs.any_per_row(bad_role), f"{name} has a role outside {ROLES}", name)
    null_content = msgs.contents.is_null().to_numpy(zero_copy_only=False)
    reasons.add(msgs.any_per_row(null_content), f"{name} has a message with null content", name)
    reasons.add(
        (msgs.lengths > 0) & ~msgs.last_role_in(PROMPT_END_ROLES),
        f"{name} does not end with a user or tool turn",
        name,
    )


def check_distinct(reasons: Reasons, table: pa.Table, a: str, b: str) -> None:
    same = pc.fill_null(pc.equal(column(table, a), column(table, b)), False)
    reasons.add(same.to_numpy(zero_copy_only=False), f"{a} and {b} are identical", b)


# ---------------------------------------------------------------- results


class ExportResult(list):
    """The paths written (a ``list[Path]``), with the rows rejected and the rows written.

    ``rows_in == rows_written + rejects.num_rows`` always holds.
    """

    def __init__(
        self, paths: Sequence[Path], rejects: pa.Table, rows_in: int, rows_written: int
    ) -> None:
        super().__init__(paths)
        self.rejects = rejects
        self.rows_in = rows_in
        self.rows_written = rows_written
        if rows_in != rows_written + rejects.num_rows:
            raise AssertionError(
                f"export funnel broken: {rows_in} in != {rows_written} + {rejects.num_rows}"
            )

    @property
    def paths(self) -> list[Path]:
        return list(self)


@dataclass(frozen=True)
class Converted:
    """A converted table and the input rows it rejected (``REJECTS_SCHEMA``).

    ``source`` and ``kept`` (when the converter gives them) are its input and the input row
    of each converted row, so rows can still be moved to the rejects after conversion.
    """

    table: pa.Table
    rejects: pa.Table
    rows_in: int
    source: pa.Table | None = None
    kept: np.ndarray | None = None
    stage: str = "export"

    def reject_non_finite(self) -> Converted:
        """Move rows with a NaN or infinite float, at any depth, to the rejects (for JSON,
        which has no NaN: its loaders would read null). The reason names the first such
        field of the row.

        >>> t = pa.table({"margin": [1.0, float("nan")], "s": [{"x": float("inf")}, {"x": 0.0}]})
        >>> c = Converted(t, empty_rejects(), 2).reject_non_finite()
        >>> c.table.num_rows, c.rejects["row"].to_pylist(), c.rejects["field"].to_pylist()
        (0, [0, 1], ['s.x', 'margin'])
        >>> c.rejects["reason"][0].as_py()
        's.x is NaN or infinite (JSON has no NaN)'
        """
        n = self.table.num_rows
        names: list[str] = []
        first = np.full(n, -1)  # per row, the index in names of its first bad field
        for name, values, rows in _float_leaves(self.table):
            finite = pc.fill_null(pc.is_finite(values), True).to_numpy(zero_copy_only=False)
            hit = np.unique(rows[~finite])
            first[hit[first[hit] < 0]] = len(names)
            names.append(name)
        bad = np.flatnonzero(first >= 0)
        if not bad.size:
            return self
        source = self.table if self.source is None else self.source
        kept = np.arange(n) if self.kept is None else np.asarray(self.kept)
        rows = kept[bad]
        fields = [names[k] for k in first[bad]]
        rejects = rejects_from(
            source.take(pa.array(rows, pa.int64())),
            self.stage,
            [f"{f} is NaN or infinite (JSON has no NaN)" for f in fields],
            field=fields,
            rows=rows,
        )
        rejects = pa.concat_tables([self.rejects.cast(rejects.schema), rejects])
        rejects = rejects.take(pc.sort_indices(rejects["row"]))  # input order, as elsewhere
        ok = np.ones(n, dtype=bool)
        ok[bad] = False
        table = self.table.filter(pa.array(ok))
        return Converted(table, rejects, self.rows_in, source, kept[ok], self.stage)


def finish(
    source: pa.Table,
    reasons: Reasons,
    stage: str,
    build: Callable[[pa.Table, np.ndarray], pa.Table],
) -> Converted:
    """Split ``source`` by ``reasons``, convert the kept rows with ``build(kept, kept_idx)``."""
    ok = reasons.ok
    keep_idx = np.flatnonzero(ok)
    bad_idx = np.flatnonzero(~ok)
    rejects = (
        rejects_from(
            source.take(pa.array(bad_idx, pa.int64())),
            stage,
            list(reasons.reason[bad_idx]),
            field=list(reasons.field[bad_idx]),
            rows=bad_idx,
        )
        if len(bad_idx)
        else empty_rejects()
    )
    # every row kept (the usual case): no copy of the whole table
    kept = source if not len(bad_idx) else source.take(pa.array(keep_idx, pa.int64()))
    return Converted(build(kept, keep_idx), rejects, source.num_rows, source, keep_idx, stage)


# ---------------------------------------------------------------- writing


def write_jsonl(table: pa.Table, path: Path) -> Path:
    """JSON Lines through polars (columnar, deterministic key order = column order).

    Non-finite floats, at any depth, are refused: JSON has no NaN and the loaders would
    read null. The converters reject such rows first; this guards the writer itself.
    """
    for name, values, _ in _float_leaves(table):
        finite = pc.fill_null(pc.is_finite(values), True)
        if not pc.all(finite).as_py():
            raise ValueError(f"column {name!r} has NaN or infinite values")
    df = pl.from_arrow(table) if table.num_rows else None
    if df is None:
        return atomic_path(path, lambda p: p.write_bytes(b""))
    return atomic_path(path, lambda p: df.write_ndjson(p))


def _float_leaves(table: pa.Table) -> list[tuple[str, pa.Array, np.ndarray]]:
    """Every floating-point leaf of ``table`` (inside lists and structs too), flattened,
    with the table row of each value.

    >>> t = pa.table({"r": [[1.0, 2.0], [3.0]], "s": [{"x": 0.5}, {"x": 1.5}], "n": [1, 2]})
    >>> [(name, len(v), rows.tolist()) for name, v, rows in _float_leaves(t)]
    [('r', 3, [0, 0, 1]), ('s.x', 2, [0, 1])]
    """

    def walk(name: str, arr: pa.Array, rows: np.ndarray) -> list:
        t = arr.type
        if pa.types.is_floating(t):
            return [(name, arr, rows)]
        if pa.types.is_list(t) or pa.types.is_large_list(t):
            return walk(name, arr.flatten(), rows[list_parents(arr)])
        if pa.types.is_struct(t):
            return [
                leaf
                for i, f in enumerate(t)
                for leaf in walk(f"{name}.{f.name}", pc.struct_field(arr, [i]), rows)
            ]
        return []

    rows = np.arange(table.num_rows)
    return [leaf for name in table.column_names for leaf in walk(name, column(table, name), rows)]


def check_finite(reasons: Reasons, table: pa.Table, name: str) -> None:
    """Reject rows whose float ``name`` is NaN or infinite (null is left to the caller)."""
    if name not in table.column_names:
        return
    finite = pc.fill_null(pc.is_finite(column(table, name).cast(pa.float64())), True)
    reasons.add(~finite.to_numpy(zero_copy_only=False), f"{name} is NaN or infinite", name)


_VALUE_TYPES = ("bool", "int8", "int16", "int32", "int64", "float32", "float64", "string")


def _feature(t: pa.DataType) -> dict | None:
    """``datasets.Features.to_dict()`` of one Arrow type, for the plain types exports
    hold (None: another type, which datasets itself describes)."""
    if pa.types.is_large_string(t) or pa.types.is_string(t):
        return {"dtype": "string", "_type": "Value"}
    if str(t) in _VALUE_TYPES:
        return {"dtype": str(t), "_type": "Value"}
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        inner = _feature(t.value_type)
        return None if inner is None else {"feature": inner, "_type": "List"}
    if pa.types.is_struct(t):
        fields = {f.name: _feature(f.type) for f in t}
        return None if None in fields.values() else fields
    return None


def hf_features(schema: pa.Schema) -> dict:
    """What ``datasets.Features.from_arrow_schema(schema).to_dict()`` gives, without
    importing datasets (a second of start-up) for the types exports hold.

    >>> msg = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    >>> hf_features(pa.schema([("prompt", msg), ("label", pa.bool_())]))["label"]
    {'dtype': 'bool', '_type': 'Value'}
    """
    features = {f.name: _feature(f.type) for f in schema}
    if None in features.values():
        from datasets import Features

        return Features.from_arrow_schema(schema).to_dict()
    return features


def write_parquet_hf(table: pa.Table, path: Path) -> Path:
    """Parquet with the ``huggingface`` features metadata (what ``Dataset.to_parquet`` writes),
    so ``load_dataset("parquet", ...)`` restores the exact feature types."""
    # The same key and JSON that datasets' own writer stores, without building a Dataset
    # (which cost more than the conversion itself on large exports).
    features = hf_features(table.schema)
    meta = {b"huggingface": json.dumps({"info": {"features": features}}).encode()}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
    options = {
        "row_group_size": 100_000,
        # texts and ids are mostly unique: a dictionary would be built, overflow and be
        # dropped; roles repeat. No min/max statistics: nothing filters on message text.
        # Together 2.3x faster writes (and smaller files) than pyarrow's defaults.
        "use_dictionary": [p for p in _leaf_paths(table.schema) if p.rsplit(".", 1)[-1] == "role"],
        "write_statistics": False,
    }
    return atomic_path(path, lambda p: pq.write_table(table, str(p), **options))


def _leaf_paths(schema: pa.Schema) -> list[str]:
    """Parquet column paths of every leaf (``prompt.list.element.role``, ...).

    >>> msg = pa.struct([("role", pa.string()), ("content", pa.string())])
    >>> _leaf_paths(pa.schema([("prompt", pa.list_(msg)), ("label", pa.bool_())]))
    ['prompt.list.element.role', 'prompt.list.element.content', 'label']
    """

    def walk(t: pa.DataType, path: str) -> list[str]:
        if pa.types.is_list(t) or pa.types.is_large_list(t):
            return walk(t.value_type, f"{path}.list.element")
        if pa.types.is_struct(t):
            return [leaf for f in t for leaf in walk(f.type, f"{path}.{f.name}")]
        return [path]

    return [leaf for f in schema for leaf in walk(f.type, f.name)]


def write_json(obj: object, path: Path) -> Path:
    text = json.dumps(obj, indent=2, ensure_ascii=False) + "\n"
    return atomic_path(path, lambda p: p.write_text(text, encoding="utf-8"))


def table_kind(table: pa.Table) -> str:
    """``pair``, ``list`` or ``unpaired``, from the columns present."""
    from prefdata.validate import record_type

    kind = record_type(table)
    if kind in ("pair", "list", "unpaired"):
        return kind
    names = set(table.column_names)
    raise ValueError(
        f"cannot tell the record type of a table with columns {sorted(names)}; expected a "
        "pair (chosen, rejected), list (responses) or unpaired (completion, label) table"
    )


def keep_columns(
    source: pa.Table, out: dict[str, pa.Array], keep: Sequence[str] | str, consumed: set[str]
) -> dict[str, pa.Array]:
    """Add the extra columns named in ``keep`` (``"all"``: every column not consumed)."""
    names = (
        [c for c in source.column_names if c not in consumed and c not in out]
        if keep == "all"
        else list(keep)
    )
    for name in names:
        if name not in source.column_names:
            raise KeyError(f"cannot keep column {name!r}: the input has {source.column_names}")
        if name not in out:
            out[name] = column(source, name)
    return out
