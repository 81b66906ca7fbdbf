"""Score normalisation: mergeable statistics and the four methods, hand-computed."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from prefdata.annotate import Normalise, ScoreStats, ScoreStatsFit, fit_score_stats
from prefdata.pipeline import Pipeline
from prefdata.schema import pool_schema


def pools(score_lists: list[list[float | None]], name: str = "rm") -> pa.Table:
    rows = [
        {
            "prompt_id": f"p{i}",
            "prompt": [{"role": "user", "content": f"q{i}"}],
            "candidates": [
                {"candidate_id": f"c{i}-{j}", "response": f"r{j}", "scores": {name: s}}
                for j, s in enumerate(scores)
            ],
        }
        for i, scores in enumerate(score_lists)
    ]
    return pa.Table.from_pylist(rows, schema=pool_schema([name]))


def normalised(table: pa.Table, field: str) -> list[list[float | None]]:
    return [[c["scores"][field] for c in pool] for pool in table["candidates"].to_pylist()]


def test_stats_merge_hand_computed():
    # [1, 2, 3, 4, 5]: mean 3, M2 = 4 + 1 + 0 + 1 + 4 = 10, population std sqrt(2)
    merged = ScoreStats.of([1.0, 2.0]).merge(ScoreStats.of([3.0])).merge(ScoreStats.of([4.0, 5.0]))
    assert (merged.count, merged.mean, merged.m2) == (5, 3.0, 10.0)
    assert merged.std == pytest.approx(math.sqrt(2))
    assert ScoreStats().merge(merged) == merged and merged.merge(ScoreStats()) == merged


def test_stats_merge_any_split_matches_one_pass():
    x = np.random.default_rng(0).normal(3.0, 2.0, 1000)
    one = ScoreStats.of(x)
    for cuts in ([10, 500], [1, 2, 999], [333]):
        parts = np.split(x, cuts)
        merged = ScoreStats()
        for p in reversed(parts):
            merged = merged.merge(ScoreStats.of(p))
        assert merged.count == one.count
        assert merged.mean == pytest.approx(one.mean, rel=1e-12)
        assert merged.m2 == pytest.approx(one.m2, rel=1e-10)


def test_stats_are_bit_identical_to_the_textbook_formula():
    """M2 must not depend on how it is summed (a BLAS dot product rounds differently),
    or z-scores, and every output fingerprinted on them, would change between versions."""
    rng = np.random.default_rng(11)
    for size in (1, 7, 10_000, 100_003):
        x = rng.normal(3.0, 2.0, size) * 10.0 ** rng.integers(-3, 4)
        x[rng.random(size) < 0.05] = np.nan
        kept = x[~np.isnan(x)]
        st = ScoreStats.of(x)
        mean = float(kept.mean())
        assert st.mean == mean and st.m2 == float(((kept - mean) ** 2).sum())


def test_dataset_zscore_two_pass_equals_whole_table():
    # pool 0: [1, 3], pool 1: [5, None] -> mean 3, variance (4 + 0 + 4) / 3, null skipped
    table = pools([[1.0, 3.0], [5.0, None]])
    fit = ScoreStatsFit().update(table.slice(0, 1)).merge(ScoreStatsFit().update(table.slice(1)))
    stats = fit.stats()
    assert stats["rm"].count == 3 and stats["rm"].mean == 3.0
    assert stats["rm"].variance == pytest.approx(8 / 3)
    two_pass = Normalise(method="zscore", stats=stats)(table).table
    whole = Normalise(method="zscore")(table).table
    z = 2 / math.sqrt(8 / 3)  # 1.2247...
    got = normalised(two_pass, "rm.z")
    assert got[0] == pytest.approx([-z, 0.0]) and got[1][0] == pytest.approx(z)
    assert got[1][1] is None
    assert two_pass.equals(whole)
    # the raw score is kept next to the normalised one
    assert normalised(two_pass, "rm") == [[1.0, 3.0], [5.0, None]]


def test_update_files_reads_only_scores_and_matches_update(tmp_path, monkeypatch):
    """``update_files`` fits per row group from the scores alone (the candidates' texts
    are not read), equal to ``update`` on the same batches; unscored files are skipped."""
    import pyarrow.parquet as pq

    import prefdata.io.parquet as parquet_io
    from prefdata.io.parquet import write_parquet

    monkeypatch.setattr(parquet_io, "PARALLEL_MIN_BYTES", 0)  # the threaded reader too
    rng = np.random.default_rng(1)
    table = pools([[float(x) for x in rng.normal(size=3)] + [None] for _ in range(50)])
    (tmp_path / "in").mkdir()
    pq.write_table(table, tmp_path / "in" / "a.parquet", row_group_size=16)
    write_parquet(pools([[None]]), tmp_path / "in" / "b.parquet")
    bare = pa.Table.from_pylist(
        [{"prompt_id": "q", "prompt": [{"role": "user", "content": "q"}], "candidates": []}],
        schema=pool_schema(),
    )
    write_parquet(bare, tmp_path / "in" / "c.parquet")  # no scores struct in the file
    # a writer's older list naming (list.item): still read
    pq.write_table(
        table.slice(0, 10), tmp_path / "in" / "d.parquet", use_compliant_nested_type=False
    )

    read = []
    real = parquet_io.read_row_group

    def spy(path, group, **kw):
        out = real(path, group, **kw)
        read.append(out.schema)
        return out

    import prefdata.io.shards as shards

    monkeypatch.setattr(shards, "read_row_group", spy)
    got = ScoreStatsFit().update_files(tmp_path / "in").stats()
    want = ScoreStatsFit()
    for start in range(0, 50, 16):
        want.update(table.slice(start, 16))
    want.update(pools([[None]]))
    want.update(table.slice(0, 10))
    assert got == want.stats() and got["rm"].count == 180
    assert len(read) == 6  # four row groups of a.parquet, one each of b and d
    cand = read[0].field("candidates").type.value_type
    assert read[0].names == ["candidates"] and [f.name for f in cand] == ["scores"]


def test_update_files_names_the_file_row_group_row_and_prompt_of_a_bad_score(tmp_path):
    """The statistics pass reads no prompt ids; a row group with an infinite score is read
    again with them, and the error names the file, the row group, the row in it and the
    field. Nothing of the bad row group is added."""
    import pyarrow.parquet as pq

    rows = [[1.0, 2.0]] * 5 + [[3.0, -math.inf]]
    pq.write_table(pools(rows), tmp_path / "a.parquet", row_group_size=4)
    fit = ScoreStatsFit(("rm",))
    msg = r"a\.parquet, row group 1: row 1 \(prompt_id 'p5'\): "
    msg += r"field candidates\[1\]\.scores\.rm is -inf"
    with pytest.raises(ValueError, match=msg):
        fit.update_files(tmp_path / "a.parquet")
    assert fit.stats()["rm"].count == 8  # the first row group only


def test_update_files_passes_other_errors_through_unchanged(tmp_path):
    """Only an infinite score is read again and renamed; a scorer the file lacks raises
    pyarrow's own error, and adds nothing."""
    import pyarrow.parquet as pq

    pq.write_table(pools([[1.0, 2.0]] * 3), tmp_path / "a.parquet")
    fit = ScoreStatsFit(("other",))
    with pytest.raises(pa.ArrowInvalid, match="other"):
        fit.update_files(tmp_path / "a.parquet")
    assert fit.stats() == {}


def test_a_null_candidate_list_over_hidden_candidates_counts_none():
    """A null list may still span values (valid Arrow; polars leaves such lists): the
    statistics and the z-scores see only the visible candidates."""
    t = pools([[100.0, 200.0], [1.0, 3.0]])
    lists = t["candidates"].combine_chunks()
    hidden = pa.ListArray.from_arrays(lists.offsets, lists.values, mask=pa.array([True, False]))
    t = t.set_column(t.schema.get_field_index("candidates"), "candidates", hidden)
    stats = ScoreStatsFit().update(t).stats()["rm"]
    assert (stats.count, stats.mean, stats.m2) == (2, 2.0, 2.0)
    out = Normalise("zscore")(t).table
    first, second = out["candidates"].to_pylist()
    assert first is None and [c["scores"]["rm.z"] for c in second] == [-1.0, 1.0]


def test_prompt_zscore_and_rank_hand_computed():
    table = pools([[1.0, 3.0], [3.0, 1.0, 3.0], [7.0], [2.0, 2.0]])
    pz = normalised(Normalise(method="prompt_zscore")(table).table, "rm.pz")
    # pool 1: mean 7/3, population std sqrt(8/9)
    s = math.sqrt(8 / 9)
    assert pz[0] == [-1.0, 1.0]
    assert pz[1] == pytest.approx([(3 - 7 / 3) / s, (1 - 7 / 3) / s, (3 - 7 / 3) / s])
    assert pz[2] == [0.0] and pz[3] == [0.0, 0.0]  # zero spread -> 0
    rank = normalised(Normalise(method="rank")(table).table, "rm.rank")
    # ties get the average rank: [3, 1, 3] -> ranks [2.5, 1, 2.5] -> (r - 1) / 2
    assert rank == [[0.0, 1.0], [0.75, 0.0, 0.75], [0.5], [0.5, 0.5]]


def test_replace_and_none():
    table = pools([[1.0, 3.0]])
    out = Normalise(method="prompt_zscore", replace=True)(table).table
    assert normalised(out, "rm") == [[-1.0, 1.0]]
    assert out.schema.field("candidates").type.value_type.field("scores").type.num_fields == 1
    assert Normalise(method="none")(table).table.equals(table)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match=r"row 0 .*candidates\[1\]\.scores\.rm is inf"):
        fit_score_stats([pools([[1.0, math.inf]])])
    with pytest.raises(ValueError, match="unknown method"):
        Normalise(method="minmax")
    with pytest.raises(KeyError, match="no fitted statistics"):
        Normalise(method="zscore", stats={"other": ScoreStats.of([1.0])})(pools([[1.0]]))


def test_fingerprint_follows_stats_and_pipeline_declares_fields():
    a = Normalise(stats={"rm": ScoreStats.of([1.0, 2.0])})
    b = Normalise(stats={"rm": ScoreStats.of([1.0, 3.0])})
    assert a.fingerprint != b.fingerprint
    Pipeline([Normalise(method="rank", scorers=("rm",))]).check(pool_schema(["rm"]))
    assert Normalise(method="rank", scorers=("rm",)).provided_columns() == ("scores.rm.rank",)


def test_scores_too_large_for_their_variance_are_refused_not_zeroed():
    """Scores of 1e200 overflow the squared deviations (every z-score would be 0, every
    pair p_chosen 0.5): the fit says so, naming the scorer, instead of going on."""
    from prefdata.annotate.normalise import NonFiniteScoreError, ScoreStatsFit

    rows = [
        {
            "prompt_id": f"p{i}",
            "prompt": [{"role": "user", "content": "q"}],
            "candidates": [{"candidate_id": "a", "response": "x", "scores": {"rm": v}}],
        }
        for i, v in enumerate([1e200, -3e200, 2.0])
    ]
    t = pa.Table.from_pylist(rows, schema=pool_schema(["rm"]))
    with pytest.raises(NonFiniteScoreError, match="scores rm are too large.*3e\\+200"):
        ScoreStatsFit(("rm",)).update(t)
    fine = ScoreStatsFit(("rm",)).update(t.slice(2))
    assert fine.stats()["rm"].mean == 2.0
