"""Hand-written baselines for ``bench_construct.py --layout long|pairs``: the work of
``recipes/binarize.py`` from a raw Parquet file to a TRL DPO Parquet file, written the way a
user would write it without prefdata. Each runs as a script of its own, so the benchmark
times the whole process (interpreter start and imports included), as it does the recipe::

    python benchmarks/bench_ingest_peers.py polars long raw.parquet out/   # out/trl/train.parquet
    python benchmarks/bench_ingest_peers.py loop pairs raw.parquet out/

The work (what binarize.py's stages do, see prefdata/filter/degenerate.py, DropFlagged,
Normalise, Pairs, Vote, Strength and RecordedPairs):

``long`` (one row per response; ``--strategy best-worst --vote 2`` over scores a, b, c)
  1. group the rows by prompt (pools in order of first appearance, candidates in file order);
  2. flag a candidate when its response is empty after stripping whitespace, when its text
     (lower-cased, stripped, at least 20 characters) is seen under at least 5 distinct
     prompts, or when it matches one of ``JUDGE_INJECTION_PATTERNS`` (case-insensitive);
     drop flagged candidates and the pools left with fewer than 2;
  3. z-score a, b, c over the kept candidates (dataset mean, population std);
  4. best-worst on ``a.z`` (ties: the earlier candidate), no pair when both texts are equal;
  5. vote: keep the pair when at least 2 of the 3 z-differences are > 0; strength mean and
     population std of the differences, ``p_chosen = sigmoid(mean)``;
  6. write TRL DPO: prompt ``[{"role": "user", ...}]``, chosen and rejected
     ``[{"role": "assistant", ...}]``.

``pairs`` (one row per recorded pair; ``--strategy recorded``, scores score_chosen and
score_rejected)
  1. group the rows by prompt: rows that share a prompt form one pool;
  2. flag chosen and rejected texts as above; a pool with a flagged response keeps none of
     its recorded pairs (DropFlagged drops the candidate, so a single pair is left with one
     candidate, and a merged pool's recorded pair names a candidate that is gone);
  3. z-score ``preference`` (1.0 chosen, 0.0 rejected) and ``score`` over the kept
     candidates, strength of every recorded pair (not written to the TRL file, as in
     prefdata);
  4. write every recorded pair of the kept pools as TRL DPO.

The judge-injection patterns are copied from prefdata/filter/degenerate.py (a user's script
would not import prefdata); ``check_patterns()`` asserts that they still match.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

MIN_CHARS = 20  # repeated_min_chars
MIN_PROMPTS = 5  # --repeated-min-prompts
SCORES = ("a", "b", "c")
VOTE = 2

JUDGE_INJECTION_PATTERNS: tuple[str, ...] = (
    r"\bignore\s+(all\s+|any\s+)?(of\s+)?(the\s+|your\s+)?(above|previous|prior|preceding|earlier)"
    r"(\s+(instructions?|outputs?|text|prompts?|responses?|context))?\b",
    r"\b(disregard|forget)\s+(all\s+)?(the\s+|your\s+)?(above|previous|prior)\s+"
    r"(instructions?|outputs?|prompts?)\b",
    r"(^|\n)\s*#{1,4}\s*(model\s+outputs?|instruction|evaluation|preferred\s+output|"
    r"output\s*\(?[ab]\)?|verdict)\s*(\n|$)",
    r"[\"']?model_identifier[\"']?\s*:",
    r"\b(dear|attention|note\s+(to|for))\s+(the\s+)?(ai\s+judge|llm\s+judge|evaluator|grader|"
    r"rater|annotator|reward\s+model)s?\b",
    r"\b(judge|evaluator|grader|rater|annotator|reward\s+model)s?\s*[:,]\s*(you\s+)?"
    r"(must|should|please|always)\b",
    r"\b(as\s+(the|an?)\s+)?(judge|evaluator|grader|rater)\s*,?\s+(you\s+)?(must|should)\s+"
    r"(prefer|choose|select|pick|rate|score)\b",
    r"\b(rate|score|grade|rank)\s+(this|my|the\s+following|the\s+above)\s+"
    r"(response|answer|output|completion)\s+(as\s+)?(a\s+)?(10|ten|5|five|100|the\s+(best|highest))",
    r"\b(prefer|choose|select|pick)\s+(this|my)\s+(response|answer|output|completion)\b",
    r"\bthis\s+(response|answer|output)\s+(is|should\s+be)\s+(rated|scored|judged|preferred)\b",
    r"\[\[\s*([ab]|tie)\s*\]\]",
)
INJECTION = "(?i)(" + "|".join(f"(?:{p})" for p in JUDGE_INJECTION_PATTERNS) + ")"


def check_patterns() -> str:
    """ "ok" when prefdata's patterns are still the ones copied here (run outside the
    timed processes)."""
    from prefdata.filter.degenerate import JUDGE_INJECTION_PATTERNS as current

    return "ok" if tuple(current) == JUDGE_INJECTION_PATTERNS else "CHANGED in prefdata"


# --------------------------------------------------------------------------- polars


def polars_norm(text):
    """The text a repeat is counted on: lower-cased, stripped, null when too short."""
    import polars as pl

    norm = text.str.to_lowercase().str.strip_chars()
    return pl.when(norm.str.len_chars() >= MIN_CHARS).then(norm)


def polars_repeated(frame, columns: list[str]):
    """Normalised texts (of ``columns``) seen under at least MIN_PROMPTS distinct prompts."""
    import polars as pl

    texts = pl.concat([frame.select("prompt", t=polars_norm(pl.col(c))) for c in columns])
    counts = texts.drop_nulls("t").unique().group_by("t").len()
    return counts.filter(pl.col("len") >= MIN_PROMPTS).get_column("t")


def polars_flagged(column: str, repeated):
    """True for a flagged response in ``column``: empty, repeated or a judge injection."""
    import polars as pl

    text = pl.col(column)
    return (
        (text.str.strip_chars() == "")
        | polars_norm(text).is_in(repeated.implode()).fill_null(False)
        | text.str.contains(INJECTION)
    )


def zscore(name: str):
    import polars as pl

    return ((pl.col(name) - pl.col(name).mean()) / pl.col(name).std(ddof=0)).alias(f"{name}.z")


def polars_read(src: Path):
    """The raw file as a polars frame (Parquet, JSON Lines or a JSON array)."""
    import polars as pl

    read = {".jsonl": pl.read_ndjson, ".json": pl.read_json}.get(src.suffix, pl.read_parquet)
    return read(src)


def write_trl_polars(frame, out: Path) -> int:
    """``frame`` (prompt, chosen, rejected strings) as TRL DPO message lists."""
    import polars as pl

    def msg(role: str, col: str):
        return pl.concat_list(pl.struct(role=pl.lit(role), content=pl.col(col)))

    trl = frame.select(
        prompt=msg("user", "prompt"), chosen=msg("assistant", "chosen"),
        rejected=msg("assistant", "rejected"),
    )  # fmt: skip
    (out / "trl").mkdir(parents=True, exist_ok=True)
    trl.write_parquet(out / "trl/train.parquet")
    return trl.height


def polars_long(src: Path, out: Path) -> int:
    import polars as pl

    raw = polars_read(src).select("prompt", "response", "generator", *SCORES)
    repeated = polars_repeated(raw, ["response"])
    kept = (
        raw.filter(~polars_flagged("response", repeated))
        .filter(pl.len().over("prompt") >= 2)  # pools left with fewer than 2 are rejected
        .with_columns(zscore(s) for s in SCORES)
    )
    z = [f"{s}.z" for s in SCORES]
    best, worst = pl.col("a.z").arg_max(), pl.col("a.z").arg_min()  # first on ties
    pairs = kept.group_by("prompt", maintain_order=True).agg(
        chosen=pl.col("response").get(best),
        rejected=pl.col("response").get(worst),
        **{f"d_{x}": pl.col(x).get(best) - pl.col(x).get(worst) for x in z},
    )
    d = [pl.col(f"d_{x}") for x in z]
    mean = pl.mean_horizontal(d)
    pairs = pairs.filter(pl.col("chosen") != pl.col("rejected")).with_columns(
        votes=pl.sum_horizontal([(x > 0).cast(pl.Int32) for x in d]),
        strength_mean=mean,
        strength_std=(pl.sum_horizontal([(x - mean) ** 2 for x in d]) / len(d)).sqrt(),
        p_chosen=1.0 / (1.0 + (-mean).exp()),
    )
    return write_trl_polars(pairs.filter(pl.col("votes") >= VOTE), out)


def polars_pairs(src: Path, out: Path) -> int:
    import polars as pl

    raw = polars_read(src).with_row_index("row")
    repeated = polars_repeated(raw, ["chosen", "rejected"])
    bad = polars_flagged("chosen", repeated) | polars_flagged("rejected", repeated)
    # a pool (rows sharing a prompt) with any flagged response keeps none of its pairs
    kept = raw.filter(~bad.any().over("prompt"))
    # z-scores over the kept candidates: a z-difference is the raw difference over the
    # population std (the means cancel); preference is n ones and n zeros: std 0.5
    scores = pl.concat([kept.get_column("score_chosen"), kept.get_column("score_rejected")])
    d = [pl.lit(1.0 / 0.5), (pl.col("score_chosen") - pl.col("score_rejected")) / scores.std(0)]
    mean = pl.mean_horizontal(d)
    kept = kept.with_columns(
        strength_mean=mean,
        strength_std=(pl.sum_horizontal([(x - mean) ** 2 for x in d]) / len(d)).sqrt(),
        p_chosen=1.0 / (1.0 + (-mean).exp()),
    )
    # pools in order of first appearance, each pool's pairs in file order
    first = pl.col("row").min().over("prompt")
    return write_trl_polars(kept.sort(first, "row"), out)


# --------------------------------------------------------------------------- loop


def loop_read(src: Path) -> list[dict]:
    """The raw file's rows as dicts (Parquet, JSON Lines one line at a time, or a JSON
    array)."""
    if src.suffix == ".json":
        with open(src, encoding="utf-8") as f:
            return json.load(f)
    if src.suffix == ".jsonl":
        with open(src, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    import pyarrow.parquet as pq

    return pq.read_table(src).to_pylist()


def loop_flags(rows: list[dict], columns: list[str]) -> set[str]:
    """Normalised texts seen under at least MIN_PROMPTS prompts, one row at a time."""
    seen: dict[str, set[str]] = {}
    for row in rows:
        for col in columns:
            norm = row[col].lower().strip()
            if len(norm) >= MIN_CHARS:
                seen.setdefault(norm, set()).add(row["prompt"])
    return {t for t, prompts in seen.items() if len(prompts) >= MIN_PROMPTS}


def loop_flagged(text: str, repeated: set[str], injection: re.Pattern) -> bool:
    norm = text.lower().strip()
    return (
        not text.strip()
        or (len(norm) >= MIN_CHARS and norm in repeated)
        or injection.search(text) is not None
    )


def welford(values) -> tuple[float, float]:
    """Mean and population std, one value at a time."""
    n, mean, m2 = 0, 0.0, 0.0
    for x in values:
        n += 1
        d = x - mean
        mean += d / n
        m2 += d * (x - mean)
    return mean, math.sqrt(m2 / n) if n else 0.0


def strength(d: list[float]) -> dict:
    mean = sum(d) / len(d)
    std = math.sqrt(sum((x - mean) ** 2 for x in d) / len(d))
    return {"strength_mean": mean, "strength_std": std, "p_chosen": 1 / (1 + math.exp(-mean))}


def write_trl_loop(records: list[dict], out: Path) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    msg = pa.list_(pa.struct([pa.field("role", pa.string()), pa.field("content", pa.string())]))
    schema = pa.schema([("prompt", msg), ("chosen", msg), ("rejected", msg)])
    rows = [
        {
            "prompt": [{"role": "user", "content": r["prompt"]}],
            "chosen": [{"role": "assistant", "content": r["chosen"]}],
            "rejected": [{"role": "assistant", "content": r["rejected"]}],
        }
        for r in records
    ]
    (out / "trl").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), out / "trl/train.parquet")
    return len(rows)


def loop_long(src: Path, out: Path) -> int:

    rows = loop_read(src)
    injection = re.compile(INJECTION)
    repeated = loop_flags(rows, ["response"])
    pools: dict[str, list[dict]] = {}
    for row in rows:
        if not loop_flagged(row["response"], repeated, injection):
            pools.setdefault(row["prompt"], []).append(row)
        else:
            pools.setdefault(row["prompt"], [])
    pools = {p: cands for p, cands in pools.items() if len(cands) >= 2}
    stats = {s: welford(c[s] for cands in pools.values() for c in cands) for s in SCORES}
    records = []
    for prompt, cands in pools.items():
        for c in cands:
            for s in SCORES:
                c[f"{s}.z"] = (c[s] - stats[s][0]) / stats[s][1]
        best = worst = cands[0]
        for c in cands[1:]:
            if c["a.z"] > best["a.z"]:
                best = c
            if c["a.z"] < worst["a.z"]:
                worst = c
        if best["response"] == worst["response"]:
            continue
        d = [best[f"{s}.z"] - worst[f"{s}.z"] for s in SCORES]
        if sum(x > 0 for x in d) < VOTE:
            continue
        records.append(
            {"prompt": prompt, "chosen": best["response"], "rejected": worst["response"]}
            | strength(d)
        )
    return write_trl_loop(records, out)


def loop_pairs(src: Path, out: Path) -> int:

    rows = loop_read(src)
    injection = re.compile(INJECTION)
    repeated = loop_flags(rows, ["chosen", "rejected"])
    pools: dict[str, list[dict]] = {}
    bad: set[str] = set()
    for row in rows:
        pools.setdefault(row["prompt"], []).append(row)
        if any(loop_flagged(row[c], repeated, injection) for c in ("chosen", "rejected")):
            bad.add(row["prompt"])
    pools = {p: pairs for p, pairs in pools.items() if p not in bad}
    kept = [r for pairs in pools.values() for r in pairs]
    pref = welford(x for _ in kept for x in (1.0, 0.0))
    score = welford(x for r in kept for x in (r["score_chosen"], r["score_rejected"]))
    records = []
    for r in kept:
        d = [
            (1.0 - 0.0) / pref[1] if pref[1] else 0.0,
            (r["score_chosen"] - r["score_rejected"]) / score[1],
        ]
        records.append(r | strength(d))
    return write_trl_loop(records, out)


RUNNERS = {
    ("polars", "long"): polars_long,
    ("polars", "pairs"): polars_pairs,
    ("loop", "long"): loop_long,
    ("loop", "pairs"): loop_pairs,
}


def main(argv: list[str]) -> None:
    impl, layout, src, out = argv
    rows = RUNNERS[impl, layout](Path(src), Path(out))
    print(f"{impl} {layout}: {rows} TRL rows -> {out}/trl/train.parquet")


if __name__ == "__main__":
    main(sys.argv[1:])
