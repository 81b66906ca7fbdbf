"""The fit protocol: five two-pass stages fitted over shards, persisted, and run in
segments by an executor (prefdata.fit, prefdata.execute.fitting)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prefdata.annotate.normalise import Normalise, ScoreStatsFit
from prefdata.construct.pairs import MarginQuantileFit, Pairs
from prefdata.execute import LocalExecutor
from prefdata.execute.fitting import run_with_fits, split_at_fits
from prefdata.filter.dedup import DedupFit, DedupPrompts
from prefdata.filter.degenerate import DropFlagged, FlagDegenerate, RepeatedResponsesFit
from prefdata.filter.peer import PeerFilter, PeerFit
from prefdata.fit import Fit, StageFit, fit_stage, loads
from prefdata.pipeline import Pipeline, Stage
from prefdata.schema import pool_schema

SPAM = "Thank you for your question, here is a complete and careful answer."


def pools(n: int = 40, seed: int = 0) -> pa.Table:
    """``n`` pools of four candidates scored by rm and rm2: a spam answer repeated across
    prompts, empty and truncated answers, prompts that repeat (case and punctuation aside),
    a few unscored candidates."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        k = i - 5 if i % 8 == 7 else i  # the same prompt as five pools before
        prompt = f"Question number {k} about topic {k % 7}, please answer it well"
        if i % 9 == 4:
            prompt = prompt.upper() + "!"
        cands = []
        for j in range(4):
            text = f"Answer {i}-{j}: a response about topic {i % 7} that is long enough."
            if j == 3 and i % 6 == 0:
                text = SPAM
            if (i, j) in ((3, 1), (17, 2)):
                text = "  "
            rm = None if (i, j) == (11, 0) else round(float(rng.normal()), 3)
            rm2 = None if rm is None else round(rm + float(rng.normal(0, 0.8)), 3)
            cands.append(
                {
                    "candidate_id": f"c{i}-{j}",
                    "response": text,
                    "generator": f"g{j % 2}",
                    "finish_reason": "length" if (i * 4 + j) % 23 == 5 else "stop",
                    "scores": {"rm": rm, "rm2": rm2},
                    "flags": [],
                }
            )
        rows.append(
            {
                "prompt_id": f"p{i:03d}",
                "prompt": [{"role": "user", "content": prompt}],
                "source": "test",
                "metadata": None,
                "candidates": cands,
            }
        )
    return pa.Table.from_pylist(rows, schema=pool_schema(["rm", "rm2"]))


def pairs_of(table: pa.Table) -> pa.Table:
    return Pairs("best-worst", score="rm")(table).table


def assert_same(a, b, path: str = "") -> None:
    """Equal, floats up to rounding (z-scores of statistics merged shard by shard)."""
    if isinstance(a, float) and isinstance(b, float):
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-9, abs=1e-12), path
    elif isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


def assert_tables_same(a: pa.Table, b: pa.Table) -> None:
    assert a.column_names == b.column_names
    assert_same(a.to_pylist(), b.to_pylist())


# (stage, its input table, exact): z-scores of merged statistics match up to rounding
CASES = {
    "normalise": (Normalise(scorers=("rm", "rm2")), pools, False),
    "dedup-minhash": (DedupPrompts(method="minhash"), pools, True),
    "dedup-exact": (DedupPrompts(method="exact"), pools, True),
    "repeated": (FlagDegenerate(repeated_min_prompts=3), pools, True),
    "peer": (PeerFilter(scorer_a="rm", scorer_b="rm2", tau=0.2), lambda: pairs_of(pools()), True),
    "pairs-quantile": (Pairs("best-worst", score="rm", quantile=0.4), pools, True),
}


def shards(table: pa.Table, size: int = 7) -> list[pa.Table]:
    return [table.slice(i, size) for i in range(0, table.num_rows, size)]


@pytest.mark.parametrize("case", CASES)
def test_fit_over_shards_merged_equals_fit_on_whole(case):
    stage, make, exact = CASES[case]
    table = make()
    fit = stage.fit()
    assert isinstance(fit, Fit) and isinstance(fit, StageFit)
    assert fit.stage is stage
    parts = []
    for i, s in enumerate(shards(table)):
        kw = {"shard": i} if isinstance(fit.state, DedupFit) else {}
        parts.append(stage.fit().update(s, **kw))
    merged = parts[-1]
    for p in reversed(parts[:-1]):  # merged in reverse order
        merged = merged.merge(p)
    fitted = merged.finalize()
    whole = fit_stage(stage, [table])
    assert type(fitted) is type(stage) and fitted.fit() is None and whole.fit() is None
    assert fitted.fits_on_input() is None
    out, ref = fitted(table), whole(table)
    if exact:
        assert fitted.fingerprint == whole.fingerprint
        assert out.table.equals(ref.table) and out.rejects.equals(ref.rejects)
    else:
        assert_tables_same(out.table, ref.table)
    # the fitted stage on shards gives the unfitted stage's whole-table output
    if not isinstance(stage, Pairs):  # (an unfitted quantile filter refuses to run)
        unfitted = stage(table)
        per_shard = pa.concat_tables([fitted(s).table for s in shards(table)])
        assert_tables_same(per_shard, unfitted.table)
        assert out.rejects.num_rows == unfitted.rejects.num_rows


@pytest.mark.parametrize("case", CASES)
def test_dumps_loads_round_trip(case):
    stage, make, _ = CASES[case]
    table = make()
    fit = stage.fit()
    for s in shards(table):
        fit.update(s)
    data = fit.dumps()
    assert isinstance(data, bytes) and data.startswith(b"{")  # a JSON header, never pickle
    back = loads(stage, data)
    a, b = fit.finalize(), back.finalize()
    assert a.fingerprint == b.fingerprint
    assert a(table).table.equals(b(table).table)
    assert back.dumps() == data  # stable bytes
    # loaded into another config, or into a fitted stage: refused
    other = {
        "normalise": Normalise(scorers=("rm",)),
        "dedup-minhash": DedupPrompts(method="minhash", num_perm=64),
        "dedup-exact": DedupPrompts(method="exact", threshold=0.5),
        "repeated": FlagDegenerate(repeated_min_prompts=4),
        "peer": PeerFilter(scorer_a="rm", scorer_b="rm2", tau=0.3),
        "pairs-quantile": Pairs("best-worst", score="rm", quantile=0.5),
    }[case]
    with pytest.raises(ValueError):
        loads(other, data)
    with pytest.raises(ValueError, match="needs no fit"):
        loads(a, data)


def test_state_round_trips_without_the_stage():
    """Each family's own fit persists too (the bytes after the header line)."""
    t = pools()
    fresh = [
        lambda: ScoreStatsFit(("rm",)),
        lambda: DedupFit("minhash"),
        lambda: RepeatedResponsesFit(3),
        lambda: PeerFit("rm", "rm2"),
    ]
    inputs = [t, t, t, pairs_of(t)]
    states = [make().update(x) for make, x in zip(fresh, inputs, strict=True)]
    for make, st in zip(fresh, states, strict=True):
        assert make().load(st.dumps()).dumps() == st.dumps()
    index = DedupFit("minhash").load(states[1].dumps()).finalize()
    assert index.fingerprint == states[1].finalize().fingerprint
    q = MarginQuantileFit(Pairs("best-worst", score="rm")).update(t)
    back = MarginQuantileFit(Pairs("best-worst", score="rm")).load(q.dumps())
    assert back.threshold(0.3) == q.threshold(0.3)
    assert ScoreStatsFit(("rm",)).load(states[0].dumps()).stats() == states[0].stats()
    with pytest.raises(ValueError, match="collected with"):
        RepeatedResponsesFit(3, min_chars=5).load(states[2].dumps())


def test_stage_fit_is_none_exactly_when_fitted():
    t = pools()
    assert Stage().fit() is None and DropFlagged().fit() is None
    assert (
        Normalise("rank").fit() is None and FlagDegenerate(repeated_min_prompts=None).fit() is None
    )
    assert Pairs("best-worst", score="rm").fit() is None
    for stage, make, _ in CASES.values():
        assert (stage.fit() is not None) and fit_stage(stage, make()).fit() is None
        if not isinstance(stage, Pairs):
            assert stage.fits_on_input() is not None
    # the old forms still work
    assert Pairs("best-worst", score="rm", quantile=0.5).fit(t).fitted_min_margin is not None
    assert isinstance(DedupPrompts().dedup_fit(), DedupFit)
    with pytest.raises(ValueError, match="scorer_a and scorer_b"):
        PeerFilter().fit()
    with pytest.raises(ValueError, match="different"):
        Normalise().fit().merge(Normalise(scorers=("rm",)).fit())


def test_split_at_fits():
    a, b = Normalise("rank"), DropFlagged()
    z, f = Normalise(), FlagDegenerate()
    assert split_at_fits([a, b]) == [[a, b]]
    assert split_at_fits([]) == [[]]
    assert split_at_fits([z, a, f, b]) == [[], [z, a], [f, b]]
    assert split_at_fits(Pipeline([a, z])) == [[a], [z]]
    fitted = fit_stage(z, pools())
    assert split_at_fits([a, fitted, b]) == [[a, fitted, b]]  # fitted: not split again


# ------------------------------------------------------------------- run_with_fits


PIPELINE = [
    Normalise("rank", scorers=("rm",)),
    FlagDegenerate(repeated_min_prompts=3),
    DropFlagged(),
    DedupPrompts(method="minhash"),
    Normalise(scorers=("rm", "rm2")),
    Pairs("best-worst", score="rm", quantile=0.3),
    PeerFilter(scorer_a="rm", scorer_b="rm2", tau=0.2),
]


def local(shard_rows: int = 7):
    return lambda stages, source, workdir: LocalExecutor(workdir, shard_rows=shard_rows).run(
        stages, source
    )


def reference(stages: list[Stage], table: pa.Table):
    """Every stage fitted by hand over its whole input table, then run in memory."""
    fitted, t = [], table
    for stage in stages:
        stage = fit_stage(stage, [t])
        fitted.append(stage)
        t = stage(t).table
    return Pipeline(fitted).run(table)


FIT_UPDATES = [ScoreStatsFit, DedupFit, RepeatedResponsesFit, PeerFit, MarginQuantileFit]


@pytest.fixture
def count_updates(monkeypatch):
    calls = {cls.__name__: 0 for cls in FIT_UPDATES}

    def counting(cls):
        update = cls.update

        def wrapped(self, *args, **kwargs):
            calls[cls.__name__] += 1
            return update(self, *args, **kwargs)

        return wrapped

    for cls in FIT_UPDATES:
        monkeypatch.setattr(cls, "update", counting(cls))
    return calls


def test_run_with_fits_equals_fitting_by_hand_and_resumes(tmp_path, count_updates):
    table = pools(60)
    ref = reference(PIPELINE, table)
    assert ref.table.num_rows > 0 and ref.rejects.num_rows > 0
    work = tmp_path / "work"
    result = run_with_fits(local(), PIPELINE, table, work)
    assert_tables_same(result.read(), ref.table)
    assert result.funnel.to_list() == ref.funnel.to_list()
    assert result.rejects().num_rows == ref.rejects.num_rows
    assert sorted(result.rejects()["reason"].to_pylist()) == sorted(
        ref.rejects["reason"].to_pylist()
    )
    assert result.workdir == work
    assert sorted(p.name for p in (work / "segments").iterdir()) == [f"0{i}" for i in range(6)]
    assert len(list((work / "fits").glob("*.fit"))) == 5
    assert len(result.output_paths) > 1  # several shards
    assert all(n > 0 for n in count_updates.values())
    # a rerun loads every fit: no update at all, the same fitted stages (no new stage
    # folder: every segment resumes as done), the same output
    folders = sorted(work.glob("segments/*/stages/*"))
    for k in count_updates:
        count_updates[k] = 0
    again = run_with_fits(local(), PIPELINE, table, work)
    assert count_updates == dict.fromkeys(count_updates, 0)
    assert sorted(work.glob("segments/*/stages/*")) == folders
    assert again.read().equals(result.read())
    assert again.funnel.to_list() == result.funnel.to_list()
    # a changed last stage refits only itself
    changed = [*PIPELINE[:-1], PeerFilter(scorer_a="rm", scorer_b="rm2", tau=0.3)]
    run_with_fits(local(), changed, table, work)
    assert count_updates["PeerFit"] > 0
    assert sum(count_updates.values()) == count_updates["PeerFit"]


@pytest.mark.parametrize("as_file", [False, True])
def test_a_first_stage_fits_on_the_source(tmp_path, as_file, count_updates):
    table = pools(30, seed=3)
    source: pa.Table | Path = table
    if as_file:
        source = tmp_path / "pools.parquet"
        pq.write_table(table, source, row_group_size=8)  # four row groups, read one at a time
    stages = [FlagDegenerate(repeated_min_prompts=3), DropFlagged(), Normalise()]
    result = run_with_fits(local(5), stages, source, tmp_path / "w")
    assert count_updates["RepeatedResponsesFit"] == (4 if as_file else 1)
    ref = reference(stages, table)
    assert_tables_same(result.read(), ref.table)
    assert result.funnel.to_list() == ref.funnel.to_list()
    assert not (tmp_path / "w" / "segments" / "00").exists()
    count_updates["RepeatedResponsesFit"] = count_updates["ScoreStatsFit"] = 0
    run_with_fits(local(5), stages, source, tmp_path / "w")
    assert count_updates["RepeatedResponsesFit"] == count_updates["ScoreStatsFit"] == 0


def test_no_fit_runs_the_segment_as_is(tmp_path):
    seen = []

    def run(stages, source, workdir):
        seen.append((stages, workdir))
        return LocalExecutor(workdir).run(stages, source)

    stages = [Normalise("rank"), DropFlagged()]
    result = run_with_fits(run, stages, pools(5), tmp_path / "w")
    assert seen == [(stages, tmp_path / "w")]
    assert result.read().num_rows == 5


def test_parallel_fits_merged_in_order_equal_one_fit_updated_in_order(tmp_path):
    """The executor fits ScoreStatsFit and RepeatedResponsesFit one table per thread and
    merges them in table order: byte-identical to one fit updated table by table; an
    overflow that only the merge meets is refused all the same."""
    import numpy as np
    import pyarrow as pa

    from prefdata.annotate import Normalise
    from prefdata.annotate.normalise import NonFiniteScoreError
    from prefdata.execute.fitting import fit_checkpointed
    from prefdata.filter import FlagDegenerate
    from prefdata.schema import pool_schema

    rng = np.random.default_rng(0)

    def table(k: int, shift: float = 0.0) -> pa.Table:
        rows = [
            {
                "prompt_id": f"p{k}-{i}",
                "prompt": [{"role": "user", "content": "q"}],
                "candidates": [
                    {
                        "candidate_id": f"c{j}",
                        "response": f"a shared answer {j % 3} here",
                        "scores": {"rm": shift + float(rng.normal(3, 2))},
                    }
                    for j in range(4)
                ],
            }
            for i in range(50)
        ]
        return pa.Table.from_pylist(rows, schema=pool_schema(["rm"]))

    tables = [table(k) for k in range(7)]
    for stage in (Normalise(), FlagDegenerate(repeated_min_prompts=3)):
        assert stage.fit().parallel
        one = stage.fit()
        for t in tables:
            one.update(t)
        fitted = fit_checkpointed(stage, iter(tables), tmp_path / "fits", None)
        assert fitted.fingerprint == one.finalize().fingerprint
        assert fitted.config() == one.finalize().config()
    big = [table(0, 1e153), table(1, -1e153)]  # each alone fits float64, together not
    for t in big:
        Normalise().fit().update(t)  # no error: only the merge overflows
    with pytest.raises(NonFiniteScoreError, match="scores rm are too large"):
        fit_checkpointed(Normalise(), iter(big), tmp_path / "fits", None)
