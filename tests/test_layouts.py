"""Layouts: raw tables into pools, with rejects naming row and field."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prefdata import ids
from prefdata.io.layouts import LAYOUTS, to_pools
from prefdata.schema import REJECTS_SCHEMA, pool_schema, score_names
from prefdata.validate import validate


def user(text):
    return [{"role": "user", "content": text}]


def run(raw: pa.Table, layout: str, **kw):
    """to_pools plus the invariants every test relies on: valid pools, funnel adds up."""
    out = to_pools(raw, layout, **kw)
    assert out.rejects.schema == REJECTS_SCHEMA
    assert set(out.rejects["stage"].to_pylist()) <= {f"layout:{layout}"}
    assert validate(out.table) == []
    assert out.table.schema == pool_schema(score_names(out.table))
    rows = out.rejects["row"].to_pylist()
    assert len(rows) == len(set(rows)), "one reject per rejected input row"
    assert all(r is not None and 0 <= r < raw.num_rows for r in rows)
    assert all(out.rejects["reason"].to_pylist())
    return out


def cands(out, i=0):
    return out.table["candidates"][i].as_py()


def reasons(out):
    return {r["row"]: (r["field"], r["reason"]) for r in out.rejects.to_pylist()}


# --------------------------------------------------------------------------- long


def test_long_groups_in_first_appearance_order_with_ids_and_sample_index():
    raw = pa.table(
        {
            "prompt": ["B", "A", "B", "B", "A"],
            "response": ["b1", "a1", "b2", "b3", "a2"],
            "generator": ["m", "m", "m", "n", None],
        }
    )
    out = run(raw, "long", generator_col="generator", source_name="toy")
    assert out.rejects.num_rows == 0
    t = out.table
    assert [p[0]["content"] for p in t["prompt"].to_pylist()] == ["B", "A"]
    assert t["prompt_id"].to_pylist() == [ids.prompt_id(user("B")), ids.prompt_id(user("A"))]
    assert t["source"].to_pylist() == ["toy", "toy"]
    assert t["metadata"].to_pylist() == [None, None]
    b = cands(out, 0)
    assert [c["response"] for c in b] == ["b1", "b2", "b3"]
    assert [c["sample_index"] for c in b] == [0, 1, 0]  # per generator
    pid = t["prompt_id"][0].as_py()
    assert b[2]["candidate_id"] == ids.candidate_id(pid, "n", 0, "b3")
    assert [c["generator"] for c in cands(out, 1)] == ["m", None]
    assert all(c["flags"] == [] for c in b)


def test_long_default_columns_and_message_prompts():
    msgs = [
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        [{"role": "user", "content": "Hi"}],
    ]
    raw = pa.table({"prompt": msgs, "completion": ["x", "y"]})
    out = run(raw, "long")
    assert out.table.num_rows == 2  # the system turn makes a different prompt
    assert out.table["prompt"][0].as_py() == msgs[0]
    raw2 = pa.table({"instruction": ["Q"], "output": ["A"]})
    assert cands(run(raw2, "long"))[0]["response"] == "A"


def test_long_scores_null_stays_null_nan_and_inf_reject():
    raw = pa.table(
        {
            "prompt": ["p", "p", "p", "p"],
            "response": ["a", "b", "c", "d"],
            "rm": [1.5, None, float("nan"), float("inf")],
            "votes": [1, 2, 3, None],
        }
    )
    out = run(raw, "long", score_cols=["rm", "votes"])
    assert [(c["scores"]["rm"], c["scores"]["votes"]) for c in cands(out)] == [
        (1.5, 1.0),
        (None, 2.0),
    ]
    r = reasons(out)
    assert r[2][0] == "rm" and "nan" in r[2][1].lower()
    assert r[3][0] == "rm" and "inf" in r[3][1]


def test_long_bad_rows_are_rejected_with_row_and_field():
    raw = pa.table(
        {
            "prompt": [
                user("ok"),
                None,
                [],
                [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                [{"role": "robot", "content": "q"}],
                user("   "),
                user("ok"),
            ],
            "response": ["r0", "r1", "r2", "r3", "r4", "r5", None],
        }
    )
    out = run(raw, "long")
    r = reasons(out)
    assert sorted(r) == [1, 2, 3, 4, 5, 6]
    assert r[1] == ("prompt", "missing prompt (null)")
    assert r[2][0] == "prompt" and "empty" in r[2][1]
    assert r[3][0] == "prompt" and "ends with an assistant turn" in r[3][1]
    assert r[4][0] == "prompt[0].role" and "'robot'" in r[4][1]
    assert r[5][0] == "prompt" and "empty prompt" in r[5][1]
    assert r[6] == ("response", "response is not a string (null)")
    assert out.table.num_rows == 1


def test_long_string_prompt_missing_or_empty_and_non_string_response():
    raw = pa.table({"prompt": ["q", None, "", "q2"], "response": [1, 2, 3, None]})
    out = run(raw, "long")
    r = reasons(out)
    assert out.table.num_rows == 0 and sorted(r) == [0, 1, 2, 3]
    assert r[0] == ("response", "response is not a string (int64)")
    assert r[1] == ("prompt", "missing prompt (null)")
    assert r[2] == ("prompt", "empty prompt")


def test_long_given_ids_conflicting_duplicates_name_the_first_row():
    raw = pa.table(
        {
            "id": [7, 8, 7, 7, None],
            "prompt": ["A", "B", "A", "Other", "C"],
            "response": ["a1", "b1", "a2", "o1", "c1"],
        }
    )
    out = run(raw, "long", id_col="id")
    assert out.table["prompt_id"].to_pylist() == ["7", "8"]
    assert [c["response"] for c in cands(out, 0)] == ["a1", "a2"]
    r = reasons(out)
    assert r[3][0] == "id" and "row 0" in r[3][1] and "different prompt" in r[3][1]
    assert out.rejects.to_pylist()[0]["prompt_id"] == "7"
    assert r[4][0] == "id"


def test_long_missing_named_column_raises():
    with pytest.raises(KeyError, match="nope"):
        to_pools(pa.table({"prompt": ["a"], "response": ["b"]}), "long", score_cols=["nope"])
    with pytest.raises(KeyError, match="prompt_col"):
        to_pools(pa.table({"q": ["a"], "response": ["b"]}), "long")


def test_unknown_layout():
    with pytest.raises(ValueError, match="unknown layout"):
        to_pools(pa.table({"a": [1]}), "nested")


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["p", "q", "r", ""]),
            st.text(max_size=4),
            st.sampled_from(["g1", "g2", None]),
        ),
        max_size=25,
    )
)
def test_long_property_every_row_becomes_one_candidate_or_one_reject(rows):
    raw = pa.table(
        {
            "prompt": [r[0] for r in rows],
            "response": [r[1] for r in rows],
            "gen": [r[2] for r in rows],
        },
        schema=pa.schema(
            [("prompt", pa.string()), ("response", pa.string()), ("gen", pa.string())]
        ),
    )
    out = run(raw, "long", generator_col="gen")
    got = sorted(
        (p[0]["content"], c["response"], c["generator"] or "")
        for p, cs in zip(
            out.table["prompt"].to_pylist(), out.table["candidates"].to_pylist(), strict=True
        )
        for c in cs
    )
    want = sorted((p, resp, g or "") for p, resp, g in rows if p)
    assert got == want
    assert out.rejects.num_rows == sum(1 for p, _, _ in rows if not p)
    assert out.table.num_rows == len({p for p, _, _ in rows if p})


def test_layouts_are_deterministic():
    raw = pa.table({"prompt": ["x", "y", "x"], "response": ["1", "2", "3"], "s": [0.1, 0.2, 0.3]})
    a = to_pools(raw, "long", score_cols=["s"]).table
    b = to_pools(raw, "long", score_cols=["s"]).table
    assert a.equals(b)


# --------------------------------------------------------------------------- pairs


def test_pairs_strings_with_prompt_and_margin():
    raw = pa.table(
        {
            "prompt": ["Q1", "Q2"],
            "chosen": ["good", "fine"],
            "rejected": ["bad", "worse"],
            "m": [0.5, None],
        }
    )
    out = run(raw, "pairs", margin_col="m")
    assert out.table.num_rows == 2
    c = cands(out, 0)
    assert [(x["response"], x["scores"]["preference"]) for x in c] == [("good", 1.0), ("bad", 0.0)]
    assert [json.loads(m) if m else None for m in out.table["metadata"].to_pylist()] == [
        {"margin": 0.5},
        None,
    ]


def test_pairs_message_lists_without_prompt_use_the_shared_prefix():
    conv = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    follow = {"role": "user", "content": "More?"}
    raw = pa.table(
        {
            "chosen": [
                conv + [follow, {"role": "assistant", "content": "Yes"}],
                conv,
                [{"role": "user", "content": "A"}, {"role": "assistant", "content": "x"}],
                [{"role": "user", "content": "A"}],
            ],
            "rejected": [
                conv + [follow, {"role": "assistant", "content": "No"}],
                [{"role": "user", "content": "Hey"}, {"role": "assistant", "content": "Yo"}],
                [
                    {"role": "user", "content": "A"},
                    {"role": "assistant", "content": "y"},
                    {"role": "assistant", "content": "z"},
                ],
                [{"role": "user", "content": "A"}, {"role": "assistant", "content": "y"}],
            ],
        }
    )
    out = run(raw, "pairs")
    assert out.table["prompt"][0].as_py() == conv + [follow]
    assert [x["response"] for x in cands(out)] == ["Yes", "No"]
    r = reasons(out)
    assert sorted(r) == [1, 2, 3]
    assert "differ before the final assistant message" in r[1][1]
    assert "differ" in r[2][1]
    assert r[3] == ("chosen", "the last message is not an assistant turn")


def test_pairs_explicit_prompt_with_trl_style_or_full_conversations():
    p = [{"role": "user", "content": "Q"}]
    a = [{"role": "assistant", "content": "A"}]
    b = [{"role": "assistant", "content": "B"}]
    raw = pa.table(
        {
            "prompt": [p, p, p],
            "chosen": [a, p + a, a + b],
            "rejected": [b, p + b, b],
        }
    )
    out = run(raw, "pairs")
    assert out.table.num_rows == 1  # rows 0 and 1 are the same prompt: merged
    assert [x["response"] for x in cands(out)] == ["A", "B", "A", "B"]
    assert [x["sample_index"] for x in cands(out)] == [0, 1, 2, 3]
    meta = json.loads(out.table["metadata"][0].as_py())
    cids = [x["candidate_id"] for x in cands(out)]
    assert meta == {
        "pairs": [
            {"chosen": cids[0], "rejected": cids[1]},
            {"chosen": cids[2], "rejected": cids[3]},
        ]
    }
    r = reasons(out)
    assert list(r) == [2] and r[2][0] == "chosen" and "one assistant message" in r[2][1]


def test_pairs_strings_without_prompt_are_refused_not_guessed():
    out = run(pa.table({"chosen": ["Q A"], "rejected": ["Q B"]}), "pairs")
    assert out.table.num_rows == 0
    assert "layout='hh'" in out.rejects["reason"][0].as_py()


def test_pairs_bad_prompt_and_nan_margin():
    raw = pa.table(
        {
            "prompt": [None, "", "ok"],
            "chosen": ["a", "a", "a"],
            "rejected": ["b", "b", "b"],
            "margin": [1.0, 1.0, float("nan")],
        }
    )
    r = reasons(run(raw, "pairs", margin_col="margin"))
    assert r[0] == ("prompt", "missing prompt (null)")
    assert r[1] == ("prompt", "empty prompt")
    assert r[2][0] == "margin" and "nan" in r[2][1].lower()


# --------------------------------------------------------------------------- per-side scores


def _ufb_row(prompt, chosen, rejected, score_chosen, score_rejected):
    """A row shaped like HuggingFaceH4/ultrafeedback_binarized: a prompt string, chosen and
    rejected as full [user, assistant] conversations, and a score per side."""
    u = {"role": "user", "content": prompt}
    return {
        "prompt": prompt,
        "prompt_id": "0" * 64,  # the dataset's own sha256 column: not used as id here
        "chosen": [u, {"role": "assistant", "content": chosen}],
        "rejected": [u, {"role": "assistant", "content": rejected}],
        "score_chosen": score_chosen,
        "score_rejected": score_rejected,
    }


UFB_OPTIONS = dict(chosen_score_col="score_chosen", rejected_score_col="score_rejected")


def test_pairs_ultrafeedback_binarized_scores_land_on_their_side(tmp_path):
    from prefdata.construct.recorded import RecordedPairs
    from prefdata.io.readers import read_pools

    rows = [
        _ufb_row("What is 2+2?", "4", "5", 9.0, 2.0),
        _ufb_row("What is 2+2?", "four", "4", 7.5, 6.0),  # same prompt: merged pool
        _ufb_row("Name a colour.", "Blue.", "Seven.", 8.0, None),  # null stays null
        _ufb_row("Say hi.", "Hi!", "Bye.", float("nan"), 1.0),  # NaN: rejected
        _ufb_row("Say no.", "No.", "Yes.", 3.0, float("inf")),  # infinity: rejected
        _ufb_row("Say yes.", "Yes.", "No.", 5.0, "high"),  # a string: rejected at read
    ]
    src = tmp_path / "ufb.jsonl"
    # json.dumps writes NaN / Infinity literals, which Python's json (and the reader) accept
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = read_pools(src, "pairs", **UFB_OPTIONS)
    pools, rejects = result.table, result.rejects
    assert score_names(pools) == ["preference", "score"]  # preference stays first
    assert validate(pools) == []
    got = {
        p[0]["content"]: [(c["response"], c["scores"]) for c in cs]
        for p, cs in zip(pools["prompt"].to_pylist(), pools["candidates"].to_pylist(), strict=True)
    }
    assert got == {
        "What is 2+2?": [
            ("4", {"preference": 1.0, "score": 9.0}),
            ("5", {"preference": 0.0, "score": 2.0}),
            ("four", {"preference": 1.0, "score": 7.5}),
            ("4", {"preference": 0.0, "score": 6.0}),
        ],
        "Name a colour.": [
            ("Blue.", {"preference": 1.0, "score": 8.0}),
            ("Seven.", {"preference": 0.0, "score": None}),
        ],
    }
    by_row = {(r["stage"], r["row"]): (r["field"], r["reason"]) for r in rejects.to_pylist()}
    assert set(by_row) == {("layout:pairs", 3), ("layout:pairs", 4), ("read", 5)}
    field, reason = by_row[("layout:pairs", 3)]
    assert field == "score_chosen" and "score_chosen" in reason and "nan" in reason
    field, reason = by_row[("layout:pairs", 4)]
    assert field == "score_rejected" and "score_rejected" in reason and "inf" in reason
    assert by_row[("read", 5)][0] == "score_rejected"
    # funnel: every input row is in a pool or rejected, stage by stage
    (read, layout) = result.funnel.entries
    assert (read.rows_in, read.rows_out, read.rows_rejected) == (6, 5, 1)
    assert (layout.rows_in, layout.rows_out, layout.rows_rejected) == (5, 3, 2)
    assert layout.rows_out + layout.rows_rejected == read.rows_out
    assert rejects.num_rows == read.rows_rejected + layout.rows_rejected

    # every recorded pair is recovered, each with its own side's score
    pairs = RecordedPairs()(pools).table
    recovered = sorted(
        (r["chosen"], r["rejected"], r["chosen_scores"]["score"], r["rejected_scores"]["score"])
        for r in pairs.to_pylist()
    )
    assert recovered == [
        ("4", "5", 9.0, 2.0),
        ("Blue.", "Seven.", 8.0, None),
        ("four", "4", 7.5, 6.0),
    ]


def test_pairs_side_scores_types_names_and_determinism():
    raw = pa.table(
        {
            "prompt": ["Q1", "Q2", "Q3"],
            "chosen": ["a", "b", "c"],
            "rejected": ["x", "y", "z"],
            "sc": pa.array([1, 2, None], pa.int32()),  # integers widen to float64
            "sr": pa.array([True, None, False]),  # as any numeric score column
            "txt": ["4.5", "5", "6"],  # text is not a number: every row rejected
        }
    )
    out = run(raw, "pairs", chosen_score_col="sc", rejected_score_col="sr", score_name="rm")
    assert out.rejects.num_rows == 0
    assert [[c["scores"]["rm"] for c in cs] for cs in out.table["candidates"].to_pylist()] == [
        [1.0, 1.0],
        [2.0, None],
        [None, 0.0],
    ]
    again = to_pools(raw, "pairs", chosen_score_col="sc", rejected_score_col="sr", score_name="rm")
    assert out.table.equals(again.table)
    bad = run(raw, "pairs", chosen_score_col="txt", rejected_score_col="sr")
    assert bad.table.num_rows == 0
    assert {r: f for r, (f, _) in reasons(bad).items()} == {0: "txt", 1: "txt", 2: "txt"}
    assert "not a number" in reasons(bad)[0][1]
    with pytest.raises(KeyError, match="score_chosen"):
        to_pools(raw, "pairs", **UFB_OPTIONS)
    # empty input keeps the score field in the schema
    empty = run(raw.slice(0, 0), "pairs", chosen_score_col="sc", rejected_score_col="sr")
    assert score_names(empty.table) == ["preference", "score"]


def test_hh_side_scores():
    raw = pa.table(
        {
            "chosen": ["\n\nHuman: Hi\n\nAssistant: Hello", "\n\nHuman: A\n\nAssistant: B"],
            "rejected": ["\n\nHuman: Hi\n\nAssistant: Go away", "\n\nHuman: A\n\nAssistant: C"],
            "score_chosen": [0.9, -math.inf],
            "score_rejected": [0.1, 0.0],
        }
    )
    out = run(raw, "hh", **UFB_OPTIONS)
    assert [(c["response"], c["scores"]) for c in cands(out)] == [
        ("Hello", {"preference": 1.0, "score": 0.9}),
        ("Go away", {"preference": 0.0, "score": 0.1}),
    ]
    assert reasons(out)[1][0] == "score_chosen" and "-inf" in reasons(out)[1][1]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"chosen_score_col": "score_chosen"}, "chosen_score_col needs rejected_score_col"),
        ({"rejected_score_col": "score_rejected"}, "rejected_score_col needs chosen_score_col"),
        ({**UFB_OPTIONS, "score_name": "preference"}, "recorded preference"),
        ({**UFB_OPTIONS, "score_name": ""}, "non-empty"),
    ],
)
def test_side_score_options_are_checked(tmp_path, options, message):
    from prefdata.io.readers import read_pools

    raw = pa.table({"prompt": ["Q"], "chosen": ["a"], "rejected": ["b"], "score_chosen": [1.0]})
    with pytest.raises(ValueError, match=message):
        to_pools(raw, "pairs", **options)
    with pytest.raises(ValueError, match=message):
        read_pools(tmp_path / "never-read.jsonl", "hh", **options)  # checked before reading


def test_side_score_options_only_for_pairwise_layouts():
    raw = pa.table({"prompt": ["Q"], "response": ["a"], "s": [1.0]})
    with pytest.raises(ValueError, match="pairs and hh layouts"):
        to_pools(raw, "long", chosen_score_col="s", rejected_score_col="s")


# --------------------------------------------------------------------------- hh


def test_hh_layout_splits_and_rejects_with_reasons():
    raw = pa.table(
        {
            "chosen": [
                "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: Joke?\n\nAssistant: Knock knock",
                "\n\nAssistant: B\n\nHuman: A\n\nAssistant: C",
                "\n\nHuman: A\n\nAssistant: B",
            ],
            "rejected": [
                "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: Joke?\n\nAssistant: No.",
                "\n\nHuman: A\n\nAssistant: D",
                "\n\nHuman: X\n\nAssistant: B",
            ],
        }
    )
    out = run(raw, "hh")
    assert out.table.num_rows == 1
    assert out.table["prompt"][0].as_py() == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Joke?"},
    ]
    assert [(c["response"], c["scores"]["preference"]) for c in cands(out)] == [
        ("Knock knock", 1.0),
        ("No.", 0.0),
    ]
    r = reasons(out)
    assert r[1][0] == "chosen" and "does not start with a Human turn" in r[1][1]
    assert r[2][0] == "chosen" and "differ before the final assistant turn" in r[2][1]


# --------------------------------------------------------------------------- ultrafeedback


def _uf_completion(model, text, overall, ratings, fine=None):
    ann = {
        aspect: {"Rating": rating, "Rationale": "because"}
        for aspect, rating in zip(
            ("helpfulness", "honesty", "instruction_following", "truthfulness"),
            ratings,
            strict=True,
        )
    }
    return {
        "custom_system_prompt": "Be honest.",
        "model": model,
        "principle": "honesty",
        "response": text,
        "annotations": ann,
        "critique": "ok",
        "overall_score": overall,
        "fine-grained_score": fine,
    }


def test_ultrafeedback_rows():
    raw = pa.Table.from_pylist(
        [
            {
                "source": "evol_instruct",
                "instruction": "Name a colour.",
                "models": ["m1", "m2"],
                "completions": [
                    _uf_completion("m1", "Red", 7.5, ["4", "5", "3", "N/A"], 4.0),
                    _uf_completion("m2", "Blue", 3.0, ["2", "N/A", "1", "2"], 1.67),
                ],
                "correct_answers": ["None"],
                "incorrect_answers": ["None"],
            },
            {
                "source": "sharegpt",
                "instruction": "Say hi.",
                "models": [],
                "completions": [],
                "correct_answers": [],
                "incorrect_answers": [],
            },
            {
                "source": "flan",
                "instruction": "Bad rating.",
                "models": ["m1"],
                "completions": [_uf_completion("m1", "x", 5.0, ["five", "5", "5", "5"], 5.0)],
                "correct_answers": [],
                "incorrect_answers": [],
            },
        ]
    )
    out = run(raw, "ultrafeedback", source_name="uf")
    assert out.table.num_rows == 2
    c = cands(out, 0)
    assert [x["generator"] for x in c] == ["m1", "m2"]
    assert c[0]["scores"] == {
        "overall_score": 7.5,
        "fine_grained_score": 4.0,
        "helpfulness": 4.0,
        "honesty": 5.0,
        "instruction_following": 3.0,
        "truthfulness": None,
    }
    assert c[1]["scores"]["honesty"] is None
    assert cands(out, 1) == []  # a prompt with no completions is an empty pool
    assert json.loads(out.table["metadata"][0].as_py()) == {"source": "evol_instruct"}
    r = reasons(out)
    assert r[2][0] == "completions[0].annotations.helpfulness.Rating"
    assert "'five'" in r[2][1]


def test_ultrafeedback_score_cols_override_and_simple_rating_field():
    raw = pa.Table.from_pylist(
        [{"prompt": "Q", "completions": [{"response": "A", "model": "m", "rating": 3}]}]
    )
    out = run(raw, "ultrafeedback", score_cols=["rating"])
    assert cands(out)[0]["scores"] == {"rating": 3.0}
    with pytest.raises(KeyError, match="no score 'overall'"):
        to_pools(raw, "ultrafeedback", score_cols=["overall"])


# --------------------------------------------------------------------------- pool


def test_pool_layout_round_trips_and_fills_missing_parts():
    long = run(
        pa.table({"prompt": ["a", "b"], "response": ["x", "y"], "s": [1.0, 2.0]}),
        "long",
        score_cols=["s"],
    )
    again = run(long.table, "pool")
    assert again.table.equals(long.table)
    bare = pa.Table.from_pylist(
        [
            {
                "prompt": "Hi",
                "candidates": [
                    {"response": "Hello", "generator": "m"},
                    {"response": "Yo", "generator": "m"},
                ],
            }
        ]
    )
    out = run(bare, "pool", source_name="mine")
    c = cands(out)
    pid = ids.prompt_id(user("Hi"))
    assert out.table["prompt_id"][0].as_py() == pid
    assert out.table["source"][0].as_py() == "mine"
    assert [x["sample_index"] for x in c] == [0, 1]
    assert c[1]["candidate_id"] == ids.candidate_id(pid, "m", 1, "Yo")
    prompts_only = run(pa.table({"prompt": ["a", "b"]}), "pool")
    assert prompts_only.table["candidates"].to_pylist() == [[], []]


def test_pool_layout_rejects_invalid_rows_with_validate_reasons():
    good = {
        "candidate_id": "c",
        "response": "r",
        "generator": None,
        "scores": {"s": 1.0},
        "flags": [],
    }
    rows = [
        {"prompt_id": "p1", "prompt": user("a"), "candidates": [good]},
        {"prompt_id": "p1", "prompt": user("b"), "candidates": [good]},
        {"prompt_id": "p3", "prompt": user("c"), "candidates": [good, good]},
        {"prompt_id": "p4", "prompt": user("d"), "candidates": [{**good, "response": None}]},
        {
            "prompt_id": "p5",
            "prompt": user("e"),
            "candidates": [{**good, "scores": {"s": math.nan}}],
        },
    ]
    out = run(pa.Table.from_pylist(rows), "pool")
    assert out.table["prompt_id"].to_pylist() == ["p1"]
    r = reasons(out)
    assert r[1][0] == "prompt_id" and "first at row 0" in r[1][1]
    assert r[2][0] == "candidates[1].candidate_id" and "duplicate" in r[2][1]
    assert r[3][0] == "candidates[0].response"
    assert r[4][0] == "candidates[0].scores.s" and "NaN" in r[4][1]
    assert out.rejects.to_pylist()[0]["prompt_id"] == "p1"


def test_pool_layout_rejects_blank_prompts_like_the_long_layout():
    strings = run(pa.table({"prompt": ["Hi", "  "]}), "pool")
    assert strings.table.num_rows == 1 and reasons(strings) == {1: ("prompt", "empty prompt")}
    lists = run(pa.table({"prompt": [user("Hi"), [{"role": "user", "content": " \n "}]]}), "pool")
    assert lists.table.num_rows == 1
    assert lists.rejects["reason"].to_pylist() == ["prompt: empty prompt (every message is blank)"]
    ends = run(
        pa.table({"prompt": [[*user("Hi"), {"role": "assistant", "content": "Yo"}]]}), "pool"
    )
    assert "ends with an assistant turn" in ends.rejects["reason"][0].as_py()


def test_pool_layout_wrong_types_raise_naming_the_field():
    t = pa.Table.from_pylist(
        [
            {
                "prompt": user("a"),
                "candidates": [
                    {"candidate_id": "c", "response": 5, "generator": None, "flags": []}
                ],
            }
        ]
    )
    with pytest.raises(TypeError, match=r"candidates\[\]\.response"):
        to_pools(t, "pool")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_empty_input_gives_empty_pools(layout):
    cols = {
        "pool": {"prompt": pa.array([], pa.string())},
        "long": {"prompt": pa.array([], pa.string()), "response": pa.array([], pa.string())},
        "pairs": {"chosen": pa.array([], pa.string()), "rejected": pa.array([], pa.string())},
        "hh": {"chosen": pa.array([], pa.string()), "rejected": pa.array([], pa.string())},
        "ultrafeedback": {
            "instruction": pa.array([], pa.string()),
            "completions": pa.array([], pa.list_(pa.struct([("response", pa.string())]))),
        },
    }[layout]
    out = run(pa.table(cols), layout)
    assert out.table.num_rows == 0 and out.rejects.num_rows == 0
    assert np.all(np.array(out.table.column_names) == np.array(pool_schema().names))


def test_pool_layout_adds_missing_scores_to_a_sliced_table():
    rows = [
        {
            "prompt_id": f"p{i}",
            "prompt": user(str(i)),
            "source": None,
            "metadata": None,
            "candidates": [
                {"candidate_id": f"c{i}", "response": "r", "generator": None, "flags": []}
            ],
        }
        for i in range(4)
    ]
    t = pa.Table.from_pylist(rows).slice(2)
    out = run(t, "pool")
    assert out.table["prompt_id"].to_pylist() == ["p2", "p3"]
    assert [c[0]["scores"] for c in out.table["candidates"].to_pylist()] == [{}, {}]
