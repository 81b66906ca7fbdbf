"""Bucketed reward-model scoring vs a naive fixed-size, unsorted batching loop.

Same model (a tiny random Llama reward model, larger than the test one so compute matters,
built with prefdata.testing helpers), same candidates (alpaca_eval responses, so lengths are
realistic), same run. Both paths include tokenisation; both call the same forward.

    .venv/bin/python benchmarks/bench_scoring.py            # default: ~1-2 min on 2 CPU cores
    .venv/bin/python benchmarks/bench_scoring.py --n 2000 --max-length 1024
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prefdata.score import RewardModel, pools_from_texts  # noqa: E402
from prefdata.score.batching import fixed_batches, padding_waste, plan_batches  # noqa: E402

DATA = Path(
    os.environ.get("PREFDATA_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def build_model(root: Path, hidden: int, layers: int, max_length: int) -> Path:
    import torch
    from transformers import LlamaForSequenceClassification

    from prefdata.testing import build_tokenizer, llama_config

    tok = build_tokenizer()
    cfg = llama_config(
        tok,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=max(2, hidden // 64),
        num_key_value_heads=max(2, hidden // 64),
        max_position_embeddings=max_length,
        num_labels=1,
    )
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(cfg).eval()
    model.save_pretrained(root)
    tok.save_pretrained(root)
    return root


def load_pools(n: int, per_prompt: int, seed: int):
    t = pq.read_table(
        DATA / "alpaca_eval_pool.parquet", columns=["prompt_id", "instruction", "output"]
    )
    rng = np.random.default_rng(seed)
    ids = np.unique(t["prompt_id"].to_numpy())
    chosen = rng.choice(ids, size=max(1, n // per_prompt), replace=False)
    df = t.to_pandas()
    prompts, responses = [], []
    for pid in chosen:
        sub = df[df.prompt_id == pid]
        pick = sub.sample(n=min(per_prompt, len(sub)), random_state=int(pid))
        prompts.append(sub.instruction.iloc[0])
        responses.append([r or "" for r in pick.output.tolist()])
    return pools_from_texts(prompts, responses, generator="alpaca_eval")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=192, help="candidates")
    ap.add_argument("--per-prompt", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=16, help="naive rows per batch")
    ap.add_argument("--max-length", type=int, default=2048)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = ap.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    pools = load_pools(args.n, args.per_prompt, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = build_model(Path(tmp) / "rm", args.hidden, args.layers, args.max_length)
        # Equal peak memory: the budget is what one naive batch of the longest rows pads to.
        budget = args.batch_size * args.max_length
        rm = RewardModel(str(path), max_length=args.max_length, token_budget=budget)
        rm.setup()
        rm.resources["__setup_done__"] = True
        rm(pools.slice(0, 2))  # warm-up (first-call allocations)

        t0 = time.perf_counter()
        ids_naive, _ = rm.encode(pools)
        naive_scores = np.empty(len(ids_naive))
        for b in fixed_batches(len(ids_naive), args.batch_size):
            naive_scores[b] = rm._forward([ids_naive[i] for i in b])["rm"]
        t_naive = time.perf_counter() - t0

        t0 = time.perf_counter()
        out = rm(pools).table
        t_bucket = time.perf_counter() - t0

    lengths = np.array([len(x) for x in ids_naive])
    bucket_scores = np.array([c["scores"]["rm"] for r in out["candidates"].to_pylist() for c in r])
    n = len(lengths)
    result = {
        "candidates": n,
        "tokens_mean": float(lengths.mean()),
        "tokens_p50_p90_max": [
            int(np.percentile(lengths, 50)),
            int(np.percentile(lengths, 90)),
            int(lengths.max()),
        ],
        "truncated_share": float((lengths >= args.max_length).mean()),
        "naive": {
            "batch_rows": args.batch_size,
            "seconds": round(t_naive, 2),
            "cand_per_s": round(n / t_naive, 1),
            "padding_waste": round(padding_waste(lengths, fixed_batches(n, args.batch_size)), 3),
        },
        "bucketed": {
            "token_budget": budget,
            "seconds": round(t_bucket, 2),
            "cand_per_s": round(n / t_bucket, 1),
            "batches": len(plan_batches(lengths, budget)),
            "padding_waste": round(padding_waste(lengths, plan_batches(lengths, budget)), 3),
        },
        "speedup": round(t_naive / t_bucket, 2),
        "max_abs_score_diff": float(np.abs(naive_scores - bucket_scores).max()),
        "torch_threads": torch.get_num_threads(),
        "model": {"hidden": args.hidden, "layers": args.layers, "max_length": args.max_length},
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
