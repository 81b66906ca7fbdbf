"""Pairs: every strategy on hand-computed pools, ties, nulls, flags, caps, determinism."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from prefdata.construct import STRATEGIES, Pairs, curriculum_order, pair_schema, pairs
from prefdata.construct.candidates import pool_seed
from prefdata.pipeline import Funnel, MissingColumnsError
from prefdata.schema import PAIR_SCHEMA, pool_schema


def cand(pid: str, i: int, score, gen: str = "g", flags=(), text: str | None = None) -> dict:
    return {
        "candidate_id": f"{pid}/{i}",
        "response": text if text is not None else f"{pid} answer {i}",
        "generator": gen,
        "sample_index": i,
        "scores": {"rm": score},
        "flags": list(flags),
    }


def pool(pid: str, scores, gens=None, flags=None, texts=None) -> dict:
    n = len(scores)
    gens = gens or ["g"] * n
    flags = flags or [()] * n
    texts = texts or [None] * n
    return {
        "prompt_id": pid,
        "prompt": [{"role": "user", "content": f"question {pid}"}],
        "source": "test",
        "metadata": None,
        "candidates": [cand(pid, i, scores[i], gens[i], flags[i], texts[i]) for i in range(n)],
    }


def table(*pools) -> pa.Table:
    return pa.Table.from_pylist(list(pools), schema=pool_schema(["rm"]))


def picks(out) -> list[tuple[str, str, float | None]]:
    return [(r["chosen_id"], r["rejected_id"], r["margin"]) for r in out.table.to_pylist()]


def reasons(out) -> list[tuple[str, str, str]]:
    return [(r["prompt_id"], r["reason"], r["field"]) for r in out.rejects.to_pylist()]


KW = {
    "by-generator": {"chosen_generators": ("strong",), "rejected_generators": ("weak",)},
    "by-correctness": {"threshold": 0.5},
}


def random_pools(n: int, seed: int = 7) -> pa.Table:
    """Pools with ties, nulls, flags, small and empty candidate lists."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n):
        k = int(rng.integers(0, 7))
        scores = [None if rng.random() < 0.1 else float(rng.integers(0, 4)) / 3 for _ in range(k)]
        gens = [str(rng.choice(["strong", "weak", "other"])) for _ in range(k)]
        flags = [("empty",) if rng.random() < 0.1 else () for _ in range(k)]
        rows.append(pool(f"p{p:03d}", scores, gens, flags))
    return table(*rows)


def test_best_worst_hand_computed():
    out = Pairs("best-worst", score="rm")(table(pool("a", [2.0, 5.0, 1.0, 5.0, 3.0])))
    # two candidates tie for best: the earlier one (position 1) is chosen
    assert picks(out) == [("a/1", "a/2", 4.0)]
    row = out.table.to_pylist()[0]
    assert (row["chosen_score"], row["rejected_score"]) == (5.0, 1.0)
    assert row["chosen"] == "a answer 1" and row["prompt"] == [
        {"role": "user", "content": "question a"}
    ]
    assert row["strategy"] == "best-worst" and row["p_chosen"] is None and row["votes"] is None
    prov = json.loads(row["provenance"])
    assert (prov["score"], prov["seed"], prov["strategy"]) == ("rm", 0, "best-worst")
    assert prov["config"] == {"score": "rm"}  # only what differs from the defaults
    assert prov["fingerprint"] == Pairs("best-worst", score="rm").fingerprint
    # two equally low candidates: the earlier is the rejected
    assert picks(Pairs("best-worst", score="rm")(table(pool("b", [5.0, 1.0, 1.0])))) == [
        ("b/0", "b/1", 4.0)
    ]


def test_output_schema_is_canonical():
    t = random_pools(30)
    for s in STRATEGIES:
        out = Pairs(s, score=None if s == "by-generator" else "rm", **KW.get(s, {}))(t)
        scores_type = t.schema.field("candidates").type.value_type.field("scores").type
        assert out.table.schema == pair_schema(s).append(
            pa.field("chosen_scores", scores_type)
        ).append(pa.field("rejected_scores", scores_type))
        for side in ("chosen", "rejected"):
            got = [d["rm"] for d in out.table[f"{side}_scores"].to_pylist()]
            assert got == out.table[f"{side}_score"].to_pylist() or s == "by-generator"
        assert out.table.schema.names[: len(PAIR_SCHEMA)] == PAIR_SCHEMA.names
        assert pa.schema(list(out.table.schema)[: len(PAIR_SCHEMA)]) == PAIR_SCHEMA


def test_ties_are_rejected_unless_allowed():
    t = table(pool("t", [3.0, 3.0]))
    out = Pairs("best-worst", score="rm")(t)
    assert out.table.num_rows == 0
    assert reasons(out) == [("t", "all candidate pairs tie", "scores.rm")]
    tied = Pairs("best-worst", score="rm", allow_ties=True)(t)
    assert picks(tied) == [("t/0", "t/1", 0.0)]
    for s in ("best-random", "sweet-spot"):
        assert reasons(Pairs(s, score="rm")(t)) == [("t", "all usable candidates tie", "scores.rm")]
    # all-pairs drops only the tied pair
    assert picks(Pairs("all-pairs", score="rm")(table(pool("u", [2.0, 2.0, 1.0])))) == [
        ("u/0", "u/2", 1.0),
        ("u/1", "u/2", 1.0),
    ]


def test_null_scores_and_flags():
    t = table(
        pool("n1", [None, 4.0, 2.0], flags=[(), (), ("empty",)]),
        pool("n2", [4.0, None, 2.0]),
        pool("f", [4.0, 9.0, 1.0], flags=[(), ("empty",), ()]),
        pool("z", []),
    )
    out = Pairs("best-worst", score="rm")(t)
    assert picks(out) == [("n2/0", "n2/2", 2.0), ("f/0", "f/2", 3.0)]
    assert reasons(out) == [
        ("n1", "fewer than two usable candidates", "scores.rm"),
        ("z", "fewer than two usable candidates", "candidates"),
    ]
    assert out.rejects["row"].to_pylist() == [0, 3]
    unflagged = Pairs("best-worst", score="rm", exclude_flags=())(t)
    assert ("f/1", "f/2", 8.0) in picks(unflagged)


def test_flags_hidden_under_a_null_candidate_are_ignored():
    """A null candidate whose struct still holds a flag list (valid Arrow, which masked
    structs and polars produce): the hidden flag flags nobody, the visible one its own."""
    good = table(pool("h", [1.0, 3.0, 2.0], flags=[("empty",), (), ("empty",)]))
    cands = good["candidates"].combine_chunks()
    values = cands.values
    kids = [values.field(i) for i in range(values.type.num_fields)]
    hidden = pa.StructArray.from_arrays(
        kids, fields=list(values.type), mask=pa.array([True, False, False])
    )
    lists = pa.ListArray.from_arrays(cands.offsets, hidden)
    t = good.set_column(good.schema.get_field_index("candidates"), "candidates", lists)
    assert t["candidates"].to_pylist()[0][0] is None
    out = Pairs("best-worst", score="rm")(t)
    assert picks(out) == []  # one usable candidate left: position 1
    assert reasons(out) == [("h", "fewer than two usable candidates", "candidates.flags")]
    kept = Pairs("best-worst", score="rm", exclude_flags=())(t)
    assert picks(kept) == [("h/1", "h/2", 1.0)]


def test_recorded_pairs_skip_a_null_lists_hidden_candidates():
    from prefdata.construct.recorded import RecordedPairs

    t = pa.Table.from_pylist([pool(p, [1.0, 0.0]) for p in ("a", "b")], schema=pool_schema(["rm"]))
    lists = t["candidates"].combine_chunks()
    hidden = pa.ListArray.from_arrays(lists.offsets, lists.values, mask=pa.array([True, False]))
    t = t.set_column(t.schema.get_field_index("candidates"), "candidates", hidden)
    out = RecordedPairs(preference="rm")(t)
    assert picks(out) == [("b/0", "b/1", None)]
    assert reasons(out)[0][0] == "a"


def test_sweet_spot_picks_mean_minus_k_std():
    # 12 candidates: 0, 1 and ten 2s. mean = 21/12 = 1.75; population variance =
    # (1.75^2 + 0.75^2 + 10 * 0.25^2) / 12 = 4.25 / 12, std = 0.5951; mean - 2 std = 0.5598,
    # which is 0.4402 from the 1 and 0.5598 from the 0: the 1 (position 1) is rejected.
    t = table(pool("s", [0.0, 1.0] + [2.0] * 10))
    assert picks(Pairs("sweet-spot", score="rm")(t)) == [("s/2", "s/1", 1.0)]
    assert picks(Pairs("best-worst", score="rm")(t)) == [("s/2", "s/0", 2.0)]
    # k = 1 on 1..5: mean 3, std sqrt(2), target 1.586: the 2 (position 1)
    t = table(pool("k", [1.0, 2.0, 3.0, 4.0, 5.0]))
    assert picks(Pairs("sweet-spot", score="rm", k=1.0)(t)) == [("k/4", "k/1", 3.0)]
    # k = 0: the mean itself (3) is the target
    assert picks(Pairs("sweet-spot", score="rm", k=0.0)(t)) == [("k/4", "k/2", 2.0)]


def test_best_random_is_seeded_uniform_and_never_a_tie():
    rows = [pool(f"r{i:03d}", [5.0, 1.0, 2.0, 3.0, 5.0]) for i in range(300)]
    t = table(*rows)
    out = Pairs("best-random", score="rm", seed=3)(t)
    assert out.table.num_rows == 300
    assert set(out.table["chosen_id"].to_pylist()) == {f"r{i:03d}/0" for i in range(300)}
    rejected = [r.split("/")[1] for r in out.table["rejected_id"].to_pylist()]
    counts = {k: rejected.count(k) for k in "0123456789" if rejected.count(k)}
    assert set(counts) == {"1", "2", "3"}  # never the tied best (position 4)
    assert all(60 < c < 140 for c in counts.values()), counts
    prov = [json.loads(p) for p in out.table["provenance"].to_pylist()]
    assert [p["pool_seed"] for p in prov] == [
        pool_seed(3, f"r{i:03d}", "pairs/best-random") for i in range(300)
    ]
    assert out.table.equals(Pairs("best-random", score="rm", seed=3)(t).table)
    other = Pairs("best-random", score="rm", seed=4)(t).table["rejected_id"]
    assert other.to_pylist() != out.table["rejected_id"].to_pylist()
    tied = Pairs("best-random", score="rm", seed=3, allow_ties=True)(t)
    assert "4" in {r.split("/")[1] for r in tied.table["rejected_id"].to_pylist()}


def test_all_pairs_order_min_margin_and_cap():
    t = table(pool("a", [3.0, 1.0, 2.0]))
    assert picks(Pairs("all-pairs", score="rm")(t)) == [
        ("a/0", "a/1", 2.0),
        ("a/0", "a/2", 1.0),
        ("a/2", "a/1", 1.0),
    ]
    assert picks(Pairs("all-pairs", score="rm", min_margin=1.5)(t)) == [("a/0", "a/1", 2.0)]
    assert picks(Pairs("all-pairs", score="rm", max_pairs_per_prompt=2)(t)) == [
        ("a/0", "a/1", 2.0),
        ("a/0", "a/2", 1.0),
    ]
    out = Pairs("all-pairs", score="rm", min_margin=5.0)(t)
    assert reasons(out) == [("a", "no pair with margin >= min_margin", "scores.rm")]


def test_curriculum_easy_to_hard():
    t = table(pool("c", [1.0, 4.0, 2.0, 3.0]), pool("d", [0.0, 2.0, 1.0]))
    out = Pairs("curriculum", score="rm")(t)
    rows = out.table.to_pylist()
    assert [
        (r["chosen_id"], r["rejected_id"], r["margin"], r["curriculum_stage"]) for r in rows
    ] == [
        ("c/1", "c/0", 3.0, 1),
        ("c/1", "c/2", 2.0, 2),
        ("c/1", "c/3", 1.0, 3),
        ("d/1", "d/0", 2.0, 1),
        ("d/1", "d/2", 1.0, 2),
    ]
    ordered = curriculum_order(out.table)
    assert ordered["curriculum_stage"].to_pylist() == [1, 1, 2, 2, 3]
    assert ordered["prompt_id"].to_pylist() == ["c", "d", "c", "d", "c"]
    capped = Pairs("curriculum", score="rm", max_pairs_per_prompt=1)(t)
    assert capped.table["rejected_id"].to_pylist() == ["c/0", "d/0"]


def test_by_generator_needs_no_scores():
    gens = ["weak", "strong", "weak", "other", "strong"]
    rows = [pool("g", [None] * 5, gens), pool("h", [None, None], ["weak", "other"])]
    t = pa.Table.from_pylist(rows, schema=pool_schema(["rm"]))
    stage = Pairs("by-generator", chosen_generators="strong", rejected_generators=["weak"])
    out = stage(t)
    assert picks(out) == [
        ("g/1", "g/0", None),
        ("g/1", "g/2", None),
        ("g/4", "g/0", None),
        ("g/4", "g/2", None),
    ]
    assert set(out.table["chosen_generator"].to_pylist()) == {"strong"}
    assert reasons(out) == [
        ("h", "no usable candidate from the chosen generators", "candidates.generator")
    ]
    # with a score the margin is filled, and a zero or negative margin is kept
    scored = table(pool("s", [1.0, 1.0, 3.0], ["strong", "weak", "weak"]))
    out = Pairs("by-generator", score="rm", chosen_generators="strong", rejected_generators="weak")(
        scored
    )
    assert picks(out) == [("s/0", "s/1", 0.0), ("s/0", "s/2", -2.0)]
    # pools without any score field at all
    bare = pa.Table.from_pylist(
        [
            {
                **rows[0],
                "candidates": [
                    {k: v for k, v in c.items() if k != "scores"} for c in rows[0]["candidates"]
                ],
            }
        ],
        schema=pool_schema([]),
    )
    assert stage(bare).table.num_rows == 4


def test_by_correctness_pass_against_fail():
    t = table(
        pool("v", [1.0, 0.0, 1.0, 0.25]),
        pool("all_pass", [1.0, 1.0]),
        pool("all_fail", [0.0, 0.25]),
    )
    out = Pairs("by-correctness", score="rm", threshold=0.5)(t)
    assert picks(out) == [
        ("v/0", "v/1", 1.0),
        ("v/2", "v/1", 1.0),
        ("v/0", "v/3", 0.75),
        ("v/2", "v/3", 0.75),
    ]
    assert reasons(out) == [
        ("all_pass", "no failing candidate", "scores.rm"),
        ("all_fail", "no passing candidate", "scores.rm"),
    ]
    assert (
        Pairs("by-correctness", score="rm", threshold=0.5, max_pairs_per_prompt=1)(t).table.num_rows
        == 1
    )


def test_identical_texts_and_bad_prompts_are_rejected():
    same = pool("i", [2.0, 1.0], texts=["same", "same"])
    empty = {**pool("e", [2.0, 1.0]), "prompt": []}
    out = Pairs("best-worst", score="rm")(table(same, empty))
    assert reasons(out) == [
        ("i", "only identical responses", "candidates.response"),
        ("e", "prompt is empty", "prompt"),
    ]


def test_quantile_is_two_pass():
    t = table(*[pool(f"q{m}", [0.0, float(m)]) for m in (1, 2, 3, 4)])
    stage = Pairs("best-worst", score="rm", quantile=0.5)
    with pytest.raises(ValueError, match="fitted"):
        stage(t)
    fitted = stage.fit(t)
    assert fitted.fitted_min_margin == 2.5  # median of 1, 2, 3, 4
    assert fitted.fit([t.slice(0, 1), t.slice(1)]).fitted_min_margin == 2.5  # shards merge
    out = fitted(t)
    assert out.table["margin"].to_pylist() == [3.0, 4.0]
    assert [r[1] for r in reasons(out)] == ["no pair with margin >= min_margin"] * 2
    assert pairs(t, "best-worst", "rm", quantile=0.5).table.equals(out.table)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_deterministic_and_split_invariant(strategy):
    t = random_pools(80)
    stage = Pairs(
        strategy,
        score=None if strategy == "by-generator" else "rm",
        max_pairs_per_prompt=3,
        **KW.get(strategy, {}),
    )
    whole = stage(t)
    again = stage(t)
    assert whole.table.equals(again.table) and whole.rejects.equals(again.rejects)
    a, b = stage(t.slice(0, 37)), stage(t.slice(37))
    assert pa.concat_tables([a.table, b.table]).equals(whole.table)
    rows = a.rejects["row"].to_pylist() + [r + 37 for r in b.rejects["row"].to_pylist()]
    assert rows == whole.rejects["row"].to_pylist()
    assert (
        a.rejects["reason"].to_pylist() + b.rejects["reason"].to_pylist()
        == whole.rejects["reason"].to_pylist()
    )
    # the pool funnel: every pool yields pairs or is rejected, never both
    yielded = set(whole.table["prompt_id"].to_pylist())
    rejected = set(whole.rejects["prompt_id"].to_pylist())
    assert not yielded & rejected and len(yielded) + len(rejected) == t.num_rows
    f = Funnel()
    f.add(stage.name, *stage.funnel_counts(t.num_rows, whole))
    assert f.entries[0].rows_out == len(yielded)
    if strategy != "by-generator":
        m = np.array(whole.table["margin"].to_pylist())
        assert (m > 0).all()
    counts = np.unique(whole.table["prompt_id"].to_pylist(), return_counts=True)[1]
    assert counts.max(initial=0) <= 3
    assert not any(r["chosen"] == r["rejected"] for r in whole.table.to_pylist())


@pytest.mark.parametrize("strategy", ["best-worst", "best-random", "sweet-spot"])
@pytest.mark.parametrize("allow_ties", [False, True])
def test_fixed_size_pools_take_the_same_pairs_as_the_general_path(strategy, allow_ties):
    """Pools that all have K usable candidates are picked with a row-wise argmax/argmin;
    with one odd pool added the same pools go through first_per_pool. Ties (scores from
    4 levels), identical texts and equal best/worst must come out the same either way."""
    rng = np.random.default_rng(3)
    rows = []
    for p in range(300):
        scores = [float(rng.integers(0, 4)) for _ in range(5)]
        texts = [f"t{rng.integers(0, 3)}" if p % 7 == 0 else None for _ in range(5)]
        rows.append(pool(f"p{p:03d}", scores, texts=texts))
    rows[0]["candidates"] = [dict(c, scores={"rm": 1.0}) for c in rows[0]["candidates"]]
    fixed = table(*rows)
    mixed = table(*rows, pool("odd", [2.0, 1.0]))
    stage = Pairs(strategy, score="rm", allow_ties=allow_ties, seed=5)
    a, b = stage(fixed), stage(mixed)
    assert a.table.equals(b.table.slice(0, a.table.num_rows))
    assert b.table.num_rows == a.table.num_rows + 1
    assert a.rejects.equals(b.rejects)
    assert a.table.num_rows > 200 and a.rejects.num_rows > 5  # both outcomes exercised


def test_config_errors_and_missing_columns():
    with pytest.raises(ValueError, match="unknown strategy"):
        Pairs("max-max", score="rm")
    with pytest.raises(ValueError, match="needs a score"):
        Pairs("best-worst")
    with pytest.raises(ValueError, match="chosen_generators"):
        Pairs("by-generator")
    with pytest.raises(ValueError, match="threshold"):
        Pairs("by-correctness", score="rm")
    with pytest.raises(MissingColumnsError, match="scores.judge"):
        Pairs("best-worst", score="judge")(random_pools(2))


def test_empty_input():
    out = Pairs("curriculum", score="rm")(table())
    assert out.table.num_rows == 0
    assert out.table.schema.names == [
        *pair_schema("curriculum").names,
        "chosen_scores",
        "rejected_scores",
    ]


def test_byte_identical_parquet(tmp_path):
    from prefdata.io.parquet import write_parquet

    t = random_pools(50)
    for s in ("best-random", "curriculum"):
        a = write_parquet(Pairs(s, score="rm", seed=11)(t).table, tmp_path / f"{s}-a.parquet")
        b = write_parquet(Pairs(s, score="rm", seed=11)(t).table, tmp_path / f"{s}-b.parquet")
        assert a.read_bytes() == b.read_bytes()
