"""Decontamination against a benchmark file, and length-bias control."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pytest

from prefdata.filter import Decontaminate, LengthControl, length_bias_report, read_benchmark
from prefdata.schema import pool_schema

BENCH = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips "
    "in May.",
    "What is the boiling point of water at sea level in degrees Celsius?",
]


def pools(texts: list[str]) -> pa.Table:
    rows = [
        {"prompt_id": f"p{i}", "prompt": [{"role": "user", "content": t}], "candidates": []}
        for i, t in enumerate(texts)
    ]
    return pa.Table.from_pylist(rows, schema=pool_schema())


@pytest.fixture()
def bench_file(tmp_path):
    path = tmp_path / "bench.jsonl.gz"
    with gzip.open(path, "wt") as fh:
        for q in BENCH:
            fh.write(json.dumps({"question": q, "answer": "x"}) + "\n")
    return path


def test_read_benchmark_formats(bench_file, tmp_path):
    assert read_benchmark(bench_file) == BENCH
    txt = tmp_path / "b.txt"
    txt.write_text("one\n\ntwo\n")
    assert read_benchmark(txt) == ["one", "two"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"q": 1}) + "\n")
    with pytest.raises(KeyError, match="record 0"):
        read_benchmark(bad)


def test_decontaminate_hand_computed_overlap(bench_file):
    prompts = [
        # the whole benchmark question, reworded punctuation/case: every 5-gram matches
        "natalia sold clips to 48 of her friends in april and then she sold half as many "
        "clips in may",
        # 8 words, 4 five-grams; the first 2 ("what is the boiling point", "is the boiling
        # point of") are in item 1 -> share 2/4 = 0.5
        "What is the boiling point of pure ethanol?",
        "Write a limerick about a cat.",
    ]
    stage = Decontaminate(path=str(bench_file), n=5, threshold=0.5, benchmark_name="gsm")
    out = stage(pools(prompts))
    assert out.table["prompt_id"].to_pylist() == ["p2"]
    assert out.rejects["reason"].to_pylist() == [
        "contaminated: gsm#0 (1.00 of 5-grams) " + BENCH[0][:60],
        "contaminated: gsm#1 (0.50 of 5-grams) " + BENCH[1][:60],
    ]
    strict = Decontaminate(path=str(bench_file), n=5, threshold=0.6)(pools(prompts))
    assert strict.table["prompt_id"].to_pylist() == ["p1", "p2"]
    # relative to the benchmark item: 2 of item 1's 9 five-grams -> 0.22
    rel = Decontaminate(path=str(bench_file), n=5, threshold=0.25, relative_to="benchmark")
    assert rel(pools(prompts)).table["prompt_id"].to_pylist() == ["p1", "p2"]
    with pytest.raises(ValueError, match="benchmark path or texts"):
        Decontaminate()


def test_length_bias_report_and_control():
    pairs = pa.table(
        {
            "prompt_id": ["a", "b", "c", "d"],
            "chosen": ["w " * 30, "w " * 10, "w " * 5, "w w"],
            "rejected": ["w " * 10, "w " * 10, "w " * 20, "w"],
            "margin": [0.05, 0.05, 0.05, 3.0],
        }
    )
    rep = length_bias_report(pairs)
    # unequal lengths: a (longer), c (shorter), d (longer) -> 2 of 3
    assert rep["chosen_longer"] == pytest.approx(2 / 3)
    assert rep["share_equal"] == 0.25
    out = LengthControl(min_margin=0.1, max_ratio=2.5, alpha=0.5)(pairs)
    # a: small margin and chosen 3x longer -> dropped; c: rejected longer (allowed);
    # d: ratio 2 but a large margin
    assert out.table["prompt_id"].to_pylist() == ["b", "c", "d"]
    assert out.rejects["reason"].to_pylist() == ["length: small margin, chosen 3.0x longer"]
    assert out.table["length_ratio"].to_pylist() == pytest.approx([1.0, 0.25, 2.0])
    import math

    assert out.table["margin_lc"].to_pylist() == pytest.approx(
        [0.05, 0.05 - 0.5 * math.log(0.25), 3.0 - 0.5 * math.log(2.0)]
    )
    both = LengthControl(min_margin=0.1, max_ratio=2.5, only_chosen_longer=False)(pairs)
    assert both.table["prompt_id"].to_pylist() == ["b", "d"]
    with pytest.raises(ValueError, match="both"):
        LengthControl(min_margin=0.1)
