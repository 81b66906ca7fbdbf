"""Annotator-aware preferences: who recorded each pair is read with one option
(annotator_col / --annotator-col), kept through construction (annotator_id), carried by
every export that takes extra columns, checked by the JSON Schema, and measured
(pairwise agreement, Krippendorff's alpha)."""

from __future__ import annotations

import json
import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prefdata.annotate.annotators import annotator_agreement
from prefdata.construct.recorded import RecordedPairs
from prefdata.io.export import FORMATS, export
from prefdata.io.readers import read_pools

ROWS = [
    {"prompt": "Q", "chosen": "A", "rejected": "B", "who": "ann1"},
    {"prompt": "Q", "chosen": "B", "rejected": "A", "who": "ann2"},  # disagrees: kept
    {"prompt": "Q", "chosen": "C", "rejected": "A", "who": "ann1"},
    {"prompt": "R", "chosen": "x", "rejected": "y", "who": "ann2"},
    {"prompt": "R", "chosen": "x", "rejected": "y", "who": "ann1"},
    {"prompt": "S", "chosen": "s1", "rejected": "s2", "who": None},
]


def pairs_of(rows=ROWS) -> pa.Table:
    pools = read_pools(pa.Table.from_pylist(rows), "pairs", annotator_col="who")
    assert pools.rejects.num_rows == 0
    return RecordedPairs(annotators=True)(pools.table).table


def test_every_recorded_pair_keeps_its_annotator():
    pairs = pairs_of()
    got = sorted(zip(pairs["chosen"].to_pylist(), pairs["rejected"].to_pylist(),
                     pairs["annotator_id"].to_pylist(), strict=True), key=str)  # fmt: skip
    want = sorted(((r["chosen"], r["rejected"], r["who"]) for r in ROWS), key=str)
    assert got == want


def test_only_one_annotators_own_contradiction_is_rejected():
    rows = [*ROWS, {"prompt": "Q", "chosen": "B", "rejected": "A", "who": "ann1"}]
    out = read_pools(pa.Table.from_pylist(rows), "pairs", annotator_col="who")
    assert [(r["row"], r["reason"][:18]) for r in out.rejects.to_pylist()] == [
        (0, "contradicts row 6,"),
        (6, "contradicts row 0,"),
    ]


def test_agreement_and_alpha():
    out = annotator_agreement(pairs_of())
    assert out["annotators"] == ["ann1", "ann2"]
    # items labelled by both: (Q, A/B) they disagree on, (R, x/y) they agree on
    assert out["pairwise"][("ann1", "ann2")] == {"items": 2, "agreement": 0.5}
    agree = annotator_agreement(pairs_of([r for r in ROWS if r["prompt"] == "R"]))
    assert agree["alpha"] == 1.0  # every label the same
    flip = annotator_agreement(pairs_of(ROWS[:2] + [
        {"prompt": "T", "chosen": "u", "rejected": "v", "who": "ann1"},
        {"prompt": "T", "chosen": "v", "rejected": "u", "who": "ann2"}]))  # fmt: skip
    assert flip["pairwise"][("ann1", "ann2")]["agreement"] == 0.0 and flip["alpha"] < 0
    with pytest.raises(KeyError, match="annotator_col"):
        annotator_agreement(pairs_of().drop_columns(["annotator_id"]))


def _read_back(path) -> list[dict]:
    path = str(path)
    if path.endswith(".parquet"):
        return pq.read_table(path).to_pylist()
    if path.endswith(".jsonl"):
        return [json.loads(line) for line in open(path)]
    return json.load(open(path))


@pytest.mark.parametrize(
    "fmt", [f for f in FORMATS if "pair" in FORMATS[f].converters and f != "hub"]
)
def test_every_pair_export_carries_the_annotator(fmt, tmp_path):
    pairs = pairs_of()
    res = export(pairs, fmt, tmp_path / fmt, keep=["annotator_id"])
    rows = _read_back(res[0])
    if fmt == "trl-kto":  # one row per side: every side keeps its pair's annotator
        assert rows and {r["annotator_id"] for r in rows} == set(pairs["annotator_id"].to_pylist())
        return
    rejected = set(res.rejects["row"].to_pylist())
    want = [a for i, a in enumerate(pairs["annotator_id"].to_pylist()) if i not in rejected]
    assert len(rows) == len(want) > 0
    assert sorted(map(str, (r["annotator_id"] for r in rows))) == sorted(map(str, want))


def test_the_schema_checks_the_column(tmp_path):
    from prefdata.validate import validate_records

    pairs = pairs_of()
    assert validate_records(pairs, "pair") == []
    bad = pairs.set_column(
        pairs.schema.get_field_index("annotator_id"), "annotator_id", pa.array([7] * pairs.num_rows)
    )
    errors = [e for e in validate_records(bad, "pair") if e.field == "annotator_id"]
    assert len(errors) == pairs.num_rows and "is not of type" in errors[0].reason


def test_binarize_reads_the_flag_and_reports_agreement(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "recipes" / "binarize.py"
    spec = importlib.util.spec_from_file_location("binarize_annotators", path)
    binarize = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(binarize)
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    out = tmp_path / "out"
    argv = ["--input", str(data), "--layout", "pairs", "--annotator-col", "who",
            "--format", "trl-dpo", "--out", str(out)]  # fmt: skip
    assert binarize.main(argv) == 0
    dpo = pq.read_table(out / "trl-dpo" / "train.parquet")
    assert dpo.column_names[-1] == "annotator_id" and dpo.num_rows == len(ROWS)
    summary = json.loads((out / "summary.json").read_text())["annotators"]
    assert summary["names"] == ["ann1", "ann2"] and summary["items"] == 2
    assert math.isclose(summary["pairwise"][0]["agreement"], 0.5)
    with pytest.raises(ValueError, match="annotator_col applies to"):
        read_pools(pa.table({"prompt": ["q"], "response": ["a"]}), "long", annotator_col="who")
