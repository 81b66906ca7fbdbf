"""with_scores, FromColumn, Constraints and provenance: columnar score writing on real tables."""

import json

import pyarrow as pa
import pytest

from prefdata.schema import CANDIDATE_TYPE, pool_schema, score_names
from prefdata.score import Constraints, FromColumn, pools_from_texts, with_scores
from prefdata.score.verify import check_json


@pytest.fixture(scope="module")
def pools():
    return pools_from_texts(
        ["Capital of France?", "List fruit", "Empty pool"],
        [["Paris is the capital.", "I think Lyon"], ["- apple\n- pear\n- fig"], []],
        columns={"ratings": [[4.0, 1.5], [3.0], []], "difficulty": [0.2, None, 0.9]},
    )


def _scores(table, field):
    return [c["scores"].get(field) for row in table["candidates"].to_pylist() for c in row]


def test_with_scores_keeps_fields_in_schema_order_and_replaces_in_place(pools):
    out = with_scores(pools, {"a": [1.0, 2.0, 3.0], "b": [0.0, float("nan"), None]})
    out = with_scores(out, {"a": [9.0, 8.0, 7.0]}, flags=[["x"], [], ["y", "y"]])
    cand = out.schema.field("candidates").type.value_type
    assert [f.name for f in cand] == [f.name for f in CANDIDATE_TYPE]
    assert score_names(out) == ["a", "b"]
    assert out.schema == pool_schema(["a", "b"]).append(pools.schema.field("ratings")).append(
        pools.schema.field("difficulty")
    )
    assert _scores(out, "a") == [9.0, 8.0, 7.0]
    assert _scores(out, "b") == [0.0, None, None]
    flat = [c for row in out["candidates"].to_pylist() for c in row]
    assert [c["flags"] for c in flat] == [["x"], [], ["y"]]
    # Every other candidate field is untouched.
    before = [c for row in pools["candidates"].to_pylist() for c in row]
    for b, a in zip(before, flat, strict=True):
        assert {k: v for k, v in a.items() if k not in ("scores", "flags")} == {
            k: v for k, v in b.items() if k not in ("scores", "flags")
        }


def test_with_scores_on_sliced_and_chunked_tables(pools):
    sliced = pools.slice(1, 2)
    out = with_scores(sliced, {"s": [5.0]}, flags=[["f"]])
    assert _scores(out, "s") == [5.0]
    chunked = pa.concat_tables([pools.slice(0, 1), pools.slice(1, 2)])
    assert chunked["candidates"].num_chunks == 2
    out = with_scores(chunked, {"s": [1.0, 2.0, 3.0]}, flags=[["f"], ["g"], []])
    assert _scores(out, "s") == [1.0, 2.0, 3.0]
    assert out["candidates"].to_pylist()[0][1]["flags"] == ["g"]
    # flags already present are not duplicated
    again = with_scores(out, {}, flags=[["f", "h"], [], []])
    assert again["candidates"].to_pylist()[0][0]["flags"] == ["f", "h"]


def hide_first_pool(table):
    """The first pool's candidate list made null while its offsets still span its two
    candidates (valid Arrow: polars and masked arrays leave such lists)."""
    lists = table["candidates"].combine_chunks()
    null = pa.array([True] + [False] * (len(lists) - 1))
    hidden = pa.ListArray.from_arrays(lists.offsets, lists.values, mask=null)
    return table.set_column(table.schema.get_field_index("candidates"), "candidates", hidden)


def mask_first_candidate(table):
    """The first candidate made null while its struct children keep their values."""
    lists = table["candidates"].combine_chunks()
    values = lists.values
    kids = [values.field(i) for i in range(values.type.num_fields)]
    null = pa.array([True] + [False] * (len(values) - 1))
    masked = pa.StructArray.from_arrays(kids, fields=list(values.type), mask=null)
    lists = pa.ListArray.from_arrays(lists.offsets, masked)
    return table.set_column(table.schema.get_field_index("candidates"), "candidates", lists)


def test_with_scores_and_views_skip_a_null_lists_hidden_candidates(pools):
    from prefdata.score.base import candidates_view

    t = hide_first_pool(pools)
    assert t["candidates"].to_pylist()[0] is None
    assert candidates_view(mask_first_candidate(pools)).responses[:2] == [None, "I think Lyon"]
    view = candidates_view(t)
    assert view.row.tolist() == [1] and view.offsets.tolist() == [0, 0, 1, 1]
    assert view.responses == ["- apple\n- pear\n- fig"]
    out = with_scores(t, {"a": [5.0]}, flags=[["x"]])
    first, second, third = out["candidates"].to_pylist()
    assert first is None and third == []
    assert second[0]["scores"]["a"] == 5.0 and second[0]["flags"] == ["x"]


def test_with_scores_rejects_misaligned_values(pools):
    with pytest.raises(ValueError, match="3 candidates"):
        with_scores(pools, {"s": [1.0]})


def test_from_column_list_scalar_and_score(pools):
    out = FromColumn("ratings", name="uf")(pools).table
    out = FromColumn("difficulty")(out).table
    out = FromColumn("scores.uf", name="uf_copy")(out).table
    assert _scores(out, "uf") == [4.0, 1.5, 3.0]
    assert _scores(out, "difficulty") == [0.2, 0.2, None]
    assert _scores(out, "uf_copy") == _scores(out, "uf")
    assert FromColumn("ratings", name="uf").provided_columns() == ("scores.uf",)


def test_from_column_misaligned_list_names_row_and_column(pools):
    bad = pools.set_column(
        pools.column_names.index("ratings"), "ratings", pa.array([[1.0], [3.0], []])
    )
    with pytest.raises(ValueError, match=r"row 0 .*'ratings' has 1 values for 2 candidates"):
        FromColumn("ratings")(bad)
    strings = pools.append_column("label", pa.array(["a", "b", "c"]))
    with pytest.raises(TypeError, match="not numeric"):
        FromColumn("label")(strings)


def test_constraints_fraction_and_flags():
    t = pools_from_texts(
        ["q"],
        [
            [
                "Paris. Lovely city!",
                '```json\n{"city": "Paris"}\n```',
                "- one\n- two\n* three\n1. four",
                "I hate Paris",
            ]
        ],
    )
    c = Constraints(
        max_words=5,
        max_sentences=1,
        required_keywords=("paris",),
        forbidden_keywords=("hate",),
        min_bullets=2,
    )
    out = c(t).table
    got = [(x["scores"]["constraints"], x["flags"]) for x in out["candidates"].to_pylist()[0]]
    assert got[0] == (0.6, ["constraints_fail:max_sentences", "constraints_fail:min_bullets"])
    assert got[1][0] == 0.8 and got[1][1] == ["constraints_fail:min_bullets"]
    # 8 whitespace words (markers count), "1." ends a sentence, no paris; 4 bullets
    assert got[2] == (
        0.4,
        [
            "constraints_fail:max_words",
            "constraints_fail:max_sentences",
            "constraints_fail:required:paris",
        ],
    )
    assert got[3] == (0.6, ["constraints_fail:min_bullets", "constraints_fail:forbidden:hate"])
    js = Constraints(json=True)(t).table
    assert _scores(js, "constraints") == [0.0, 1.0, 0.0, 0.0]
    assert check_json("[1, 2]") and not check_json("")


def test_constraints_needs_a_constraint_and_provenance_is_json():
    with pytest.raises(ValueError, match="at least one"):
        Constraints()
    prov = Constraints(max_words=3).provenance()
    assert prov["fields"] == ["constraints"] and prov["function"].endswith("Constraints")
    assert json.loads(json.dumps(prov))["fingerprint"] == Constraints(max_words=3).fingerprint
    assert Constraints(max_words=3).fingerprint != Constraints(max_words=4).fingerprint
