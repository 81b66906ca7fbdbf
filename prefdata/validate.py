"""Check a pool table against the pool record type (``prefdata/schemas/pool.json``).

:func:`validate` returns every problem it finds as a :class:`ValidationError` naming the row
and the field; it never raises on bad data. Table-level problems (a missing column, a column
whose type cannot hold the field) carry ``row == -1``. The checks run columnar (pyarrow and
numpy over flattened lists); only ``metadata`` JSON is parsed per row.

>>> import pyarrow as pa
>>> from prefdata.schema import pool_schema
>>> t = pa.Table.from_pylist(
...     [{"prompt_id": "p", "prompt": [{"role": "assistant", "content": "Hi"}], "source": None,
...       "metadata": None, "candidates": [{"candidate_id": "c", "response": None,
...       "generator": None, "scores": {}, "flags": []}]}],
...     schema=pool_schema(),
... )
>>> for e in validate(t):
...     print(e)
row 0, field prompt: ends with an assistant turn; a prompt must end with a user or tool turn
row 0, field candidates[0].response: not a string (null)
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prefdata.arrow import flatten_list, list_lengths
from prefdata.schema import PROMPT_END_ROLES, ROLES, conform_types

REQUIRED_COLUMNS = ("prompt_id", "prompt", "source", "metadata", "candidates")
REQUIRED_CANDIDATE_FIELDS = ("candidate_id", "response", "generator", "scores", "flags")


@dataclass(frozen=True)
class ValidationError:
    """One problem: the row (``-1`` for the whole table), the field path, and why.

    >>> str(ValidationError(3, "candidates[1].response", "not a string"))
    'row 3, field candidates[1].response: not a string'
    """

    row: int
    field: str
    reason: str

    def __str__(self) -> str:
        where = f"row {self.row}" if self.row >= 0 else "table"
        return f"{where}, field {self.field}: {self.reason}"


def _is_string(t: pa.DataType) -> bool:
    return (
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_string_view(t)
        or pa.types.is_null(t)
    )


def _is_int(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_null(t)


def _is_number(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_null(t)


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t)


def _type_name(t: pa.DataType) -> str:
    return str(t)


def _valid_mask(arr: pa.Array) -> np.ndarray:
    return np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)


def _check_prompt_id(col: pa.Array, out: list[ValidationError]) -> None:
    valid = _valid_mask(col)
    for r in np.flatnonzero(~valid):
        out.append(ValidationError(int(r), "prompt_id", "missing (null)"))
    empty = np.asarray(pc.fill_null(pc.equal(pc.utf8_length(col), 0), False), dtype=bool)
    for r in np.flatnonzero(empty):
        out.append(ValidationError(int(r), "prompt_id", "empty string"))
    codes = pc.dictionary_encode(col).indices.to_numpy(zero_copy_only=False)
    codes = np.where(valid, np.nan_to_num(codes, nan=-1), -1).astype(np.int64)
    seen = codes >= 0
    if not seen.any():
        return
    uniq, first = np.unique(codes[seen], return_index=True)
    first_row = np.full(uniq.max() + 1, -1, dtype=np.int64)
    first_row[uniq] = np.flatnonzero(seen)[first]
    rows = np.flatnonzero(seen)
    dup = rows[first_row[codes[rows]] != rows]
    values = col.take(pa.array(dup)).to_pylist()  # only the duplicates go to Python
    for r, value in zip(dup, values, strict=True):
        out.append(
            ValidationError(
                int(r),
                "prompt_id",
                f"duplicate prompt_id {value!r} (first at row {first_row[codes[r]]})",
            )
        )


def check_prompt(col: pa.Array, out: list[ValidationError]) -> None:
    """Append the problems of a prompt column (message lists) to ``out``: table-level ones
    with row -1, then one per bad row."""
    t = col.type
    if not (_is_list(t) and pa.types.is_struct(t.value_type)):
        out.append(
            ValidationError(-1, "prompt", f"type {_type_name(t)}; expected a list of messages")
        )
        return
    msg = t.value_type
    for name in ("role", "content"):
        if msg.get_field_index(name) < 0:
            out.append(ValidationError(-1, f"prompt[].{name}", "missing field"))
            return
        if not _is_string(msg.field(name).type):
            out.append(
                ValidationError(
                    -1,
                    f"prompt[].{name}",
                    f"type {_type_name(msg.field(name).type)}; expected string",
                )
            )
            return
    valid = _valid_mask(col)
    lengths = list_lengths(col)
    for r in np.flatnonzero(~valid):
        out.append(ValidationError(int(r), "prompt", "missing (null); expected a list of messages"))
    for r in np.flatnonzero(valid & (lengths == 0)):
        out.append(ValidationError(int(r), "prompt", "empty list; a prompt needs a message"))
    flat = flatten_list(col)
    if len(flat.values) == 0:
        return
    msg_valid = _valid_mask(flat.values)
    for k in np.flatnonzero(~msg_valid):
        out.append(ValidationError(int(flat.parents[k]), f"prompt[{flat.pos[k]}]", "null message"))
    # an all-null field reads as null-typed: its values are nulls of strings
    roles = pc.struct_field(flat.values, "role").cast(pa.string())
    content = pc.struct_field(flat.values, "content").cast(pa.string())
    role_ok = np.asarray(pc.fill_null(pc.is_in(roles, pa.array(ROLES)), False), dtype=bool)
    role_list = None
    for k in np.flatnonzero(msg_valid & ~role_ok):
        role_list = role_list or roles.to_pylist()
        out.append(
            ValidationError(
                int(flat.parents[k]),
                f"prompt[{flat.pos[k]}].role",
                f"{role_list[k]!r} is not one of {', '.join(ROLES)}",
            )
        )
    content_ok = _valid_mask(content)
    for k in np.flatnonzero(msg_valid & ~content_ok):
        out.append(
            ValidationError(
                int(flat.parents[k]), f"prompt[{flat.pos[k]}].content", "not a string (null)"
            )
        )
    # The last message of each non-empty prompt must be a user or tool turn.
    last = np.flatnonzero(np.r_[flat.parents[1:] != flat.parents[:-1], True])
    end_ok = np.asarray(
        pc.fill_null(pc.is_in(roles.take(pa.array(last)), pa.array(PROMPT_END_ROLES)), False),
        dtype=bool,
    )
    bad_last = last[~end_ok & role_ok[last] & msg_valid[last]]
    if len(bad_last):
        role_list = role_list or roles.to_pylist()
    for k in bad_last:
        role = role_list[k]
        article = "an" if str(role)[:1] in "aeiou" else "a"
        out.append(
            ValidationError(
                int(flat.parents[k]),
                "prompt",
                f"ends with {article} {role} turn; a prompt must end with a user or tool turn",
            )
        )
    # A prompt whose every message is blank says nothing.
    blank = np.asarray(pc.fill_null(pc.equal(pc.utf8_trim_whitespace(content), ""), False))
    blank &= msg_valid
    blanks = np.bincount(flat.parents, weights=blank, minlength=len(col))
    for r in np.flatnonzero((lengths > 0) & (blanks == lengths)):
        out.append(ValidationError(int(r), "prompt", "empty prompt (every message is blank)"))


def _check_candidates(col: pa.Array, out: list[ValidationError]) -> None:
    t = col.type
    if not (_is_list(t) and pa.types.is_struct(t.value_type)):
        out.append(
            ValidationError(
                -1, "candidates", f"type {_type_name(t)}; expected a list of candidates"
            )
        )
        return
    cand = t.value_type
    bad_type = False
    for name in REQUIRED_CANDIDATE_FIELDS:
        if cand.get_field_index(name) < 0:
            out.append(ValidationError(-1, f"candidates[].{name}", "missing field"))
            bad_type = True
    expect = {
        "candidate_id": (_is_string, "string"),
        "response": (_is_string, "string"),
        "generator": (_is_string, "string"),
        "finish_reason": (_is_string, "string"),
        "sample_index": (_is_int, "integer"),
        "seed": (_is_int, "integer"),
        "num_tokens": (_is_int, "integer"),
    }
    for name, (ok, want) in expect.items():
        if cand.get_field_index(name) >= 0 and not ok(cand.field(name).type):
            out.append(
                ValidationError(
                    -1,
                    f"candidates[].{name}",
                    f"type {_type_name(cand.field(name).type)}; expected {want}",
                )
            )
            bad_type = True
    if cand.get_field_index("scores") >= 0:
        st = cand.field("scores").type
        if not pa.types.is_struct(st):
            out.append(
                ValidationError(
                    -1, "candidates[].scores", f"type {_type_name(st)}; expected a struct"
                )
            )
            bad_type = True
        else:
            for f in st:
                if not _is_number(f.type):
                    out.append(
                        ValidationError(
                            -1,
                            f"candidates[].scores.{f.name}",
                            f"type {_type_name(f.type)}; expected float64",
                        )
                    )
                    bad_type = True
    if cand.get_field_index("flags") >= 0:
        ft = cand.field("flags").type
        if not (pa.types.is_null(ft) or (_is_list(ft) and _is_string(ft.value_type))):
            out.append(
                ValidationError(
                    -1, "candidates[].flags", f"type {_type_name(ft)}; expected a list of strings"
                )
            )
            bad_type = True
    if bad_type:
        return

    for r in np.flatnonzero(~_valid_mask(col)):
        out.append(
            ValidationError(int(r), "candidates", "missing (null); expected a list (may be empty)")
        )
    flat = flatten_list(col)
    if len(flat.values) == 0:
        return
    where = lambda k, name="": f"candidates[{flat.pos[k]}]{name}"  # noqa: E731
    cvalid = _valid_mask(flat.values)
    for k in np.flatnonzero(~cvalid):
        out.append(ValidationError(int(flat.parents[k]), where(k), "null candidate"))

    def field(name: str) -> pa.Array:
        return pc.struct_field(flat.values, name)

    cid = field("candidate_id")
    cid_valid = _valid_mask(cid)
    for k in np.flatnonzero(cvalid & ~cid_valid):
        out.append(
            ValidationError(int(flat.parents[k]), where(k, ".candidate_id"), "missing (null)")
        )
    empty = np.asarray(pc.fill_null(pc.equal(pc.utf8_length(cid), 0), False), dtype=bool)
    for k in np.flatnonzero(cvalid & empty):
        out.append(ValidationError(int(flat.parents[k]), where(k, ".candidate_id"), "empty string"))
    # Duplicate candidate ids within a pool: compare each to the first with the same key.
    keyed = np.flatnonzero(cvalid & cid_valid & ~empty)
    if len(keyed):
        ids = cid.take(pa.array(keyed)).to_pylist()
        first: dict[tuple[int, str], int] = {}
        for k, v in zip(keyed.tolist(), ids, strict=True):
            key = (int(flat.parents[k]), v)
            if key in first:
                out.append(
                    ValidationError(
                        key[0],
                        where(k, ".candidate_id"),
                        f"duplicate candidate_id {v!r} in this pool "
                        f"(also candidates[{flat.pos[first[key]]}])",
                    )
                )
            else:
                first[key] = k

    resp = field("response")
    for k in np.flatnonzero(cvalid & ~_valid_mask(resp)):
        out.append(
            ValidationError(int(flat.parents[k]), where(k, ".response"), "not a string (null)")
        )

    for name in ("sample_index", "num_tokens"):
        if cand.get_field_index(name) < 0 or pa.types.is_null(cand.field(name).type):
            continue
        neg = np.asarray(pc.fill_null(pc.less(field(name), 0), False), dtype=bool)
        vals = field(name)
        for k in np.flatnonzero(cvalid & neg):
            out.append(
                ValidationError(
                    int(flat.parents[k]), where(k, f".{name}"), f"{vals[k].as_py()} is negative"
                )
            )

    scores = field("scores")
    for f in cand.field("scores").type:
        if not pa.types.is_floating(f.type):
            continue
        v = pc.struct_field(scores, f.name)
        nonfinite = np.asarray(pc.fill_null(pc.invert(pc.is_finite(v)), False), dtype=bool)
        for k in np.flatnonzero(cvalid & nonfinite):
            x = v[k].as_py()
            what = "NaN" if math.isnan(x) else str(x)
            out.append(
                ValidationError(
                    int(flat.parents[k]),
                    where(k, f".scores.{f.name}"),
                    f"{what}; scores must be finite or null",
                )
            )

    flags = field("flags")
    for k in np.flatnonzero(cvalid & ~_valid_mask(flags)):
        out.append(
            ValidationError(
                int(flat.parents[k]), where(k, ".flags"), "missing (null); expected a list"
            )
        )


def _check_metadata(col: pa.Array, out: list[ValidationError]) -> None:
    for r in np.flatnonzero(_valid_mask(col)):
        text = col[int(r)].as_py()
        try:
            value = json.loads(text)
        except ValueError as e:
            out.append(ValidationError(int(r), "metadata", f"invalid JSON: {e}"))
            continue
        if not isinstance(value, dict):
            out.append(
                ValidationError(int(r), "metadata", f"JSON {type(value).__name__}, not an object")
            )


def validate(table: pa.Table) -> list[ValidationError]:
    """Every problem of ``table`` as a pool table, ordered by row (table-level first).

    Checks: the required columns and their types; ``prompt_id`` non-empty and unique
    (duplicates name the first row); ``prompt`` a non-empty list of messages with a known
    role and string content, ending with a user or tool turn; ``candidates`` a list (may be
    empty) whose candidate ids are non-empty and unique within the pool, responses are
    strings, ``sample_index`` and ``num_tokens`` are not negative and scores are finite or
    null; ``metadata`` a JSON object (or null).

    >>> import pyarrow as pa
    >>> validate(pa.table({"prompt_id": ["a"]}))[0]
    ValidationError(row=-1, field='prompt', reason='missing column')
    """
    table = conform_types(table)
    out: list[ValidationError] = []
    names = set(table.column_names)
    for name in REQUIRED_COLUMNS:
        if name not in names:
            out.append(ValidationError(-1, name, "missing column"))

    def column(name: str) -> pa.Array | None:
        return table[name].combine_chunks() if name in names else None

    if (col := column("prompt_id")) is not None:
        if _is_string(col.type):
            _check_prompt_id(col.cast(pa.string()), out)
        else:
            out.append(ValidationError(-1, "prompt_id", f"type {col.type}; expected string"))
    if (col := column("prompt")) is not None:
        check_prompt(col, out)
    for name in ("source", "metadata"):
        if (col := column(name)) is not None and not _is_string(col.type):
            out.append(ValidationError(-1, name, f"type {col.type}; expected string"))
    if (col := column("metadata")) is not None and _is_string(col.type):
        _check_metadata(col, out)
    if (col := column("candidates")) is not None:
        _check_candidates(col, out)
    order = {"prompt_id": 0, "prompt": 1, "source": 2, "metadata": 3, "candidates": 4}
    return sorted(out, key=lambda e: (e.row, order.get(e.field.split("[")[0].split(".")[0], 9)))


def record_type(table: pa.Table | pa.Schema) -> str | None:
    """Which prefdata record type a table holds, judged by its columns: ``pool``, ``pair``,
    ``list``, ``unpaired``, or None (not a prefdata record table, e.g. a trainer export).

    >>> record_type(pa.schema([("prompt_id", pa.string()), ("chosen", pa.string()),
    ...                        ("rejected", pa.string())]))
    'pair'
    """
    schema = table if isinstance(table, pa.Schema) else table.schema
    names = set(schema.names)
    if "candidates" in names:
        return "pool"
    if {"chosen", "rejected"} <= names:
        return "pair" if _is_string(schema.field("chosen").type) else None
    if "responses" in names:
        return "list"
    if {"completion", "label"} <= names:
        return "unpaired" if _is_string(schema.field("completion").type) else None
    return None


def validate_records(table: pa.Table, kind: str) -> list[ValidationError]:
    """Row-level errors of a pair, list or unpaired table against its JSON Schema in
    ``schemas/`` (types, required fields, ranges), plus the prompt rules of pools (a
    non-empty conversation ending with a user or tool turn).

    >>> from prefdata.schema import PAIR_SCHEMA
    >>> t = pa.Table.from_pylist([{"prompt_id": "p", "prompt": [{"role": "user",
    ...     "content": "Q"}], "chosen": "A", "rejected": None, "strategy": "s"}],
    ...     schema=PAIR_SCHEMA)
    >>> print(validate_records(t, "pair")[0])
    row 0, field rejected: None is not of type 'string'
    """
    import jsonschema
    from referencing import Registry, Resource

    from prefdata.schema import RECORD_TYPES, json_schema

    if kind == "pool":
        return validate(table)
    registry = Registry().with_resources(
        (f"{t}.json", Resource.from_contents(json_schema(t))) for t in RECORD_TYPES
    )
    validator = jsonschema.Draft202012Validator(json_schema(kind), registry=registry)
    table = conform_types(table)
    out: list[ValidationError] = []
    if "prompt" in table.column_names:
        check_prompt(table["prompt"].combine_chunks(), out)
    prompt_rows = {e.row for e in out}
    for i, row in enumerate(table.to_pylist()):
        for err in validator.iter_errors(row):
            path = ".".join(str(p) for p in err.absolute_path)
            if path.startswith("prompt") and i in prompt_rows:
                continue  # already reported with the pool rules
            out.append(ValidationError(i, path or "(row)", err.message))
    if kind == "pair":
        out += pair_conflicts(table)
    return sorted(out, key=lambda e: (e.row, e.field))


def pair_conflicts(table: pa.Table) -> list[ValidationError]:
    """Pairs that record no preference: chosen and rejected the same text, or a pair that
    another row of the same prompt records the other way round (both rows reported).

    >>> t = pa.table({"prompt_id": ["p", "p", "q"], "chosen": ["A", "B", "x"],
    ...               "rejected": ["B", "A", "x"]})
    >>> for e in pair_conflicts(t):
    ...     print(e.row, e.field, e.reason[:41])
    0 chosen contradicts row 1, which prefers this row
    1 chosen contradicts row 0, which prefers this row
    2 rejected chosen and rejected are the same text
    """
    import polars as pl

    if not {"prompt_id", "chosen", "rejected"} <= set(table.column_names) or not table.num_rows:
        return []
    # one annotator's own rows only: two annotators who disagree are data, not a conflict
    who = ["annotator_id"] if "annotator_id" in table.column_names else []
    df = pl.from_arrow(table.select(["prompt_id", "chosen", "rejected", *who])).with_row_index(
        "row"
    )
    out = [
        ValidationError(int(i), "rejected", "chosen and rejected are the same text")
        for i in df.filter(pl.col("chosen") == pl.col("rejected"))["row"].to_list()
    ]
    flipped = df.select(
        pl.col("row").alias("other"), "prompt_id", *who, chosen="rejected", rejected="chosen"
    )
    hits = (
        df.filter(pl.col("chosen") != pl.col("rejected"))
        .join(flipped, on=["prompt_id", "chosen", "rejected", *who], nulls_equal=True)
        .group_by("row")
        .agg(pl.col("other").min())
        .sort("row")
    )
    out += [
        ValidationError(
            int(row),
            "chosen",
            f"contradicts row {other}, which prefers this row's rejected response to its "
            "chosen one",
        )
        for row, other in hits.iter_rows()
    ]
    return sorted(out, key=lambda e: e.row)


__all__ = [
    "REQUIRED_COLUMNS",
    "ValidationError",
    "check_prompt",
    "pair_conflicts",
    "record_type",
    "validate",
    "validate_records",
]
