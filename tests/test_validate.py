"""validate(): every problem named by row and field; agrees with the JSON Schema."""

from __future__ import annotations

import copy
import json
import math

import jsonschema
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prefdata.schema import json_schema, pool_schema
from prefdata.validate import ValidationError, validate


def cand(cid="c1", response="r", **kw):
    base = {
        "candidate_id": cid,
        "response": response,
        "generator": "m",
        "sample_index": 0,
        "seed": None,
        "finish_reason": None,
        "num_tokens": 3,
        "scores": {"rm": 0.5},
        "flags": [],
    }
    base.update(kw)
    return base


def pool(pid="p1", prompt=None, candidates=None, metadata=None):
    return {
        "prompt_id": pid,
        "prompt": prompt if prompt is not None else [{"role": "user", "content": "Hi"}],
        "source": "test",
        "metadata": metadata,
        "candidates": candidates if candidates is not None else [cand()],
    }


def table(rows):
    return pa.Table.from_pylist(rows, schema=pool_schema(["rm"]))


def strs(errors):
    return [str(e) for e in errors]


def test_valid_table_has_no_errors():
    rows = [pool("p1"), pool("p2", candidates=[]), pool("p3", metadata='{"k": 1}')]
    assert validate(table(rows)) == []
    assert validate(pool_schema().empty_table()) == []


def test_error_str_and_frozen():
    e = ValidationError(3, "candidates[1].response", "not a string")
    assert str(e) == "row 3, field candidates[1].response: not a string"
    with pytest.raises(AttributeError):
        e.row = 4  # type: ignore[misc]
    assert (
        str(ValidationError(-1, "prompt", "missing column"))
        == "table, field prompt: missing column"
    )


def test_row_errors_name_row_and_field():
    rows = [
        pool("p0"),
        pool("", candidates=[cand(), cand("c2", response=None)]),
        pool("p0"),
        pool("p3", prompt=[]),
        pool("p4", prompt=[{"role": "bot", "content": "x"}, {"role": "user", "content": None}]),
        pool(
            "p5", prompt=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
        ),
        pool("p6", candidates=[cand("c"), cand("c", sample_index=-1, num_tokens=-2)]),
        pool("p7", candidates=[cand(scores={"rm": math.nan}), cand("c2", scores={"rm": math.inf})]),
        pool("p8", metadata="not json"),
        pool("p9", metadata="[1]"),
        pool("p10", candidates=[cand(candidate_id=None, flags=None)]),
    ]
    t = table(rows)
    # a null candidates list and a null prompt
    t = t.set_column(
        4,
        "candidates",
        pa.array([*t["candidates"].to_pylist()[:-1], None], t.schema.field("candidates").type),
    )
    got = strs(validate(t))
    assert got == [
        "row 1, field prompt_id: empty string",
        "row 1, field candidates[1].response: not a string (null)",
        "row 2, field prompt_id: duplicate prompt_id 'p0' (first at row 0)",
        "row 3, field prompt: empty list; a prompt needs a message",
        "row 4, field prompt[0].role: 'bot' is not one of system, user, assistant, tool",
        "row 4, field prompt[1].content: not a string (null)",
        "row 5, field prompt: ends with an assistant turn; "
        "a prompt must end with a user or tool turn",
        "row 6, field candidates[1].candidate_id: duplicate candidate_id 'c' in this pool "
        "(also candidates[0])",
        "row 6, field candidates[1].sample_index: -1 is negative",
        "row 6, field candidates[1].num_tokens: -2 is negative",
        "row 7, field candidates[0].scores.rm: NaN; scores must be finite or null",
        "row 7, field candidates[1].scores.rm: inf; scores must be finite or null",
        "row 8, field metadata: invalid JSON: Expecting value: line 1 column 1 (char 0)",
        "row 9, field metadata: JSON list, not an object",
        "row 10, field candidates: missing (null); expected a list (may be empty)",
    ]


def test_null_fields_inside_candidates():
    t = table([pool("p", candidates=[cand(candidate_id=None, flags=None)])])
    assert strs(validate(t)) == [
        "row 0, field candidates[0].candidate_id: missing (null)",
        "row 0, field candidates[0].flags: missing (null); expected a list",
    ]
    t2 = table([pool(None)])
    assert strs(validate(t2)) == ["row 0, field prompt_id: missing (null)"]


def test_table_level_errors():
    assert strs(validate(pa.table({"prompt_id": ["a"]}))) == [
        "table, field prompt: missing column",
        "table, field source: missing column",
        "table, field metadata: missing column",
        "table, field candidates: missing column",
    ]
    t = pa.Table.from_pylist(
        [
            {
                "prompt_id": "p",
                "prompt": [{"role": "user", "content": "q"}],
                "source": None,
                "metadata": None,
                "candidates": [
                    {
                        "candidate_id": "c",
                        "response": 5,
                        "generator": None,
                        "flags": [],
                        "scores": {"rm": "high"},
                    }
                ],
            }
        ]
    )
    got = strs(validate(t))
    assert "table, field candidates[].response: type int64; expected string" in got
    assert "table, field candidates[].scores.rm: type string; expected float64" in got


def test_polars_large_types_are_accepted():
    t = table([pool("p1"), pool("p2")])
    big = pl.from_arrow(t).to_arrow()  # large_string / large_list
    assert validate(big) == []


def test_validate_scales_columnar():
    rows = [pool(f"p{i}", candidates=[cand(f"c{j}") for j in range(4)]) for i in range(3000)]
    rows[2500]["candidates"][3]["response"] = None
    errs = validate(table(rows))
    assert strs(errs) == ["row 2500, field candidates[3].response: not a string (null)"]


# JSON Schema covers types, enums, minItems and minLength; validate() must agree with it on
# those, and add what JSON Schema cannot say (uniqueness, the final role, finiteness).
_BROKEN = [
    ("prompt_id", lambda r: r.update(prompt_id="")),
    ("prompt", lambda r: r.update(prompt=[])),
    ("prompt[0].role", lambda r: r["prompt"][0].update(role="narrator")),
    ("prompt[0].content", lambda r: r["prompt"][0].update(content=None)),
    ("candidates[0].candidate_id", lambda r: r["candidates"][0].update(candidate_id="")),
    ("candidates[0].response", lambda r: r["candidates"][0].update(response=None)),
    ("candidates[0].sample_index", lambda r: r["candidates"][0].update(sample_index=-3)),
    ("candidates[0].num_tokens", lambda r: r["candidates"][0].update(num_tokens=-1)),
    ("candidates[0].flags", lambda r: r["candidates"][0].update(flags=None)),
]


@pytest.mark.parametrize("field,breaker", _BROKEN, ids=[b[0] for b in _BROKEN])
def test_agrees_with_json_schema(field, breaker):
    schema = json_schema("pool")
    good = pool()
    jsonschema.validate(json.loads(json.dumps(good)), schema)
    bad = copy.deepcopy(good)
    breaker(bad)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    errs = validate(table([bad]))
    assert [e.field for e in errs] == [field]
    assert errs[0].row == 0


def test_validate_reports_pairs_that_record_no_preference(tmp_path, capsys):
    """chosen == rejected, and A over B with B over A for one prompt, are errors of a pair
    table (the pair layouts reject such rows at ingest; a pair file made elsewhere is
    checked here)."""
    from prefdata.cli import main
    from prefdata.schema import PAIR_SCHEMA

    q = [{"role": "user", "content": "Q"}]
    rows = [
        {"prompt_id": "p", "prompt": q, "chosen": "A", "rejected": "B", "strategy": "s"},
        {"prompt_id": "p", "prompt": q, "chosen": "C", "rejected": "D", "strategy": "s"},
        {"prompt_id": "p", "prompt": q, "chosen": "B", "rejected": "A", "strategy": "s"},
        {"prompt_id": "r", "prompt": q, "chosen": "same", "rejected": "same", "strategy": "s"},
    ]
    path = tmp_path / "pairs.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=PAIR_SCHEMA), path)
    assert main(["validate", str(path)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "row 0, field chosen: contradicts row 2, which prefers this row's rejected response "
        "to its chosen one",
        "row 2, field chosen: contradicts row 0, which prefers this row's rejected response "
        "to its chosen one",
        "row 3, field rejected: chosen and rejected are the same text",
        f"{path}: 4 pair rows, 3 errors",
    ]
