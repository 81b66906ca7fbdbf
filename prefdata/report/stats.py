"""Statistics of constructed tables (pairs, lists, unpaired) for reports and dataset cards.

Columnar throughout (polars); every function takes the table in its canonical schema or a
trainer layout that kept the same columns (``hub_table`` keeps them).

>>> t = pa.table({"margin": [1.0, 3.0, None]})
>>> numeric_summary(t["margin"])["mean"]
2.0
"""

from __future__ import annotations

import math
from itertools import combinations
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

NUMERIC_PAIR_COLUMNS = ("margin", "strength_mean", "strength_std", "p_chosen", "votes")


def _round(x: float | None, digits: int = 4) -> float | None:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return None
    return round(float(x), digits)


def numeric_summary(values: pa.Array | pa.ChunkedArray | pl.Series) -> dict[str, Any]:
    """count, nulls, mean, std (population), min, quartiles, max of a numeric column.

    >>> numeric_summary(pa.array([1.0, 2.0, 3.0, 4.0]))["median"]
    2.5
    """
    s = values if isinstance(values, pl.Series) else pl.Series(values=values)
    s = s.cast(pl.Float64)
    valid = s.drop_nulls().drop_nans()
    out: dict[str, Any] = {"count": int(valid.len()), "nulls": int(s.len() - valid.len())}
    if valid.len() == 0:
        return out | dict.fromkeys(("mean", "std", "min", "p25", "median", "p75", "max"))
    arr = valid.to_numpy()
    q = np.quantile(arr, [0.25, 0.5, 0.75])
    return out | {
        "mean": _round(arr.mean()),
        "std": _round(arr.std()),
        "min": _round(arr.min()),
        "p25": _round(q[0]),
        "median": _round(q[1]),
        "p75": _round(q[2]),
        "max": _round(arr.max()),
    }


def value_counts(values: pa.Array | pa.ChunkedArray) -> dict[str, int]:
    """Counts per value, most frequent first (ties by value), nulls as ``"(null)"``."""
    s = pl.Series(values=values).cast(pl.String).fill_null("(null)")
    vc = s.value_counts()
    rows = sorted(vc.iter_rows(), key=lambda r: (-r[1], r[0]))
    return {k: int(v) for k, v in rows}


def dropped_counts(pools: pa.Table | list) -> dict[str, int]:
    """Candidates dropped inside pools (the ``dropped_candidates`` column), by reason,
    sorted by reason; ``pools``: a pool table or pool Parquet files (only that column is
    read).

    >>> t = pa.table({"dropped_candidates": [[{"candidate_id": "a", "reason": "flagged: empty"}],
    ...                                      []]})
    >>> dropped_counts(t)
    {'flagged: empty': 1}
    """
    import pyarrow.compute as pc

    from prefdata.io.shards import TableFile

    if isinstance(pools, list):
        if not pools or "dropped_candidates" not in TableFile(pools[0]).schema.names:
            return {}
        tables = [TableFile(p).read(columns=["dropped_candidates"]) for p in pools]
        pools = pa.concat_tables(tables, promote_options="default")
    if "dropped_candidates" not in pools.column_names:
        return {}
    reasons = pc.struct_field(pc.list_flatten(pools["dropped_candidates"]), "reason")
    counts = pc.value_counts(reasons).to_pylist()
    return dict(sorted((c["values"], c["counts"]) for c in counts))


def _text_lengths(col: pa.ChunkedArray) -> pl.Series:
    """Characters of a string column, or of the last message's content of a message list."""
    s = pl.Series(values=col)
    if s.dtype == pl.String:
        return s.str.len_chars()
    if isinstance(s.dtype, pl.List):
        return s.list.last().struct.field("content").str.len_chars()
    if isinstance(s.dtype, pl.Struct):
        return s.struct.field(s.dtype.fields[-1].name).str.len_chars()
    raise TypeError(f"no text in a column of type {s.dtype}")


def table_stats(table: pa.Table) -> dict[str, Any]:
    """Rows, prompts, numeric summaries and generator/strategy counts of a constructed table.

    >>> t = pa.table({"prompt_id": ["a", "a", "b"], "chosen": ["xx", "y", "z"],
    ...               "rejected": ["q", "r", "s"], "margin": [1.0, 2.0, 3.0],
    ...               "chosen_generator": ["g1", "g1", "g2"], "strategy": ["bw"] * 3})
    >>> s = table_stats(t)
    >>> s["rows"], s["prompts"], s["numeric"]["margin"]["mean"], s["generators"]["chosen"]
    (3, 2, 2.0, {'g1': 2, 'g2': 1})
    """
    names = set(table.column_names)
    out: dict[str, Any] = {"rows": table.num_rows}
    if "prompt_id" in names:
        out["prompts"] = int(pl.Series(values=table["prompt_id"]).n_unique())
    numeric = {}
    for name in (*NUMERIC_PAIR_COLUMNS, "score"):
        if name in names and table[name].null_count < table.num_rows:
            numeric[name] = numeric_summary(table[name])
    if "responses" in names:
        resp = pl.from_arrow(table.select(["responses"])).explode("responses").unnest("responses")
        if "score" in resp.columns:
            numeric["response score"] = numeric_summary(resp["score"])
        out["responses_per_list"] = numeric_summary(pl.Series(values=table["responses"]).list.len())
        if "generator" in resp.columns:
            out["generators"] = {"responses": value_counts(resp["generator"].to_arrow())}
    out["numeric"] = numeric
    gens = {}
    for side in ("chosen", "rejected"):
        if f"{side}_generator" in names:
            gens[side] = value_counts(table[f"{side}_generator"])
    if gens:
        out["generators"] = gens
    if "strategy" in names:
        out["strategies"] = value_counts(table["strategy"])
    if "label" in names:
        out["labels"] = value_counts(table["label"])
    lengths = {}
    for name in ("chosen", "rejected", "completion"):
        if name in names:
            lengths[name] = numeric_summary(_text_lengths(table[name]))
    if lengths:
        out["length_chars"] = lengths
    if "rationale" in names:
        out["rationales"] = int(table.num_rows - table["rationale"].null_count)
    return out


_DERIVED = (".z", ".pz", ".rank")


def _base_scorer(name: str) -> str:
    """``rm`` for ``rm.z``, ``rm.pz`` and ``rm.rank`` (normalised copies of one scorer)."""
    return next((name.removesuffix(s) for s in _DERIVED if name.endswith(s)), name)


def _agreement(diffs: pl.DataFrame, names: list[str]) -> dict[str, dict[str, Any]]:
    # A scorer and its own normalised copy always agree: compare raw scorers only.
    names = [n for n in names if _base_scorer(n) == n] or names
    out = {}
    for a, b in combinations(names, 2):
        both = diffs.select(pl.col(a), pl.col(b)).drop_nulls()
        both = both.filter(pl.col(a).is_not_nan() & pl.col(b).is_not_nan())
        n = both.height
        agree = both.filter(pl.col(a).sign() == pl.col(b).sign()).height
        out[f"{a} vs {b}"] = {"pairs": n, "agreement": _round(agree / n) if n else None}
    return out


def scorer_agreement(table: pa.Table) -> dict[str, dict[str, Any]] | None:
    """Pairwise sign agreement between scorers: for every two score fields a and b, the share
    of response pairs where sign(a_1 - a_2) == sign(b_1 - b_2) (pairs where either is null
    are left out; exact ties count as a sign of 0).

    Reads per-scorer scores from a pair table's ``chosen_scores`` / ``rejected_scores``
    struct columns, or from a pool table's ``candidates[].scores`` (every two candidates of
    the same pool form a pair). Returns None when fewer than two score fields exist.

    >>> t = pa.table({"chosen_scores": [{"a": 2.0, "b": 1.0}, {"a": 1.0, "b": 0.0}],
    ...               "rejected_scores": [{"a": 1.0, "b": 0.0}, {"a": 2.0, "b": -1.0}]})
    >>> scorer_agreement(t)
    {'a vs b': {'pairs': 2, 'agreement': 0.5}}
    """
    names = set(table.column_names)
    if {"chosen_scores", "rejected_scores"} <= names:
        df = pl.from_arrow(table.select(["chosen_scores", "rejected_scores"]))
        fields = [f.name for f in df.schema["chosen_scores"].fields]
        fields = [f for f in fields if f in {g.name for g in df.schema["rejected_scores"].fields}]
        if len(fields) < 2:
            return None
        diffs = df.select(
            [
                (
                    pl.col("chosen_scores").struct.field(f).cast(pl.Float64)
                    - pl.col("rejected_scores").struct.field(f).cast(pl.Float64)
                ).alias(f)
                for f in fields
            ]
        )
        return _agreement(diffs, fields)
    if "candidates" in names:
        cand = table.schema.field("candidates").type.value_type
        if cand.get_field_index("scores") < 0:
            return None
        fields = [f.name for f in cand.field("scores").type]
        if len(fields) < 2:
            return None
        long = (
            pl.from_arrow(table.select(["candidates"]))
            .with_row_index("pool")
            .explode("candidates")
            .drop_nulls("candidates")
            .select(
                "pool",
                *[
                    pl.col("candidates").struct.field("scores").struct.field(f).alias(f)
                    for f in fields
                ],
            )
            .with_row_index("i")
        )
        pairs = long.join(long, on="pool", suffix="_2").filter(pl.col("i") < pl.col("i_2"))
        diffs = pairs.select([(pl.col(f) - pl.col(f"{f}_2")).alias(f) for f in fields])
        return _agreement(diffs, fields)
    return None


def size_category(n: int) -> str:
    """The Hub's ``size_categories`` bucket for ``n`` rows.

    >>> size_category(805), size_category(1000), size_category(25_000)
    ('n<1K', '1K<n<10K', '10K<n<100K')
    """
    bounds = [
        (10**3, "n<1K"),
        (10**4, "1K<n<10K"),
        (10**5, "10K<n<100K"),
        (10**6, "100K<n<1M"),
        (10**7, "1M<n<10M"),
        (10**8, "10M<n<100M"),
        (10**9, "100M<n<1B"),
        (10**10, "1B<n<10B"),
        (10**11, "10B<n<100B"),
        (10**12, "100B<n<1T"),
    ]
    return next((label for bound, label in bounds if n < bound), "n>1T")
