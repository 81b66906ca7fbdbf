"""MinHash near-duplicate detection of N short prompts: prefdata's dedup against
datasketch's own MinHashLSH (and rensa's RMinHashDeduplicator when installed), same data,
same run, each implementation in its own subprocess so its peak memory is its own
(``VmHWM``, ``benchmarks/rss.py``).

Data: N synthetic prompts of 8-20 words from a 30,000-word vocabulary (seeded); 10% are
planted near-duplicates of an earlier prompt (one word replaced, or one appended), so the
recall of each implementation against the planted set is reported too.

Settings shared by all: word 1-gram shingles (the word set), 128 permutations, Jaccard
threshold 0.8, keep the first occurrence. datasketch: ``MinHash.bulk`` signatures, then
query-before-insert into ``MinHashLSH`` (its documented streaming dedup). prefdata:
``DedupFit(method="minhash", ngram=1)`` (NumPy signatures, LSH banding, verified links,
connected components). The timed part starts from the prompt strings in memory.

    .venv/bin/python benchmarks/bench_filters.py             # N = 100,000 (about 1-2 min)
    .venv/bin/python benchmarks/bench_filters.py --n 1000000 # the issue's size
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np
from rss import peak_rss_mb

THRESHOLD, NUM_PERM = 0.8, 128


def make_prompts(n: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """N prompts and the indices of planted near-duplicates."""
    rng = np.random.default_rng(seed)
    vocab = np.array([f"w{i}" for i in range(30_000)])
    lengths = rng.integers(8, 21, n)
    words = [vocab[rng.integers(0, len(vocab), k)].tolist() for k in lengths]
    planted = np.flatnonzero(rng.random(n) < 0.1)
    planted = planted[planted > 0]
    for i in planted:
        src = list(words[int(rng.integers(0, i))])
        if rng.random() < 0.5:
            src[int(rng.integers(0, len(src)))] = str(vocab[rng.integers(0, len(vocab))])
        else:
            src.append(str(vocab[rng.integers(0, len(vocab))]))
        words[i] = src
    return [" ".join(w) for w in words], planted


def run_prefdata(texts: list[str]) -> np.ndarray:
    import pyarrow as pa

    from prefdata.filter.dedup import DedupFit
    from prefdata.schema import pool_schema

    prompt = pa.array(
        [[{"role": "user", "content": t}] for t in texts], type=pool_schema().field("prompt").type
    )
    table = pa.table(
        {
            "prompt_id": pa.array([f"p{i}" for i in range(len(texts))]),
            "prompt": prompt,
            "source": pa.array(["bench"] * len(texts)),
        }
    )
    t0 = time.perf_counter()
    fit = DedupFit(method="minhash", threshold=THRESHOLD, num_perm=NUM_PERM, ngram=1)
    _, keep, _ = fit.update(table).decide()
    return ~keep, t0


def run_datasketch(texts: list[str]) -> np.ndarray:
    from datasketch import MinHash, MinHashLSH

    t0 = time.perf_counter()
    sets = [[w.encode() for w in set(t.split())] for t in texts]
    sigs = MinHash.bulk(sets, num_perm=NUM_PERM)
    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM)
    dup = np.zeros(len(texts), dtype=bool)
    for i, m in enumerate(sigs):
        if lsh.query(m):
            dup[i] = True
        else:
            lsh.insert(i, m)
    return dup, t0


def run_rensa(texts: list[str]) -> np.ndarray:
    from rensa import RMinHashDeduplicator

    t0 = time.perf_counter()
    dedup = RMinHashDeduplicator(threshold=THRESHOLD, num_perm=NUM_PERM, use_lsh=True)
    keep = dedup.add_pairs((str(i), t.split()) for i, t in enumerate(texts))
    return ~np.asarray(keep, dtype=bool), t0


IMPLS = {"prefdata": run_prefdata, "datasketch": run_datasketch, "rensa": run_rensa}


def child(impl: str, n: int, seed: int) -> None:
    texts, planted = make_prompts(n, seed)
    rss0 = peak_rss_mb()
    dup, t0 = IMPLS[impl](texts)
    seconds = time.perf_counter() - t0
    rss = peak_rss_mb()
    print(
        json.dumps(
            {
                "impl": impl,
                "n": n,
                "seconds": round(seconds, 2),
                "peak_rss_mb": round(rss, 1),
                "peak_over_data_mb": round(rss - rss0, 1),
                "duplicates": int(dup.sum()),
                "planted": len(planted),
                "recall_planted": round(float(dup[planted].mean()), 4) if len(planted) else None,
                "dup_indices_digest": int(np.flatnonzero(dup).sum() % 1_000_003),
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--impl", nargs="*", default=["prefdata", "datasketch", "rensa"])
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.n, args.seed)
        return
    results = []
    for impl in args.impl:
        if impl == "rensa":
            try:
                import rensa  # noqa: F401
            except ImportError:
                print("rensa not installed: skipped", file=sys.stderr)
                continue
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                impl,
                "--n",
                str(args.n),
                "--seed",
                str(args.seed),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), flush=True)
    base = next((r for r in results if r["impl"] == "datasketch"), None)
    header = (
        "implementation | N | seconds | peak RSS MB (over data) | duplicates | recall of planted"
    )
    print(f"\n| {header} |")
    print("|---|---|---|---|---|---|")
    for r in results:
        speed = (
            f" ({base['seconds'] / r['seconds']:.1f}x datasketch)" if base and r is not base else ""
        )
        print(
            f"| {r['impl']} | {r['n']:,} | {r['seconds']}{speed} | {r['peak_rss_mb']} "
            f"({r['peak_over_data_mb']}) | {r['duplicates']:,} | {r['recall_planted']} |"
        )


if __name__ == "__main__":
    main()
