"""Summary statistics of pool tables (used by ``prefdata inspect`` and the dataset card)."""

from __future__ import annotations

import math
from typing import Any

import polars as pl
import pyarrow as pa

from prefdata.schema import score_names


def _num(x: Any) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def candidates_frame(table: pa.Table) -> pl.DataFrame:
    """One row per candidate: prompt_id plus the candidate's fields, scores unnested as
    ``scores.<name>`` columns."""
    df = pl.from_arrow(table.select(["prompt_id", "candidates"]))
    df = df.explode("candidates").drop_nulls("candidates").unnest("candidates")
    if "scores" in df.columns:
        names = score_names(table)
        if names:
            df = df.with_columns(
                [pl.col("scores").struct.field(n).alias(f"scores.{n}") for n in names]
            )
        df = df.drop("scores")
    return df


def pool_stats(table: pa.Table) -> dict[str, Any]:
    """Pools, candidates per pool, generators and per-score summaries.

    >>> from prefdata.schema import pool_schema
    >>> t = pa.Table.from_pylist([{"prompt_id": "p", "prompt": [], "candidates": [
    ...     {"candidate_id": "a", "response": "x", "generator": "g", "scores": {"rm": 1.0}},
    ...     {"candidate_id": "b", "response": "y", "generator": "g", "scores": {"rm": None}}]}],
    ...     schema=pool_schema(["rm"]))
    >>> s = pool_stats(t)
    >>> s["pools"], s["candidates"], s["scores"]["rm"]["nulls"], s["scores"]["rm"]["mean"]
    (1, 2, 1, 1.0)
    """
    sizes = pl.from_arrow(table.select(["candidates"])).select(
        pl.col("candidates").list.len().alias("n")
    )["n"]
    cands = candidates_frame(table)
    scores: dict[str, dict[str, Any]] = {}
    for name in score_names(table):
        col = cands[f"scores.{name}"]
        scores[name] = {
            "count": int(col.len() - col.null_count()),
            "nulls": int(col.null_count()),
            "mean": _num(col.mean()),
            "std": _num(col.std()),
            "min": _num(col.min()),
            "max": _num(col.max()),
        }
    gens = (
        cands.group_by("generator").len().sort(["len", "generator"], descending=[True, False])
        if cands.height and "generator" in cands.columns
        else pl.DataFrame({"generator": [], "len": []})
    )
    flags = (
        cands.select(pl.col("flags").explode().drop_nulls()).group_by("flags").len().sort("flags")
        if cands.height and "flags" in cands.columns
        else pl.DataFrame({"flags": [], "len": []})
    )
    return {
        "pools": table.num_rows,
        "candidates": int(cands.height),
        "candidates_per_pool": {
            "min": int(sizes.min()) if len(sizes) else 0,
            "mean": _num(sizes.mean()) if len(sizes) else 0.0,
            "max": int(sizes.max()) if len(sizes) else 0,
        },
        "generators": {r[0]: int(r[1]) for r in gens.iter_rows()},
        "flags": {r[0]: int(r[1]) for r in flags.iter_rows()},
        "scores": scores,
    }
