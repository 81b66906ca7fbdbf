"""Ranked lists (competition ranks, top-k) and unpaired KTO examples (bool labels)."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from datasets import Dataset

from prefdata.construct import Lists, Pairs, Unpaired, lists, unpair, unpaired
from prefdata.schema import LIST_SCHEMA, UNPAIRED_SCHEMA, pool_schema


def pool(pid: str, scores, flags=None) -> dict:
    flags = flags or [()] * len(scores)
    return {
        "prompt_id": pid,
        "prompt": [{"role": "user", "content": f"question {pid}"}],
        "source": None,
        "metadata": None,
        "candidates": [
            {
                "candidate_id": f"{pid}/{i}",
                "response": f"{pid} answer {i}",
                "generator": f"m{i}",
                "scores": {"rm": s},
                "flags": list(flags[i]),
            }
            for i, s in enumerate(scores)
        ],
    }


def table(*pools) -> pa.Table:
    return pa.Table.from_pylist(list(pools), schema=pool_schema(["rm"]))


def test_lists_competition_ranks_with_ties():
    t = table(pool("a", [1.0, 3.0, 3.0, 0.0, None]), pool("b", [2.0, None]))
    out = Lists(score="rm")(t)
    assert out.table.schema == LIST_SCHEMA
    resp = out.table["responses"][0].as_py()
    assert [(r["candidate_id"], r["score"], r["rank"]) for r in resp] == [
        ("a/1", 3.0, 1),
        ("a/2", 3.0, 1),
        ("a/0", 1.0, 3),
        ("a/3", 0.0, 4),
    ]
    assert resp[0]["generator"] == "m1" and resp[0]["response"] == "a answer 1"
    assert out.table["scorer"].to_pylist() == ["rm"]
    assert json.loads(out.table["provenance"][0].as_py())["score"] == "rm"
    assert [(r["prompt_id"], r["reason"], r["field"]) for r in out.rejects.to_pylist()] == [
        ("b", "fewer than two usable candidates", "scores.rm")
    ]


def test_lists_top_k_all_tied_and_flags():
    t = table(
        pool("a", [1.0, 3.0, 3.0, 0.0]),
        pool("t", [2.0, 2.0, 2.0]),
        pool("f", [5.0, 1.0, 2.0], flags=[("empty",), (), ()]),
    )
    out = lists(t, score="rm", top_k=3)
    got = {
        r["prompt_id"]: [(x["candidate_id"], x["rank"]) for x in r["responses"]]
        for r in out.table.to_pylist()
    }
    assert got == {"a": [("a/1", 1), ("a/2", 1), ("a/0", 3)], "f": [("f/2", 1), ("f/1", 2)]}
    assert out.rejects["reason"].to_pylist() == ["all usable candidates tie"]
    tied = Lists(score="rm", allow_ties=True)(t)
    assert [x["rank"] for x in tied.table["responses"][1].as_py()] == [1, 1, 1]
    with pytest.raises(ValueError):
        Lists(score="rm", top_k=1)


def test_lists_split_invariant():
    t = table(*[pool(f"p{i}", [float((i * 7 + j) % 4) for j in range(i % 5)]) for i in range(40)])
    whole = Lists(score="rm", top_k=3)(t)
    parts = [Lists(score="rm", top_k=3)(t.slice(0, 13)), Lists(score="rm", top_k=3)(t.slice(13))]
    assert pa.concat_tables([p.table for p in parts]).equals(whole.table)
    assert whole.table.num_rows + whole.rejects.num_rows == 40


def test_unpaired_threshold_labels_are_bool():
    t = table(pool("a", [0.2, 0.9, None, 0.5]), pool("n", [None]))
    out = unpaired(t, score="rm", threshold=0.5)
    assert out.table.schema == UNPAIRED_SCHEMA
    assert out.table.schema.field("label").type == pa.bool_()
    assert [(r["candidate_id"], r["label"], r["score"]) for r in out.table.to_pylist()] == [
        ("a/0", False, 0.2),
        ("a/1", True, 0.9),
        ("a/3", True, 0.5),
    ]
    assert out.rejects.to_pylist()[0]["reason"] == "no usable candidate"
    assert Unpaired(score="rm", threshold=0.5, min_candidates=4)(t).table.num_rows == 0


def test_unpair_from_pairs_dedupes_and_flags_conflicts():
    t = table(pool("a", [3.0, 1.0, 2.0]))
    pairs = Pairs("all-pairs", score="rm")(t).table  # (0,1), (0,2), (2,1)
    out = unpair(pairs)
    assert out.schema == UNPAIRED_SCHEMA
    rows = [(r["candidate_id"], r["label"], r["score"]) for r in out.to_pylist()]
    # a/2 is rejected in one pair and chosen in another: both labels kept, as TRL would
    assert rows == [
        ("a/0", True, 3.0),
        ("a/1", False, 1.0),
        ("a/2", False, 2.0),
        ("a/2", True, 2.0),
    ]
    conflict = {
        r["candidate_id"]: json.loads(r["provenance"])["conflicting_labels"]
        for r in out.to_pylist()
    }
    assert conflict == {"a/0": False, "a/1": False, "a/2": True}
    assert unpair(pairs, dedupe=False).num_rows == 2 * pairs.num_rows


def test_unpair_matches_trl():
    """Our unpair(dedupe=False) gives the same examples as TRL's unpair_preference_dataset
    (trl/data_utils.py), the function KTOTrainer users call on pairs."""
    from trl.data_utils import unpair_preference_dataset

    t = table(pool("a", [3.0, 1.0, 2.0]), pool("b", [0.0, 1.0]))
    pairs = Pairs("all-pairs", score="rm")(t).table
    ds = Dataset.from_dict(
        {
            "prompt": pairs["prompt"].to_pylist(),
            "chosen": [[{"role": "assistant", "content": c}] for c in pairs["chosen"].to_pylist()],
            "rejected": [
                [{"role": "assistant", "content": r}] for r in pairs["rejected"].to_pylist()
            ],
        }
    )
    theirs = unpair_preference_dataset(ds)
    ours = unpair(pairs, dedupe=False)
    key = lambda p, c, lab: (p[0]["content"], c, lab)  # noqa: E731
    trl_rows = sorted(key(r["prompt"], r["completion"][0]["content"], r["label"]) for r in theirs)
    our_rows = sorted(key(r["prompt"], r["completion"], r["label"]) for r in ours.to_pylist())
    assert trl_rows == our_rows
    assert all(type(v) is bool for v in ours["label"].to_pylist())
