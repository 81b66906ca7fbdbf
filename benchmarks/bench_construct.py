"""The CPU construction path: read pools, z-normalise three scorers, best-worst pairs,
strength, 2-of-3 voting, TRL DPO export; prefdata against the alternatives, same data,
same run, each implementation in its own subprocess so its peak RSS is its own
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``).

Data (deterministic, seed 0): P prompts x K = 8 candidates; short prompts ("Question i:
...", about 40 characters) and responses (about 50); three scorers a, b, c (a and b
correlated, c independent; continuous, so no ties), written once with
``prefdata.io.parquet.write_parquet`` (zstd, 64k-row groups) to ``pools.parquet``.

The work, identical in every implementation and timed from the Parquet file to the
written TRL file:

1. read the pools;
2. z-normalise a, b, c with the dataset's mean and population std (two passes: statistics
   first, then apply);
3. per prompt, chosen = the highest ``a.z``, rejected = the lowest (ties: the earlier
   candidate; never the same candidate), margin = their ``a.z`` difference;
4. strength: ``d_m = z_m(chosen) - z_m(rejected)`` for m in a, b, c; ``strength_mean`` =
   mean, ``strength_std`` = population std, ``p_chosen = sigmoid(strength_mean)``;
5. vote: keep the pair when at least 2 of the 3 ``d_m`` are > 0;
6. write TRL DPO Parquet: ``prompt`` (message list), ``chosen`` and ``rejected``
   (``[{"role": "assistant", "content": ...}]``).

Implementations:

(a) ``prefdata``: ``ScoreStatsFit.update_files`` over the file's row groups (only the
    score columns are read), then ``LocalExecutor()`` (its default shard size, unless
    ``--shard-rows``) streaming shards of the file (read in place) through
    ``Normalise("zscore", stats=...)``, ``Pairs("best-worst", score="a.z")``,
    ``Vote(k=2)`` and ``Strength`` (checkpointed, the default ``checkpoint="auto"``: every
    stage's rejects and the pairs written per shard, with the manifest), with
    ``sink=ShardedExport("trl-dpo", ...)`` writing each shard's TRL file
    (``train-00000.parquet``, ...) as it is computed: memory stays one shard.
(b) ``loop``: ``to_pylist()`` then plain Python over dicts, one row at a time, the way
    dict-passing pipeline frameworks run their steps; ``pq.write_table`` at the end.
(c) ``pandas``: explode to one row per candidate, ``groupby.transform``/``idxmax``/
    ``idxmin``, merge back, then build the message lists.
(d) ``polars``: a hand-written query: explode the candidate structs, z-scores as
    expressions, one ``group_by(pool).agg(arg_max/arg_min)`` that picks row indices, then
    ``gather`` of texts and ids for the picked rows only; the practical limit.
(e) ``distilabel``: distilabel 1.5.3's ``LoadDataFromDicts >> FormatTextGenerationDPO``
    in its own venv (``benchmarks/distilabel_peer.py``), fed ``generations`` = the 8
    responses and ``ratings`` = the z-scores of ``a`` (computed before it, in the timed
    part); it picks chosen/rejected by max/min rating and does *no* strength or vote, so
    it does less work than the others. Skipped with a message when its venv is absent
    (no torch needed; 1.5.3 imports ``requests`` without declaring it)::

        python3 -m venv /tmp/distilabel-venv
        /tmp/distilabel-venv/bin/pip install distilabel==1.5.3 requests

Every implementation's pairs are checked against (d): the same (chosen id, rejected id)
for every prompt, the same kept prompts, and (a, b, c) the same ``votes`` and
``strength_mean`` (to 1e-9), and the written TRL rows equal.

Timing: the implementations alternate over ``--rounds`` fresh processes (``--repeat`` runs
in each; distilabel runs once), and the best and the median of all runs are reported, with
their ratios to polars' best and median: on a shared box the speed drifts within minutes.
Also reported: the median run's CPU seconds (user + system, all threads), and each round's
loop run against prefdata's and polars' best of the same round (and their median).

    .venv/bin/python benchmarks/bench_construct.py                   # P = 50,000 (about 2 min)
    .venv/bin/python benchmarks/bench_construct.py --prompts 100000 --repeat 3 --rounds 4
    .venv/bin/python benchmarks/bench_construct.py --prompts 1000000 --only prefdata polars
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

K = 8
SCORERS = ("a", "b", "c")
ROOT = Path(__file__).resolve().parent.parent
IMPLS = ("prefdata", "loop", "pandas", "polars", "distilabel")
SLOW = ("loop",)  # one run per round at large P (each takes seconds)
DISTILABEL_PY = Path(os.environ.get("DISTILABEL_VENV", "/tmp/distilabel-venv")) / "bin/python"


# --------------------------------------------------------------------------- data


def make_pools(p: int, seed: int = 0) -> pa.Table:
    """P pools of K candidates, built column-wise (no Python per candidate)."""
    import pyarrow.compute as pc

    sys.path.insert(0, str(ROOT))
    from prefdata.schema import pool_schema

    rng = np.random.default_rng(seed)
    n = p * K
    words = np.array(["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "zeta"])
    pi = np.arange(p)
    prompt_ids = pc.binary_join_element_wise("p", pa.array(pi.astype(str)), "-")
    prompt_text = pc.binary_join_element_wise(
        "Question ", pa.array(pi.astype(str)), ": explain ", pa.array(words[pi % 8]), " please", ""
    )
    prompt = pa.ListArray.from_arrays(
        pa.array(np.arange(p + 1, dtype=np.int32)),
        pa.StructArray.from_arrays(
            [
                pa.array(["user"] * p),
                prompt_text.combine_chunks()
                if isinstance(prompt_text, pa.ChunkedArray)
                else prompt_text,
            ],
            names=["role", "content"],
        ),
    )
    ci = np.arange(n)
    cid = pc.binary_join_element_wise("c", pa.array(ci.astype(str)), "-")
    resp = pc.binary_join_element_wise(
        "Answer ",
        pa.array((ci % K).astype(str)),
        " to question ",
        pa.array((ci // K).astype(str)),
        ": the ",
        pa.array(words[rng.integers(0, 8, n)]),
        " is ",
        pa.array(rng.integers(0, 1000, n).astype(str)),
        "",
    )
    a = rng.normal(0.0, 2.0, n) + 5.0
    b = 0.6 * (a - 5.0) / 2.0 + 0.8 * rng.normal(size=n)
    c = rng.normal(10.0, 3.0, n)
    scores = pa.StructArray.from_arrays(
        [pa.array(a), pa.array(b), pa.array(c)], names=list(SCORERS)
    )

    def one(a):  # string kernels on millions of rows may hand back chunks
        return a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a

    cand = pa.StructArray.from_arrays(
        [
            one(x)
            for x in [
                cid,
                resp,
                pa.array(np.array(["gen-x", "gen-y"])[ci % 2]),
                pa.array((ci % K).astype(np.int32)),
                pa.array(np.full(n, 1234, dtype=np.int64)),
                pa.array(["stop"] * n),
                pa.array(rng.integers(5, 40, n).astype(np.int32)),
                scores,
                pa.ListArray.from_arrays(
                    pa.array(np.zeros(n + 1, dtype=np.int32)), pa.array([], pa.string())
                ),
            ]
        ],
        fields=list(pool_schema(list(SCORERS)).field("candidates").type.value_type),
    )
    candidates = pa.ListArray.from_arrays(pa.array(np.arange(0, n + 1, K, dtype=np.int32)), cand)
    return pa.table(
        [prompt_ids, prompt, pa.array(["bench"] * p), pa.nulls(p, pa.string()), candidates],
        schema=pool_schema(list(SCORERS)),
    )


Z = tuple(f"{s}.z" for s in SCORERS)


def _trl_schema() -> pa.Schema:
    msg = pa.list_(pa.struct([pa.field("role", pa.string()), pa.field("content", pa.string())]))
    return pa.schema([("prompt", msg), ("chosen", msg), ("rejected", msg)])


def _assistant(text: pa.Array) -> pa.Array:
    """``[{"role": "assistant", "content": t}]`` per row, built column-wise."""
    n = len(text)
    msg = pa.StructArray.from_arrays(
        [pa.array(["assistant"] * n, pa.string()), text.cast(pa.string())],
        names=["role", "content"],
    )
    return pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32)), msg)


# --------------------------------------------------------------------------- (a) prefdata


def run_prefdata(data: Path, out: Path, shard_rows: int):
    sys.path.insert(0, str(ROOT))
    from prefdata.annotate.normalise import Normalise, ScoreStatsFit
    from prefdata.annotate.strength import Strength
    from prefdata.construct import Pairs
    from prefdata.execute import LocalExecutor
    from prefdata.filter.voting import Vote
    from prefdata.io.export import ShardedExport

    # pass 1: mergeable statistics, one row group at a time, only the score leaves read
    fit = ScoreStatsFit(SCORERS).update_files(data)
    stages = [
        Normalise("zscore", scorers=SCORERS, stats=fit.stats()),
        Pairs("best-worst", score="a.z"),
        Vote(scorers=Z, k=2),
        Strength(scorers=Z),
    ]
    # each output shard goes to the exporter as it is computed (train-00000.parquet, ...)
    sink = ShardedExport("trl-dpo", out / "trl")
    executor = LocalExecutor(out / "work", shard_rows=shard_rows, progress=False)
    result = executor.run(stages, data, sink=sink)
    sink.result()
    cols = ["prompt_id", "chosen_id", "rejected_id", "votes", "strength_mean"]
    # the pairs to check are read back after the clock stops
    return lambda: pa.concat_tables(pq.read_table(p, columns=cols) for p in result.output_paths)


# --------------------------------------------------------------------------- (b) loop


def run_loop(data: Path, out: Path, shard_rows: int) -> pa.Table:
    rows = pq.read_table(data).to_pylist()
    stats = {}
    for s in SCORERS:  # pass 1: Welford, one value at a time
        n, mean, m2 = 0, 0.0, 0.0
        for row in rows:
            for cand in row["candidates"]:
                x = cand["scores"][s]
                if x is not None:
                    n += 1
                    d = x - mean
                    mean += d / n
                    m2 += d * (x - mean)
        stats[s] = (mean, math.sqrt(m2 / n))
    records, check = [], []
    for row in rows:
        cands = []
        for cand in row["candidates"]:
            z = {f"{s}.z": (cand["scores"][s] - stats[s][0]) / stats[s][1] for s in SCORERS}
            cands.append({**cand, "scores": {**cand["scores"], **z}})
        best = worst = cands[0]
        for cand in cands[1:]:
            if cand["scores"]["a.z"] > best["scores"]["a.z"]:
                best = cand
            if cand["scores"]["a.z"] < worst["scores"]["a.z"]:
                worst = cand
        if best is worst:
            continue
        d = [best["scores"][z] - worst["scores"][z] for z in Z]
        votes = sum(x > 0 for x in d)
        if votes < 2:
            continue
        mean = sum(d) / len(d)
        std = math.sqrt(sum((x - mean) ** 2 for x in d) / len(d))
        pair = {
            "prompt_id": row["prompt_id"],
            "prompt": row["prompt"],
            "chosen": best["response"],
            "rejected": worst["response"],
            "chosen_id": best["candidate_id"],
            "rejected_id": worst["candidate_id"],
            "margin": best["scores"]["a.z"] - worst["scores"]["a.z"],
            "strength_mean": mean,
            "strength_std": std,
            "p_chosen": 1.0 / (1.0 + math.exp(-mean)),
            "votes": votes,
        }
        records.append(
            {
                "prompt": [{"role": m["role"], "content": m["content"]} for m in pair["prompt"]],
                "chosen": [{"role": "assistant", "content": pair["chosen"]}],
                "rejected": [{"role": "assistant", "content": pair["rejected"]}],
            }
        )
        check.append(
            {
                k: pair[k]
                for k in ("prompt_id", "chosen_id", "rejected_id", "votes", "strength_mean")
            }
        )
    (out / "trl").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(records, schema=_trl_schema()), out / "trl/train.parquet")
    return pa.Table.from_pylist(check)


# --------------------------------------------------------------------------- (c) pandas


def run_pandas(data: Path, out: Path, shard_rows: int) -> pa.Table:
    import pandas as pd
    import pyarrow.compute as pc

    pools = pq.read_table(data)
    # flatten with Arrow (a pandas explode of dicts would be far slower), compute in pandas
    lists = pools["candidates"].combine_chunks()
    flat = pc.list_flatten(lists)
    df = pd.DataFrame(
        {
            "pool": pc.list_parent_indices(lists).to_numpy(),
            "candidate_id": pc.struct_field(flat, "candidate_id").to_pandas(),
            "response": pc.struct_field(flat, "response").to_pandas(),
            **{s: pc.struct_field(flat, ["scores", s]).to_numpy() for s in SCORERS},
        }
    )
    for s in SCORERS:
        df[f"{s}.z"] = (df[s] - df[s].mean()) / df[s].std(ddof=0)
    g = df.groupby("pool", sort=False)["a.z"]
    best = df.loc[g.idxmax().to_numpy()].reset_index(drop=True)
    worst = df.loc[g.idxmin().to_numpy()].reset_index(drop=True)
    pairs = pd.DataFrame({"pool": best["pool"]})
    d = pd.DataFrame({z: best[z].to_numpy() - worst[z].to_numpy() for z in Z})
    pairs["votes"] = (d > 0).sum(axis=1).astype("int32")
    pairs["strength_mean"] = d.mean(axis=1)
    pairs["strength_std"] = d.std(axis=1, ddof=0)
    pairs["p_chosen"] = 1.0 / (1.0 + np.exp(-pairs["strength_mean"]))
    pairs["margin"] = d["a.z"]
    for side, frame in (("chosen", best), ("rejected", worst)):
        pairs[side] = frame["response"].to_numpy()
        pairs[f"{side}_id"] = frame["candidate_id"].to_numpy()
    pairs = pairs[(pairs["votes"] >= 2) & (pairs["chosen_id"] != pairs["rejected_id"])]
    idx = pa.array(pairs["pool"].to_numpy())
    trl = pa.table(
        {
            "prompt": pools["prompt"].take(idx).combine_chunks(),
            "chosen": _assistant(pa.array(pairs["chosen"].to_numpy(), pa.string())),
            "rejected": _assistant(pa.array(pairs["rejected"].to_numpy(), pa.string())),
        }
    ).cast(_trl_schema())
    (out / "trl").mkdir(parents=True, exist_ok=True)
    pq.write_table(trl, out / "trl/train.parquet")
    pairs["prompt_id"] = pools["prompt_id"].take(idx).to_pandas().to_numpy()
    return pa.Table.from_pandas(
        pairs[["prompt_id", "chosen_id", "rejected_id", "votes", "strength_mean"]],
        preserve_index=False,
    )


# --------------------------------------------------------------------------- (d) polars


def polars_pairs(data: Path):
    """Every pool's best-worst pair with votes and strength (before the vote filter)."""
    import polars as pl

    pools = pl.read_parquet(data, columns=["prompt_id", "prompt", "candidates"])
    cands = pools.get_column("candidates").explode()  # one struct per candidate
    pool = pools.select(
        pl.int_range(pl.len(), dtype=pl.UInt32).repeat_by(pl.col("candidates").list.len())
    ).to_series()
    flat = cands.struct.field("scores").struct.unnest().with_columns(pool=pool.explode())
    z = [((pl.col(s) - pl.col(s).mean()) / pl.col(s).std(ddof=0)).alias(f"{s}.z") for s in SCORERS]
    best, worst = pl.col("a.z").arg_max(), pl.col("a.z").arg_min()
    pairs = (
        flat.lazy()
        .with_row_index("i")
        .select("i", "pool", *z)
        .group_by("pool", maintain_order=True)
        .agg(
            ci=pl.col("i").get(best),
            ri=pl.col("i").get(worst),
            **{f"c_{x}": pl.col(x).get(best) for x in Z},
            **{f"r_{x}": pl.col(x).get(worst) for x in Z},
        )
        .filter(pl.col("ci") != pl.col("ri"))
        .collect()
    )
    d = [(pl.col(f"c_{z}") - pl.col(f"r_{z}")) for z in Z]
    mean = pl.mean_horizontal(d)
    pairs = pairs.with_columns(
        votes=pl.sum_horizontal([(x > 0).cast(pl.Int32) for x in d]),
        strength_mean=mean,
        strength_std=(pl.sum_horizontal([(x - mean) ** 2 for x in d]) / len(d)).sqrt(),
        p_chosen=1.0 / (1.0 + (-mean).exp()),
        margin=d[0],
    )
    response, cid = cands.struct.field("response"), cands.struct.field("candidate_id")
    return pools, pairs.with_columns(
        prompt_id=pools["prompt_id"].gather(pairs["pool"]),
        c_response=response.gather(pairs["ci"]),
        r_response=response.gather(pairs["ri"]),
        c_candidate_id=cid.gather(pairs["ci"]),
        r_candidate_id=cid.gather(pairs["ri"]),
    )


def run_polars(data: Path, out: Path, shard_rows: int):
    import polars as pl

    pools, pairs = polars_pairs(data)
    kept = pairs.filter(pl.col("votes") >= 2)
    assistant = lambda c: pl.concat_list(pl.struct(role=pl.lit("assistant"), content=c))  # noqa: E731
    trl = kept.select(
        prompt=pools["prompt"].gather(kept["pool"]),
        chosen=assistant(pl.col("c_response")),
        rejected=assistant(pl.col("r_response")),
    )
    (out / "trl").mkdir(parents=True, exist_ok=True)
    trl.write_parquet(out / "trl/train.parquet")
    cols = dict(chosen_id="c_candidate_id", rejected_id="r_candidate_id")
    cols |= dict(votes="votes", strength_mean="strength_mean")

    def check() -> pa.Table:  # after the clock stops: every pair, for distilabel's check
        pairs.select("prompt_id", **cols).write_parquet(out / "all_pairs.parquet")
        return kept.select("prompt_id", **cols).to_arrow()

    return check


# --------------------------------------------------------------------------- harness

RUNNERS = {"prefdata": run_prefdata, "loop": run_loop, "pandas": run_pandas, "polars": run_polars}
PRELOAD = {
    "prefdata": [
        "prefdata.annotate.normalise",
        "prefdata.annotate.strength",
        "prefdata.construct",
        "prefdata.execute",
        "prefdata.filter.voting",
        "prefdata.io.export",
        "datasets",  # the TRL writer imports it lazily
        "pandas",  # pyarrow imports it lazily on first use
    ],
    "pandas": ["pandas"],
    "polars": ["polars"],
    "loop": [],
}


def worker(impl: str, data: Path, out: Path, shard_rows: int, repeat: int) -> None:
    """One implementation in this process: imports first (untimed), then the work,
    ``repeat`` times into a fresh folder; the best time counts (the box is shared)."""
    import importlib

    sys.path.insert(0, str(ROOT))
    for mod in PRELOAD[impl]:
        importlib.import_module(mod)

    def cpu() -> float:  # user + system time of every thread of this process
        use = resource.getrusage(resource.RUSAGE_SELF)
        return use.ru_utime + use.ru_stime

    times, cpus = [], []
    for _ in range(repeat):
        for child in out.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
        t0, c0 = time.perf_counter(), cpu()
        check = RUNNERS[impl](data, out, shard_rows)
        times.append(time.perf_counter() - t0)
        cpus.append(cpu() - c0)
    check = check() if callable(check) else check
    pq.write_table(check, out / "check.parquet")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    res = {"seconds": min(times), "times": times, "cpu": cpus, "rss_mb": rss}
    print(json.dumps({**res, "rows": check.num_rows}))


def spawn(cmd: list[str], timeout: float | None) -> dict | str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout:.0f} s"
    if proc.returncode:
        return f"failed (rc {proc.returncode}): {proc.stderr.strip()[-2000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def read_trl(folder: Path) -> pa.Table:
    """Every TRL Parquet file of an implementation, concatenated, metadata dropped."""
    files = sorted(folder.glob("*.parquet"))
    return pa.concat_tables(pq.read_table(f).cast(_trl_schema()) for f in files).combine_chunks()


def check_same(name: str, out: Path, ref: Path) -> str:
    """Compare one implementation's pairs with (d)'s; return "ok" or what differs."""
    got = pq.read_table(out / "check.parquet")
    if name == "distilabel":
        want = pq.read_table(ref / "all_pairs.parquet")
        cols = ["prompt_id", "chosen_id", "rejected_id"]
        if got.select(cols).cast(want.select(cols).schema) != want.select(cols):
            return "DIFFERENT chosen/rejected ids"
        return "ok (ids, all prompts)"
    want = pq.read_table(ref / "check.parquet")
    ids = ["prompt_id", "chosen_id", "rejected_id"]
    if got.num_rows != want.num_rows:
        return f"DIFFERENT: {got.num_rows} pairs, polars {want.num_rows}"
    if got.select(ids).cast(want.select(ids).schema) != want.select(ids):
        return "DIFFERENT chosen/rejected ids"
    if not np.array_equal(got["votes"].to_numpy(), want["votes"].to_numpy()):
        return "DIFFERENT votes"
    diff = np.abs(got["strength_mean"].to_numpy() - want["strength_mean"].to_numpy()).max(
        initial=0.0
    )
    if diff > 1e-9:
        return f"DIFFERENT strength_mean (max diff {diff:.3g})"
    if read_trl(out / "trl") != read_trl(ref / "trl"):
        return "DIFFERENT TRL rows"
    return f"ok (ids, votes, strength to {diff:.0e}, TRL rows)"


def run_one(impl: str, args: argparse.Namespace, data: Path, root: Path) -> dict | str:
    """One implementation in a fresh subprocess; its result, checked against polars'."""
    out = root / impl
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    if impl == "distilabel":
        if not DISTILABEL_PY.exists():
            return (
                f"skipped: no {DISTILABEL_PY} (python3 -m venv /tmp/distilabel-venv && "
                "/tmp/distilabel-venv/bin/pip install distilabel==1.5.3 requests)"
            )
        cmd = [str(DISTILABEL_PY), str(ROOT / "benchmarks/distilabel_peer.py"), str(data), str(out)]
    else:
        cmd = [
            sys.executable,
            __file__,
            "--run",
            impl,
            "--data",
            str(data),
            "--out",
            str(out),
            *(["--shard-rows", str(args.shard_rows)] if args.shard_rows else []),
            "--repeat",
            str(1 if impl in SLOW and args.prompts > 50_000 else args.repeat),
        ]
    res = spawn(cmd, args.timeout)
    if isinstance(res, dict):
        res["check"] = "reference" if impl == "polars" else check_same(impl, out, root / "polars")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=50_000, help="P (K = 8 candidates each)")
    ap.add_argument(
        "--shard-rows", type=int, default=None, help="prefdata's shard size (default: its own)"
    )
    ap.add_argument("--only", nargs="*", choices=IMPLS, help="run only these (polars always)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per process (best counts)")
    ap.add_argument(
        "--rounds", type=int, default=2, help="processes per implementation, alternated"
    )
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per implementation")
    ap.add_argument("--workdir", type=Path, help="keep data and outputs here (default: temp)")
    ap.add_argument("--run", choices=list(RUNNERS), help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run:
        worker(args.run, args.data, args.out, args.shard_rows, args.repeat)
        return

    root = args.workdir or Path(tempfile.mkdtemp(prefix="bench-construct-"))
    root.mkdir(parents=True, exist_ok=True)
    data = root / f"pools-{args.prompts}.parquet"
    if not data.exists():
        sys.path.insert(0, str(ROOT))
        from prefdata.io.parquet import write_parquet

        t = time.perf_counter()
        write_parquet(make_pools(args.prompts), data)
        print(
            f"data: {args.prompts:,} prompts x {K} in {time.perf_counter() - t:.1f} s, "
            f"{data.stat().st_size / 1e6:.0f} MB",
            flush=True,
        )
    impls = ["polars", *[i for i in IMPLS if i != "polars" and (not args.only or i in args.only)]]
    results: dict[str, dict | str] = {}
    once = {"distilabel"}  # a minute per run at 100k
    # rounds alternate the implementations, so a busy moment of the (shared) box does not
    # land on one of them only; each one's best time over all its runs counts
    for rnd in range(args.rounds):
        for impl in impls:
            if rnd and (impl in once or not isinstance(results.get(impl), dict)):
                continue
            res = run_one(impl, args, data, root)
            if isinstance(res, dict):
                res["rounds"] = [res["seconds"]]  # this round's best, for paired ratios
            if isinstance(res, dict) and isinstance(results.get(impl), dict):
                prev = results[impl]
                res = {
                    **res,
                    "seconds": min(prev["seconds"], res["seconds"]),
                    "times": prev["times"] + res["times"],
                    "cpu": prev.get("cpu", []) + res.get("cpu", []),
                    "rounds": prev["rounds"] + res["rounds"],
                    "rss_mb": max(prev["rss_mb"], res["rss_mb"]),
                    "check": prev["check"]
                    if prev["check"] == res["check"]
                    else f"{prev['check']}; round {rnd + 1}: {res['check']}",
                }
            results[impl] = res
            print(f"round {rnd + 1} {impl}: {res}", flush=True)

    n = args.prompts
    ok = {k: v for k, v in results.items() if isinstance(v, dict)}
    ref = ok["polars"]["seconds"] if "polars" in ok else float("nan")
    ref_med = float(np.median(ok["polars"]["times"])) if "polars" in ok else float("nan")
    print(
        f"\nP = {n:,} prompts x {K} candidates ({n * K:,} candidates); "
        f"prefdata shard_rows = {args.shard_rows or 'default'}; load avg {os.getloadavg()[0]:.2f}"
    )
    print(
        f"{'implementation':<12} {'best s':>7} {'median s':>8} {'runs':>4} {'prompts/s':>10} "
        f"{'cands/s':>11} {'x polars':>8} {'(median)':>8} {'CPU s':>6} {'peak RSS MB':>11}  "
        "pairs check"
    )
    for impl, res in results.items():
        if not isinstance(res, dict):
            print(f"{impl:<12} {res}")
            continue
        s, med = res["seconds"], float(np.median(res.get("times", [res["seconds"]])))
        cpu = float(np.median(res["cpu"])) if res.get("cpu") else float("nan")
        print(
            f"{impl:<12} {s:7.2f} {med:8.2f} {len(res.get('times', [s])):4d} {n / s:10,.0f} "
            f"{n * K / s:11,.0f} {s / ref:8.2f} {med / ref_med:8.2f} {cpu:6.2f} "
            f"{res['rss_mb']:11,.0f}  {res['check']}"
        )
    print("CPU s: the median run's user + system seconds over all of its threads")
    for fast in ("prefdata", "polars"):
        if fast not in ok:
            continue
        best = ok[fast]["seconds"]
        for impl in ("loop", "distilabel", "pandas"):
            if impl in ok and impl != fast:
                x = ok[impl]["seconds"] / best
                line = (
                    f"{fast} is {x:.1f}x faster than {impl} (best times)"
                    if x >= 1
                    else f"{fast} takes {1 / x:.2f}x {impl}'s time (best times)"
                )
                if impl == "loop" and len(ok[impl]["rounds"]) > 1:
                    # each round's loop run against the same round's best: the box's speed
                    # drifts between rounds, far less within one
                    paired = [
                        a / b for a, b in zip(ok[impl]["rounds"], ok[fast]["rounds"], strict=False)
                    ]
                    line += f"; per round {', '.join(f'{r:.1f}' for r in paired)}"
                    line += f" (median {np.median(paired):.1f})"
                print(line)
    if args.workdir is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
