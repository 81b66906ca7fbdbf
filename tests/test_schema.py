"""schemas/*.json are the single source of truth for the Arrow schemas."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pyarrow as pa
import pytest
from referencing import Registry, Resource

from prefdata.io.parquet import read_parquet, write_parquet
from prefdata.schema import (
    LIST_SCHEMA,
    PAIR_SCHEMA,
    POOL_SCHEMA,
    RECORD_TYPES,
    UNPAIRED_SCHEMA,
    arrow_schema,
    conform,
    json_schema,
    pool_schema,
)

ROOT = Path(__file__).resolve().parents[1]


def _registry() -> Registry:
    return (
        Registry()
        .with_resources((f"{t}.json", Resource.from_contents(json_schema(t))) for t in RECORD_TYPES)
        .with_resources(
            (json_schema(t)["$id"], Resource.from_contents(json_schema(t))) for t in RECORD_TYPES
        )
    )


def _walk(node, path=""):
    """Yield (path, node) for every property node of a JSON Schema."""
    for name, prop in node.get("properties", {}).items():
        yield f"{path}.{name}", prop
        yield from _walk(prop, f"{path}.{name}")
        if "items" in prop:
            yield from _walk(prop["items"], f"{path}.{name}[]")
    for name, d in node.get("$defs", {}).items():
        yield f"$defs.{name}", d
        yield from _walk(d, f"$defs.{name}")


@pytest.mark.parametrize("record_type", RECORD_TYPES)
def test_top_level_schemas_folder_is_the_shipped_one(record_type):
    on_disk = json.loads((ROOT / "schemas" / f"{record_type}.json").read_text())
    assert on_disk == json_schema(record_type)
    jsonschema.Draft202012Validator.check_schema(on_disk)


@pytest.mark.parametrize("record_type", RECORD_TYPES)
def test_every_field_is_described(record_type):
    undocumented = [
        p
        for p, n in _walk(json_schema(record_type))
        if "$ref" not in n and not n.get("description")
    ]
    assert undocumented == []


def test_arrow_schemas_follow_the_json_schemas():
    def columns(kind: str) -> list[str]:  # optional columns appear only where data has them
        props = json_schema(kind)["properties"]
        return [k for k, v in props.items() if not v.get("x-optional-column")]

    assert POOL_SCHEMA.names == columns("pool")
    assert PAIR_SCHEMA.names == columns("pair")
    assert json_schema("pair")["properties"]["annotator_id"]["x-optional-column"] is True
    assert LIST_SCHEMA.names == columns("list")
    assert UNPAIRED_SCHEMA.names == columns("unpaired")
    cand = POOL_SCHEMA.field("candidates").type.value_type
    assert cand.field("sample_index").type == pa.int32()
    assert cand.field("seed").type == pa.int64()
    assert PAIR_SCHEMA.field("prompt").type == POOL_SCHEMA.field("prompt").type
    assert UNPAIRED_SCHEMA.field("label").type == pa.bool_()
    assert arrow_schema("list").field("responses").type.value_type.field("rank").type == pa.int32()


def _pool_rows():
    return [
        {
            "prompt_id": "p-1",
            "prompt": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
            ],
            "source": "test",
            "metadata": "{}",
            "candidates": [
                {
                    "candidate_id": "c-1",
                    "response": "Hello",
                    "generator": "m",
                    "sample_index": 0,
                    "seed": 7,
                    "finish_reason": "stop",
                    "num_tokens": 2,
                    "scores": {"rm": 1.5, "judge": None},
                    "flags": [],
                },
            ],
        },
        {
            "prompt_id": "p-2",
            "prompt": [{"role": "user", "content": "Bye"}],
            "source": None,
            "metadata": None,
            "candidates": [],
        },
    ]


def test_arrow_rows_validate_against_the_json_schema():
    table = pa.Table.from_pylist(_pool_rows(), schema=pool_schema(["rm", "judge"]))
    validator = jsonschema.Draft202012Validator(json_schema("pool"), registry=_registry())
    for row in table.to_pylist():
        validator.validate(row)
    broken = table.to_pylist()[0] | {"prompt": []}
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(broken)


def test_conform_restores_canonical_types_from_polars_and_duckdb():
    import duckdb
    import polars as pl

    table = pa.Table.from_pylist(_pool_rows(), schema=pool_schema(["rm", "judge"]))
    from_polars = pl.from_arrow(table).to_arrow()
    assert from_polars.schema != table.schema  # large_string / large_list
    assert conform(from_polars).equals(table)
    con = duckdb.connect()
    con.register("pools", table)
    from_duckdb = con.sql("SELECT * FROM pools").to_arrow_table()
    assert conform(from_duckdb).equals(table)


def test_parquet_round_trip_with_and_without_scores(tmp_path):
    scored = pa.Table.from_pylist(_pool_rows(), schema=pool_schema(["rm", "judge"]))
    rows = _pool_rows()
    for r in rows:
        for c in r["candidates"]:
            c["scores"] = {}
    bare = pa.Table.from_pylist(rows, schema=pool_schema())
    for t in (scored, bare):
        assert read_parquet(write_parquet(t, tmp_path / "t.parquet")).equals(t)
