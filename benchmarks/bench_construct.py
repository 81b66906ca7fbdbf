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

(a) ``prefdata``: ``ScoreStatsFit`` over the file's record batches, then
    ``LocalExecutor(shard_rows=...)`` streaming shards through ``Normalise("zscore",
    stats=...)``, ``Pairs("best-worst", score="a.z")``, ``Vote(k=2)`` and ``Strength``
    (checkpointed: every stage's shard written to the work directory, with the manifest),
    then ``export(pairs, "trl-dpo", ...)`` per output shard (``train-00000.parquet``, ...:
    memory stays one shard).
(b) ``loop``: ``to_pylist()`` then plain Python over dicts, one row at a time, the way
    dict-passing pipeline frameworks run their steps; ``pq.write_table`` at the end.
(c) ``pandas``: explode to one row per candidate, ``groupby.transform``/``idxmax``/
    ``idxmin``, merge back, then build the message lists.
(d) ``polars``: one hand-written eager query (explode, window functions, ``arg_max`` /
    ``arg_min``, list gather), the practical limit.
(e) ``distilabel``: distilabel 1.5.3's ``LoadDataFromDicts >> FormatTextGenerationDPO``
    in its own venv (``benchmarks/distilabel_peer.py``), fed ``generations`` = the 8
    responses and ``ratings`` = the z-scores of ``a`` (computed before it, in the timed
    part); it picks chosen/rejected by max/min rating and does *no* strength or vote, so
    it does less work than the others. Skipped with a message when its venv is absent::

        python3 -m venv /tmp/distilabel-venv
        /tmp/distilabel-venv/bin/pip install distilabel==1.5.3   # no torch needed

Every implementation's pairs are checked against (d): the same (chosen id, rejected id)
for every prompt, the same kept prompts, and (a, b, c) the same ``votes`` and
``strength_mean`` (to 1e-9), and the written TRL rows equal.

    .venv/bin/python benchmarks/bench_construct.py                   # P = 20,000 (2-3 min)
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
            [pa.array(["user"] * p), prompt_text], names=["role", "content"]
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
    cand = pa.StructArray.from_arrays(
        [
            cid,
            resp,
            pa.array(np.array(["gen-x", "gen-y"])[ci % 2]),
            pa.array((ci % K).astype(np.int32)),
            pa.array(np.full(n, 1234, dtype=np.int64)),
            pa.array(["stop"] * n),
            pa.array(rng.integers(5, 40, n).astype(np.int32)),
            scores,
            pa.ListArray.from_arrays(pa.array(np.zeros(n + 1, dtype=np.int32)), pa.array([], pa.string())),
        ],
        fields=list(pool_schema(list(SCORERS)).field("candidates").type.value_type),
    )
    candidates = pa.ListArray.from_arrays(pa.array(np.arange(0, n + 1, K, dtype=np.int32)), cand)
    return pa.table(
        [prompt_ids, prompt, pa.array(["bench"] * p), pa.nulls(p, pa.string()), candidates],
        schema=pool_schema(list(SCORERS)),
    )
