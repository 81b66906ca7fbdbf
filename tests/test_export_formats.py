"""The export writers: vectorised tables agree with the per-record converters, bad rows go
to rejects with a reason (never dropped), the funnel adds up, and output is byte-identical
for the same input. Inputs are built directly as tables in PAIR/LIST/UNPAIRED_SCHEMA."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prefdata.io.export import FORMATS, convert, export
from prefdata.io.export.trl import unpair_record
from prefdata.pipeline import Funnel
from prefdata.schema import LIST_SCHEMA, PAIR_SCHEMA, REJECTS_SCHEMA, UNPAIRED_SCHEMA

U = {"role": "user", "content": "What is 2+2?"}
S = {"role": "system", "content": "Answer briefly."}
A = {"role": "assistant", "content": "Let me think."}
T = {"role": "tool", "content": "calculator: 4"}


def pair(i: int, prompt, chosen="4", rejected="5", margin=1.0, **kw) -> dict:
    return {
        "prompt_id": f"p{i}",
        "prompt": prompt,
        "chosen": chosen,
        "rejected": rejected,
        "margin": margin,
        "chosen_generator": "big",
        "rejected_generator": "small",
        "strategy": "best-worst",
        **kw,
    }


# Good rows of several shapes, then rows each target (or all) must reject.
PAIRS = [
    pair(0, [U]),
    pair(1, [S, U], chosen="Four | pipes\nand newlines ü", rejected="Five."),
    pair(2, [U, A, U], margin=2.5),
    pair(3, [U, {"role": "assistant", "content": "calling tool"}, T], margin=0.25),
    pair(4, [], margin=1.0),  # empty prompt: everyone rejects
    pair(5, [U, A], margin=1.0),  # ends on assistant: everyone rejects
    pair(6, [U], chosen=None),  # null chosen
    pair(7, [U], chosen="same", rejected="same"),  # identical
    pair(8, [U], margin=None),  # null margin: trl-reward rejects
    pair(9, [U, S, U], margin=1.0),  # system in the middle: LLaMA-Factory rejects
    pair(10, [U], margin=0.0),  # a tie: NeMo-RL rejects
    pair(11, [U], chosen="  "),  # blank chosen: Axolotl rejects
    pair(12, [U, U], margin=1.0),  # not alternating: LLaMA-Factory rejects
]


@pytest.fixture(scope="module")
def pairs() -> pa.Table:
    return pa.Table.from_pylist(PAIRS, schema=PAIR_SCHEMA)


@pytest.fixture(scope="module")
def unpaired() -> pa.Table:
    rows = [
        {"prompt_id": "a", "prompt": [U], "completion": "4", "label": True},
        {"prompt_id": "b", "prompt": [S, U, A, U], "completion": "5", "label": False},
        {"prompt_id": "c", "prompt": [U], "completion": None, "label": True},
        {"prompt_id": "d", "prompt": [U], "completion": "x", "label": None},
        {"prompt_id": "e", "prompt": [A], "completion": "x", "label": True},
    ]
    return pa.Table.from_pylist(rows, schema=UNPAIRED_SCHEMA)


def ranked(texts_scores, prompt=None, pid="l"):
    return {
        "prompt_id": pid,
        "prompt": prompt or [U],
        "responses": [
            {"candidate_id": f"c{i}", "response": t, "generator": "g", "score": s, "rank": r}
            for i, (t, s, r) in enumerate(texts_scores)
        ],
        "scorer": "rm",
    }


@pytest.fixture(scope="module")
def lists() -> pa.Table:
    rows = [
        ranked([("best", 3.0, 1), ("mid", 2.0, 2), ("tied", 2.0, 2), ("worst", -1.0, 4)]),
        ranked([("a", 1.0, 1), ("b", 0.5, 2)], prompt=[S, U, A, U], pid="l2"),
        ranked([("a", 1.0, 1), ("b", 2.0, 2)], pid="l3"),  # not descending
        ranked([("a", 1.0, 1), ("b", None, 2)], pid="l4"),  # null score
        ranked([("a", 1.0, 1), ("b", 0.0, 2)], prompt=[U, A, T], pid="l5"),  # tool turn
    ]
    return pa.Table.from_pylist(rows, schema=LIST_SCHEMA)


def _record_outcome(fn, rec):
    try:
        return fn(rec), None
    except ValueError as e:
        return None, str(e)


CASES = [(name, kind) for name, fmt in FORMATS.items() for kind in fmt.records]


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_table_converter_matches_record_converter(name, kind, pairs, unpaired, lists):
    """Row for row, the vectorised converter writes what the per-record converter returns,
    and rejects exactly the rows the per-record converter refuses."""
    table = {"pair": pairs, "unpaired": unpaired, "list": lists}[kind]
    fmt = FORMATS[name]
    conv = fmt.convert(table)
    outcomes = [_record_outcome(fmt.records[kind], r) for r in table.to_pylist()]
    expected_ok = [o for o, err in outcomes if err is None]
    expected_bad = [i for i, (_, err) in enumerate(outcomes) if err is not None]
    got = conv.table.to_pylist()
    keys = set(conv.table.column_names)
    assert [{k: v for k, v in r.items() if k in keys} for r in expected_ok] == got
    assert conv.rejects["row"].to_pylist() == expected_bad
    assert conv.rows_in == table.num_rows == len(got) + conv.rejects.num_rows
    assert conv.rejects.schema == REJECTS_SCHEMA
    assert all(
        r and f
        for r, f in zip(
            conv.rejects["reason"].to_pylist(), conv.rejects["field"].to_pylist(), strict=True
        )
    )


def test_common_rejections_name_row_and_field(pairs):
    rej = convert(pairs, "trl-dpo").rejects.to_pylist()
    by_row = {r["row"]: r for r in rej}
    assert by_row[4]["reason"] == "prompt is an empty message list"
    assert by_row[4]["field"] == "prompt"
    assert by_row[5]["reason"] == "prompt does not end with a user or tool turn"
    assert by_row[6]["reason"] == "chosen is null" and by_row[6]["field"] == "chosen"
    assert by_row[7]["reason"] == "chosen and rejected are identical"
    assert json.loads(by_row[7]["record"])["prompt_id"] == "p7"
    assert set(by_row) == {4, 5, 6, 7}


def test_target_specific_rejections(pairs):
    def rows(fmt):
        return {r["row"]: r["reason"] for r in convert(pairs, fmt).rejects.to_pylist()}

    assert "margin is null" in rows("trl-reward")[8]
    assert 8 not in rows("trl-dpo") and 8 not in rows("openrlhf")  # null margin reads as 0
    lf = rows("llamafactory")
    assert "system turn after the first message" in lf[9]
    assert "alternate" in lf[12]
    assert 3 not in lf  # a tool turn is an observation, which may follow the assistant
    assert "tool turn" in rows("llamafactory-alpaca")[3]
    assert "tie" in rows("nemo-rl")[10]
    assert "empty" in rows("axolotl")[11]


def test_no_string_prompt_beside_conversational_responses(pairs):
    """TRL's is_conversational picks one key with set.pop(); every message column must be a
    non-empty message list so either pick gives the same answer."""
    from trl.data_utils import is_conversational

    for fmt in ("trl-dpo", "trl-reward"):
        for rec in convert(pairs, fmt).table.to_pylist():
            for key in ("prompt", "chosen", "rejected"):
                assert isinstance(rec[key], list) and rec[key]
                assert is_conversational({key: rec[key]})
            assert rec["chosen"][0]["role"] == "assistant"
            assert rec["prompt"][-1]["role"] in ("user", "tool")


def test_reward_margin_kept_scaled_or_left_out(pairs):
    good = pairs.filter(pa.compute.is_valid(pairs["margin"]))
    t = convert(good, "trl-reward", margin_scale=0.5).table
    assert t["margin"].to_pylist()[:3] == [0.5, 0.5, 1.25]
    assert "margin" not in convert(pairs, "trl-reward", margin=False).table.column_names
    no_margin = pairs.drop_columns(["margin"])
    assert "margin" not in convert(no_margin, "trl-reward").table.column_names
    with pytest.raises(KeyError):
        convert(no_margin, "trl-reward", margin=True)


def test_kto_from_pairs_unpairs_like_trl_and_rejects_duplicates():
    """Unpairing follows TRL's unpair_preference_dataset (chosen -> True, rejected -> False);
    a chosen response shared by two pairs (Curry-DPO style) appears once."""
    rows = [pair(0, [U], chosen="top", rejected="mid"), pair(0, [U], chosen="top", rejected="low")]
    t = pa.Table.from_pylist(rows, schema=PAIR_SCHEMA)
    conv = convert(t, "trl-kto")
    got = [(r["completion"][0]["content"], r["label"]) for r in conv.table.to_pylist()]
    assert got == [("top", True), ("mid", False), ("low", False)]
    assert conv.rows_in == 4 and conv.rejects["reason"].to_pylist() == [
        "duplicate (prompt_id, completion, label) after unpairing"
    ]
    expected = [(r["completion"], r["label"]) for p in rows for r in unpair_record(p)]
    assert sorted(set(expected)) == sorted(set(got))


def test_keep_carries_extra_columns(pairs):
    t = convert(pairs, "trl-dpo", keep=["prompt_id", "margin"]).table
    assert t.column_names == ["prompt", "chosen", "rejected", "prompt_id", "margin"]
    everything = convert(pairs, "trl-dpo", keep="all").table
    assert {"strategy", "chosen_generator", "provenance"} <= set(everything.column_names)
    with pytest.raises(KeyError, match="nope"):
        convert(pairs, "trl-dpo", keep=["nope"])


def test_wrong_table_kind_is_a_clear_error(pairs, lists):
    with pytest.raises(ValueError, match="takes \\['list'\\] tables, not a pair table"):
        convert(pairs, "listwise")
    with pytest.raises(ValueError, match="unknown format"):
        export(pairs, "trl-ppo", "/nonexistent")
    with pytest.raises(ValueError, match="cannot tell the record type"):
        convert(pa.table({"x": [1]}), "trl-dpo")


def test_listwise_num_responses_cuts_and_rejects_short_lists(lists):
    conv = convert(lists, "listwise", num_responses=3)
    assert conv.table["suffix"].to_pylist() == [["best", "mid", "tied"]]
    reasons = dict(
        zip(conv.rejects["row"].to_pylist(), conv.rejects["reason"].to_pylist(), strict=True)
    )
    assert reasons[1] == "fewer than 3 responses"


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_export_writes_files_and_funnel(name, pairs, unpaired, lists, tmp_path):
    kind = next(iter(FORMATS[name].records))
    table = {"pair": pairs, "unpaired": unpaired, "list": lists}[kind]
    funnel = Funnel()
    out = export(table, name, tmp_path / "a", split="train", funnel=funnel)
    data = out[0]
    assert data.name == f"train.{FORMATS[name].file_format}"
    if data.suffix == ".jsonl":
        lines = data.read_text(encoding="utf-8").splitlines()
        recs = [json.loads(x) for x in lines]
    else:
        recs = pq.read_table(data).to_pylist()
        assert b"huggingface" in pq.read_schema(data).metadata
    assert len(recs) == out.rows_written
    assert recs == convert(table, name).table.to_pylist()
    (entry,) = funnel.to_list()
    assert entry == {
        "stage": f"export:{name}",
        "rows_in": out.rows_in,
        "rows_out": out.rows_written,
        "rows_rejected": out.rejects.num_rows,
    }
    # Same input, same options: byte-identical files.
    again = export(table, name, tmp_path / "b", split="train")
    for p, q in zip(out, again, strict=True):
        assert p.read_bytes() == q.read_bytes(), p.name


def test_llamafactory_side_file_merges_entries(pairs, unpaired, tmp_path):
    (tmp_path / "dataset_info.json").write_text(json.dumps({"mine": {"file_name": "x.json"}}))
    export(pairs, "llamafactory", tmp_path, split="train")
    export(unpaired, "llamafactory", tmp_path, split="kto", style="openai")
    export(pairs, "llamafactory-alpaca", tmp_path, split="alpaca")
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    assert set(info) == {"mine", "prefdata_train", "prefdata_kto", "prefdata_alpaca"}
    assert info["prefdata_train"]["ranking"] is True
    assert info["prefdata_kto"]["columns"]["kto_tag"] == "label"
    assert len(info["prefdata_kto"]["tags"]) == 7  # every tag, or the rest default to None
    assert info["prefdata_alpaca"]["formatting"] == "alpaca"


def test_axolotl_yaml_written(pairs, tmp_path):
    import yaml

    out = export(pairs, "axolotl", tmp_path)
    cfg = yaml.safe_load((tmp_path / "axolotl.yaml").read_text())
    ds = cfg["datasets"][0]
    assert cfg["rl"] == "dpo" and ds["type"] == "chat_template.default"
    assert ds["path"] == out[0].name
    assert (ds["field_messages"], ds["field_chosen"], ds["field_rejected"]) == (
        "messages",
        "chosen",
        "rejected",
    )


@pytest.mark.parametrize("name", ["openrlhf", "trl-reward"])
def test_non_finite_margin_rejects_its_row_only(name, tmp_path):
    rows = [pair(0, [U], margin=float("nan")), pair(1, [U]), pair(2, [U], margin=float("inf"))]
    out = export(pa.Table.from_pylist(rows, schema=PAIR_SCHEMA), name, tmp_path)
    assert out.rejects["row"].to_pylist() == [0, 2] and out.rows_written == 1
    assert set(out.rejects["reason"].to_pylist()) == {"margin is NaN or infinite"}
    assert set(out.rejects["field"].to_pylist()) == {"margin"}


@pytest.mark.parametrize(
    ("name", "file_format"), [("openrlhf", None), ("trl-dpo", "jsonl"), ("trl-dpo", "parquet")]
)
def test_kept_non_finite_float_rejects_its_row_only_in_json(name, file_format, tmp_path):
    """keep="all" carries strength_mean and the score structs; a NaN in them costs its row
    in a JSON file (no NaN in JSON), and nothing in Parquet (which stores NaN)."""
    rows = [
        pair(0, [U], strength_mean=float("nan")),
        pair(1, [U], strength_mean=0.5),
        pair(2, [U], strength_mean=0.5),
        pair(3, [U], chosen=None),  # the converter's own reject, in row order with the rest
    ]
    z = [0.1, 0.3, float("-inf"), 0.2]
    scores = pa.array([{"rm": 1.0, "rm.z": x} for x in z])
    table = pa.Table.from_pylist(rows, schema=PAIR_SCHEMA).append_column("chosen_scores", scores)
    out = export(table, name, tmp_path, keep="all", file_format=file_format)
    assert out.rows_in == out.rows_written + out.rejects.num_rows == 4
    if file_format == "parquet":
        assert out.rejects["row"].to_pylist() == [3] and out.rows_written == 3
        assert pq.read_table(out[0])["strength_mean"].is_nan().to_pylist()[0]
        return
    assert out.rejects["row"].to_pylist() == [0, 2, 3] and out.rows_written == 1
    assert out.rejects["field"].to_pylist()[:2] == ["strength_mean", "chosen_scores.rm.z"]
    assert out.rejects["reason"][0].as_py() == "strength_mean is NaN or infinite (JSON has no NaN)"
    assert out.rejects["prompt_id"].to_pylist() == ["p0", "p2", "p3"]
    lines = out[0].read_text().splitlines()
    assert [json.loads(line)["strength_mean"] for line in lines] == [0.5]


def test_non_finite_check_follows_rows_through_null_lists_and_structs():
    """Values a null list or struct still spans (polars' when/then/otherwise, masked
    structs) belong to no row: they neither shift the row mapping nor reject anything."""
    import polars as pl

    from prefdata.io.export._arrow import Converted
    from prefdata.schema import empty_rejects

    nan = float("nan")
    df = pl.DataFrame({"x": [[1.0, nan], [nan], [4.0, nan]], "k": [False, True, True]})
    x = df.select(pl.when(pl.col("k")).then(pl.col("x")).otherwise(None)).to_arrow()["x"]
    s = pa.StructArray.from_arrays(
        [pa.array([[nan], [1.0], [2.0]])], ["a"], mask=pa.array([True, False, False])
    )
    conv = Converted(pa.table({"x": x, "s": s}), empty_rejects(), 3).reject_non_finite()
    assert conv.rejects["row"].to_pylist() == [1, 2]
    assert conv.rejects["field"].to_pylist() == ["x", "x"]
    assert conv.table.num_rows == 1 and conv.table["s"].to_pylist() == [None]


def test_listwise_rejects_a_nan_score_per_row(lists):
    bad = ranked([("a", 1.0, 1), ("b", float("nan"), 2)], pid="nan")
    table = pa.concat_tables([lists, pa.Table.from_pylist([bad], schema=LIST_SCHEMA)])
    conv = FORMATS["listwise"].convert(table)
    assert table.num_rows - 1 in conv.rejects["row"].to_pylist()
    assert "non-finite score" in conv.rejects["reason"][-1].as_py()


def test_jsonl_writer_refuses_non_finite_values_at_any_depth(tmp_path):
    from prefdata.io.export._arrow import write_jsonl

    for t in (
        pa.table({"margin": [1.0, float("nan")]}),
        pa.table({"reward": [[1.0, float("inf")]]}),
        pa.table({"s": [{"x": float("nan")}]}),
    ):
        with pytest.raises(ValueError, match="NaN or infinite"):
            write_jsonl(t, tmp_path / "x.jsonl")
    assert not list(tmp_path.glob("*.jsonl"))  # nothing half-written


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_empty_and_fully_rejected_tables_convert(name, pairs, unpaired, lists):
    """A shard whose rows were all rejected upstream (or here) must not crash a writer."""
    fmt = FORMATS[name]
    for kind in fmt.converters:
        table = {"pair": pairs, "unpaired": unpaired, "list": lists}[kind]
        empty = fmt.convert(table.schema.empty_table())
        assert empty.table.num_rows == 0 and empty.rejects.num_rows == 0
        # every row's prompt emptied: all rejected
        prompt = pa.array([[]] * table.num_rows, table.schema.field("prompt").type)
        bad = table.set_column(table.schema.get_field_index("prompt"), "prompt", prompt)
        conv = fmt.convert(bad)
        assert conv.table.num_rows == 0 and conv.rejects.num_rows == conv.rows_in >= table.num_rows


def _hide(table: pa.Table, column: str, flat_index: int) -> pa.Table:
    """``table`` with one struct of the list column ``column`` null while its children
    still hold values (valid Arrow: masked structs, polars' when/then/otherwise)."""
    lists = table[column].combine_chunks()
    values = lists.values
    mask = pa.array([i == flat_index for i in range(len(values))])
    children = [values.field(j) for j in range(values.type.num_fields)]
    masked = pa.StructArray.from_arrays(children, fields=list(values.type), mask=mask)
    lists = pa.ListArray.from_arrays(lists.offsets, masked, type=lists.type)
    return table.set_column(table.schema.get_field_index(column), column, lists)


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_a_null_message_or_response_is_rejected_not_read_through(
    name, kind, pairs, unpaired, lists
):
    """A null prompt message (or ranked response) whose struct still hides a valid value is
    rejected like the record converter rejects it, not exported as the hidden value."""
    table = {"pair": pairs, "unpaired": unpaired, "list": lists}[kind]
    masked = _hide(table, "prompt", 0)  # row 0's only message: a valid user turn, hidden
    if kind == "list":
        masked = _hide(masked, "responses", 5)  # row 1's second response
    fmt = FORMATS[name]
    conv = fmt.convert(masked)
    bad = [i for i, r in enumerate(masked.to_pylist()) if _record_outcome(fmt.records[kind], r)[1]]
    assert conv.rejects["row"].to_pylist() == bad
    assert 0 in bad and (kind != "list" or 1 in bad)
    assert masked.num_rows == conv.table.num_rows + conv.rejects.num_rows


def test_hf_features_equal_datasets_own():
    """The features metadata written without importing datasets is what datasets writes."""
    from datasets import Features

    from prefdata.io.export._arrow import hf_features

    msg = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    schema = pa.schema(
        [
            ("prompt", msg),
            ("chosen", msg),
            ("margin", pa.float64()),
            ("label", pa.bool_()),
            ("n", pa.int64()),
            ("k", pa.int32()),
            ("tags", pa.list_(pa.large_string())),
            ("scores", pa.struct([("a", pa.float64()), ("b", pa.float32())])),
            ("when", pa.timestamp("s")),  # not a plain type: datasets describes it
        ]
    )
    for s in (schema, pa.schema(list(schema)[:-1])):
        assert hf_features(s) == Features.from_arrow_schema(s).to_dict()
