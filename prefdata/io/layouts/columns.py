"""Reading a raw table's columns for a layout: typed arrays out, bad rows into
:class:`Rejects` (the row, the field and a reason), column-wise.

>>> rej = Rejects()
>>> scores(pa.array([1, None, float("nan")]), "rm", rej).to_pylist()
[1.0, None, nan]
>>> rej.items
{2: ('rm', 'score rm is nan; scores must be finite or null', None)}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prefdata.arrow import list_lengths, list_parents, np_bool, offsets_of
from prefdata.pipeline import rejects_from
from prefdata.schema import MESSAGE_TYPE, MESSAGES_TYPE, PROMPT_END_ROLES, REJECTS_SCHEMA, ROLES
from prefdata.validate import check_prompt

FLAGS_TYPE = pa.list_(pa.string())


class Rejects:
    """The first problem of each rejected input row: row -> (field, reason, prompt_id)."""

    def __init__(self) -> None:
        self.items: dict[int, tuple[str | None, str, str | None]] = {}
        self.records: dict[int, str] = {}  # rows as JSON, for rejects made without the input

    def add(self, row: int, field: str | None, reason: str, prompt_id: str | None = None) -> None:
        self.items.setdefault(int(row), (field, reason, prompt_id))

    def add_many(self, rows: np.ndarray, field: str | None, reason: str) -> None:
        """The same problem for many rows (each keeps its first problem)."""
        for r in np.asarray(rows).tolist():
            self.items.setdefault(int(r), (field, reason, None))

    def mask(self, rows: np.ndarray) -> np.ndarray:
        if not self.items:
            return np.zeros(len(rows), dtype=bool)
        return np.isin(rows, np.fromiter(self.items, dtype=np.int64))

    def table(self, raw: pa.Table | None, stage: str) -> pa.Table:
        """The rejects table: each row's record from ``raw``, or from :attr:`records` when
        ``raw`` is None."""
        if not self.items:
            return REJECTS_SCHEMA.empty_table()
        rows = sorted(self.items)
        if raw is None:
            base = pa.table({"_": pa.nulls(len(rows))})
        else:
            base = raw.take(pa.array(rows, pa.int64()))
        out = rejects_from(
            base,
            stage,
            [self.items[r][1] for r in rows],
            field=[self.items[r][0] for r in rows],
            rows=rows,
            prompt_ids=[self.items[r][2] for r in rows],
        )
        if raw is None:
            records = pa.array([self.records.get(r) for r in rows], pa.string())
            out = out.set_column(out.schema.get_field_index("record"), "record", records)
        return out


def is_string_type(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def is_message_list_type(t: pa.DataType) -> bool:
    return (pa.types.is_list(t) or pa.types.is_large_list(t)) and pa.types.is_struct(t.value_type)


def column(raw: pa.Table, name: str, what: str, layout: str) -> pa.Array:
    """Column ``name`` in one chunk, dictionaries decoded; KeyError naming it if absent."""
    if name not in raw.column_names:
        raise KeyError(
            f"layout {layout!r}: {what} column {name!r} not found; columns: {raw.column_names}"
        )
    col = raw[name].combine_chunks() if raw.num_rows else pa.array([], raw.schema.field(name).type)
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    return col


def pick(raw: pa.Table, given: str | None, defaults: Sequence[str], what: str, layout: str) -> str:
    """The column a layout reads: ``given``, else the first of ``defaults`` present."""
    if given is not None:
        return given
    for name in defaults:
        if name in raw.column_names:
            return name
    raise KeyError(
        f"layout {layout!r}: no {what} column (tried {list(defaults)}); pass "
        f"{what}_col=...; columns: {raw.column_names}"
    )


def user_messages(content: pa.Array) -> pa.Array:
    """One user message per string (nulls give a message with null content)."""
    n = len(content)
    values = pa.StructArray.from_arrays(
        [pa.repeat(pa.scalar("user"), n), content.cast(pa.string())],
        fields=list(MESSAGE_TYPE),
    )
    return pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32)), values)


def messages(col: pa.Array, name: str, rej: Rejects) -> pa.Array:
    """A prompt column (strings or message lists) as MESSAGES_TYPE; bad rows go to ``rej``."""
    t = col.type
    n = len(col)
    if pa.types.is_null(t):
        rej.add_many(np.arange(n), name, "missing prompt (null)")
        return pa.nulls(n, MESSAGES_TYPE)
    if is_string_type(t):
        rej.add_many(np.flatnonzero(~np_bool(col.is_valid())), name, "missing prompt (null)")
        blank = np_bool(pc.equal(pc.utf8_trim_whitespace(col), ""))
        rej.add_many(np.flatnonzero(blank), name, "empty prompt")
        return user_messages(col)
    if is_message_list_type(t):
        errors: list = []
        check_prompt(col, errors)
        table_level = [e for e in errors if e.row < 0]
        if table_level:
            e = table_level[0]
            rej.add_many(np.arange(n), name, f"{e.field.replace('prompt', name, 1)}: {e.reason}")
            return pa.nulls(n, MESSAGES_TYPE)
        for e in errors:
            reason = e.reason
            if e.field == "prompt" and reason.startswith("missing"):
                reason = "missing prompt (null)"
            elif e.field == "prompt" and reason.startswith("empty list"):
                reason = "empty prompt (no messages)"
            rej.add(e.row, e.field.replace("prompt", name, 1), reason)
        return col.cast(MESSAGES_TYPE)
    valid = np_bool(col.is_valid())
    rej.add_many(np.flatnonzero(valid), name, f"expected a string or a list of messages, got {t}")
    rej.add_many(np.flatnonzero(~valid), name, "missing prompt (null)")
    return pa.nulls(n, MESSAGES_TYPE)


def strings(col: pa.Array, name: str, rej: Rejects, what: str = "response") -> pa.Array:
    """A response column: strings; null or another type rejects the row."""
    if is_string_type(col.type):
        rej.add_many(
            np.flatnonzero(~np_bool(col.is_valid())), name, f"{what} is not a string (null)"
        )
        return col.cast(pa.string())
    rej.add_many(np.arange(len(col)), name, f"{what} is not a string ({col.type})")
    return pa.nulls(len(col), pa.string())


def optional_strings(col: pa.Array) -> pa.Array:
    """Generator-like columns: strings, other scalars cast to their text, nulls kept."""
    if is_string_type(col.type) or pa.types.is_null(col.type):
        return col.cast(pa.string())
    return pc.cast(col, pa.string())


def scores(col: pa.Array, name: str, rej: Rejects, field: str | None = None) -> pa.Array:
    """A score column as float64: null stays null; NaN, infinity or a non-number rejects."""
    field = field or name
    t = col.type
    if not (
        pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_null(t)
        or pa.types.is_boolean(t)
        or pa.types.is_decimal(t)
    ):
        rej.add_many(
            np.flatnonzero(np_bool(col.is_valid())), field, f"score {name} is not a number ({t})"
        )
        return pa.nulls(len(col), pa.float64())
    out = col.cast(pa.float64())
    for r in np.flatnonzero(np_bool(pc.invert(pc.is_finite(out)))):
        rej.add(r, field, f"score {name} is {out[r].as_py()}; scores must be finite or null")
    return out


def given_ids(col: pa.Array, name: str, rej: Rejects) -> pa.Array:
    """A prompt id column as strings; null or empty rejects the row."""
    ids_ = optional_strings(col)
    missing = ~np_bool(ids_.is_valid()) | np_bool(pc.equal(ids_, ""))
    rej.add_many(np.flatnonzero(missing), name, "missing prompt id (null or empty)")
    return ids_


def messages_ok(lists: pa.Array) -> np.ndarray:
    """Rows whose list is valid and every message has a known role and string content."""
    if not is_message_list_type(lists.type):
        return np.zeros(len(lists), bool)
    vt = lists.type.value_type
    if vt.get_field_index("role") < 0 or vt.get_field_index("content") < 0:
        return np.zeros(len(lists), bool)
    stringy = lambda t: is_string_type(t) or pa.types.is_null(t)  # noqa: E731 - all-null reads as null
    if not (stringy(vt.field("role").type) and stringy(vt.field("content").type)):
        return np.zeros(len(lists), bool)
    ok = np_bool(lists.is_valid())
    flat = lists.flatten()
    if len(flat):
        good = (
            np_bool(flat.is_valid())
            & np_bool(pc.is_in(pc.struct_field(flat, "role").cast(pa.string()), pa.array(ROLES)))
            & np_bool(pc.struct_field(flat, "content").is_valid())
        )
        bad = np.bincount(list_parents(lists)[~good], minlength=len(lists))
        ok &= bad == 0
    return ok


def plain_messages(lists: pa.Array) -> pa.Array:
    """Message lists with exactly (role, content), offsets from zero."""
    flat = lists.flatten()
    values = pa.StructArray.from_arrays(
        [
            pc.struct_field(flat, "role").cast(pa.string()),
            pc.struct_field(flat, "content").cast(pa.string()),
        ],
        fields=list(MESSAGES_TYPE.value_type),
    )
    return pa.ListArray.from_arrays(pa.array(offsets_of(list_lengths(lists))), values)


def message_problem(msgs: Any) -> tuple[str, str] | None:
    """Per-row check of a message list: (sub-field, reason) or None when fine."""
    if not isinstance(msgs, list):
        return "", f"expected a list of messages, got {type(msgs).__name__}"
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            return f"[{i}]", f"message is not an object ({type(m).__name__})"
        if m.get("role") not in ROLES:
            return f"[{i}].role", f"{m.get('role')!r} is not one of {', '.join(ROLES)}"
        if not isinstance(m.get("content"), str):
            return f"[{i}].content", f"not a string ({type(m.get('content')).__name__})"
    return None


def prompt_problem(msgs: list[dict]) -> str | None:
    """Why a (well-formed) message list cannot be a prompt, or None."""
    if not msgs or all(not m["content"].strip() for m in msgs):
        return "empty prompt"
    if msgs[-1]["role"] not in PROMPT_END_ROLES:
        return (
            f"prompt ends with a{'n' if msgs[-1]['role'] == 'assistant' else ''} "
            f"{msgs[-1]['role']} turn; it must end with a user or tool turn"
        )
    return None
