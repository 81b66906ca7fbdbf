"""The bad-input corpus (tests/bad_inputs.py): every case ends as its user is owed, a
one-line error with exit status 2, or the good rows kept and every bad one in the
rejects with its stage, input row, field and reason, the counts adding up; never a
traceback. The ``prefdata`` commands run in this process, the recipe's cases as a user
runs them (a fresh process)."""

from __future__ import annotations

import pytest
from bad_inputs import CASES, run, verdict


def test_the_corpus_is_large_and_covers_every_reader_and_layout():
    assert len(CASES) >= 40
    names = " ".join(c.name for c in CASES)
    for kind in (
        "jsonl",
        "json-",
        "parquet",
        "csv",
        "hub",
        "long",
        "pairs",
        "hh",
        "ultrafeedback",
        "pool",
        "binarize",
    ):
        assert kind in names, kind


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case, tmp_path):
    got = run(case, tmp_path, in_process=True)
    good, what = verdict(case, got)
    assert "Traceback" not in got.stderr, got.stderr
    assert good, f"{case.name}: {what}\nstderr: {got.stderr[-800:]}"


def test_a_ragged_csv_row_that_is_not_utf8_is_rejected_quietly_in_a_fresh_process(tmp_path):
    """pyarrow fails to decode such a row inside its row callback, which Python prints
    with a traceback ("Exception ignored in ..."); the file is read again as Latin-1 and
    the row rejected. In this process pytest collects such errors itself, so the case runs
    as a user runs it."""
    case = next(c for c in CASES if c.name == "csv-ragged-latin1-row")
    got = run(case, tmp_path)
    good, what = verdict(case, got)
    assert good, what
    assert got.code == 0 and "Exception ignored" not in got.stderr, got.stderr
    assert "Traceback" not in got.stderr, got.stderr
