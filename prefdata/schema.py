"""The canonical record types and their Arrow schemas.

The JSON Schema files in ``schemas/`` (shipped as ``prefdata/schemas``) are the single source
of truth: the Arrow schemas below are derived from them at import time.

>>> POOL_SCHEMA.names
['prompt_id', 'prompt', 'source', 'metadata', 'candidates']
>>> str(MESSAGE_TYPE)
'struct<role: string, content: string>'
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import pyarrow as pa

RECORD_TYPES = ("pool", "pair", "list", "unpaired")
ROLES = ("system", "user", "assistant", "tool")
PROMPT_END_ROLES = ("user", "tool")

_FORMATS = {"int32": pa.int32(), "int64": pa.int64(), "float64": pa.float64()}


@cache
def json_schema(record_type: str) -> dict[str, Any]:
    """The JSON Schema of ``record_type`` (one of pool, pair, list, unpaired).

    >>> json_schema("pair")["title"]
    'pair'
    """
    if record_type not in RECORD_TYPES:
        raise ValueError(f"unknown record type {record_type!r}; expected one of {RECORD_TYPES}")
    text = resources.files("prefdata").joinpath("schemas", f"{record_type}.json").read_text()
    return json.loads(text)


def _resolve(ref: str, root: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The node a ``$ref`` points at, and the document it lives in."""
    doc, _, pointer = ref.partition("#")
    root = json_schema(doc.removesuffix(".json")) if doc else root
    node = root
    for part in pointer.strip("/").split("/"):
        node = node[part]
    return node, root


def arrow_type(node: dict[str, Any], root: dict[str, Any]) -> pa.DataType:
    """Arrow type of a JSON Schema node.

    An object with ``additionalProperties`` (open keys, such as ``scores``) maps to a struct
    whose fields are only known from the data: it is returned as an empty struct.

    >>> arrow_type({"type": ["integer", "null"], "format": "int32"}, {})
    DataType(int32)
    """
    if "$ref" in node:
        return arrow_type(*_resolve(node["$ref"], root))
    types = node["type"] if isinstance(node["type"], list) else [node["type"]]
    kind = next(t for t in types if t != "null")
    if kind == "string":
        return pa.string()
    if kind == "boolean":
        return pa.bool_()
    if kind in ("integer", "number"):
        return _FORMATS[node.get("format", "int64" if kind == "integer" else "float64")]
    if kind == "array":
        return pa.list_(arrow_type(node["items"], root))
    if kind == "object":
        props = node.get("properties", {})
        return pa.struct([pa.field(k, arrow_type(v, root)) for k, v in props.items()])
    raise ValueError(f"no Arrow type for JSON Schema type {kind!r}")


def arrow_schema(record_type: str) -> pa.Schema:
    """Arrow schema of a record type, derived from its JSON Schema.

    >>> arrow_schema("unpaired").field("label").type
    DataType(bool)
    """
    root = json_schema(record_type)
    return pa.schema(
        [
            pa.field(k, arrow_type(v, root))
            for k, v in root["properties"].items()
            if not v.get("x-optional-column")  # present only where the data has it
        ],
    )


POOL_SCHEMA = arrow_schema("pool")
PAIR_SCHEMA = arrow_schema("pair")
LIST_SCHEMA = arrow_schema("list")
UNPAIRED_SCHEMA = arrow_schema("unpaired")
MESSAGE_TYPE: pa.StructType = POOL_SCHEMA.field("prompt").type.value_type
MESSAGES_TYPE = pa.list_(MESSAGE_TYPE)
CANDIDATE_TYPE: pa.StructType = POOL_SCHEMA.field("candidates").type.value_type

REJECTS_SCHEMA = pa.schema(
    [
        pa.field("stage", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("row", pa.int64()),
        pa.field("prompt_id", pa.string()),
        pa.field("field", pa.string()),
        pa.field("record", pa.string()),
    ]
)
"""Rejected rows: the stage, a reason, the input row (when known), and the row as JSON."""


def candidate_type(score_names: list[str] | tuple[str, ...] = ()) -> pa.StructType:
    """The candidate struct with one float64 score field per scorer.

    >>> candidate_type(["rm"]).field("scores").type
    StructType(struct<rm: double>)
    """
    scores = pa.struct([pa.field(n, pa.float64()) for n in score_names])
    return pa.struct(
        [f if f.name != "scores" else pa.field("scores", scores) for f in CANDIDATE_TYPE]
    )


def pool_schema(score_names: list[str] | tuple[str, ...] = ()) -> pa.Schema:
    """The pool schema with the given score fields.

    >>> pool_schema(["a", "b"]).field("candidates").type.value_type.field("scores").type.num_fields
    2
    """
    i = POOL_SCHEMA.get_field_index("candidates")
    return POOL_SCHEMA.set(i, pa.field("candidates", pa.list_(candidate_type(score_names))))


def score_names(table: pa.Table | pa.Schema) -> list[str]:
    """Names of the score fields of a pool table (or schema).

    >>> score_names(empty_pools(["judge"]))
    ['judge']
    """
    schema = table if isinstance(table, pa.Schema) else table.schema
    cand = schema.field("candidates").type.value_type
    if cand.get_field_index("scores") < 0:
        return []
    return [f.name for f in cand.field("scores").type]


def empty_pools(scores: list[str] | tuple[str, ...] = ()) -> pa.Table:
    """An empty pool table."""
    return pool_schema(scores).empty_table()


def empty_scores(n: int) -> pa.Array:
    """``n`` valid empty ``scores`` structs (pools before any scorer), in O(1) Python.

    >>> empty_scores(2).to_pylist()
    [{}, {}]
    """
    return pa.repeat(pa.scalar({}, pa.struct([])), n)


def empty_rejects() -> pa.Table:
    return REJECTS_SCHEMA.empty_table()


def _canonical(t: pa.DataType) -> pa.DataType:
    """Replace large and view variants by their plain forms (polars and DuckDB emit them)."""
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return pa.binary()
    if pa.types.is_large_list(t) or pa.types.is_list_view(t) or pa.types.is_list(t):
        return pa.list_(_canonical(t.value_type))
    if pa.types.is_large_list_view(t):
        return pa.list_(_canonical(t.value_type))
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, _canonical(f.type)) for f in t])
    return t


def conform(table: pa.Table) -> pa.Table:
    """Cast a pool table to the canonical layout: canonical column order first, plain
    string and list types, the candidate struct in schema order. Extra columns are kept
    after the canonical ones (with plain types).

    >>> import polars as pl
    >>> t = pl.DataFrame({"x": ["a"]}).to_arrow()
    >>> conform_types(t).schema.field("x").type
    DataType(string)
    """
    names = score_names(table) if "candidates" in table.column_names else []
    target = pool_schema(names)
    fields = []
    for f in target:
        if f.name not in table.column_names:
            raise KeyError(f"pool table lacks column {f.name!r}")
        fields.append(f)
    extra = [
        pa.field(n, _canonical(table.schema.field(n).type))
        for n in table.column_names
        if n not in target.names
    ]
    schema = pa.schema(fields + extra)
    return table.select(schema.names).cast(schema)


def conform_types(table: pa.Table) -> pa.Table:
    """Cast every column to its plain Arrow type (string not large_string, list not large_list)."""
    # Keyed by the schema's text: pyarrow's == ignores list child names (DuckDB's
    # list<l: ...>), which concat_tables compares. Stages see the same few schemas over
    # and over, so the walk runs once per schema (it was 0.5 ms a call).
    text = table.schema.to_string(show_schema_metadata=False)
    if text not in _PLAIN:
        schema = pa.schema([pa.field(f.name, _canonical(f.type)) for f in table.schema])
        if len(_PLAIN) >= 256:
            _PLAIN.clear()
        _PLAIN[text] = None if schema.to_string(show_schema_metadata=False) == text else schema
    target = _PLAIN[text]
    return table if target is None else table.cast(target)


_PLAIN: dict[str, pa.Schema | None] = {}  # schema text -> plain schema (None: already plain)
