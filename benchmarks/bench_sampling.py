"""Sampling throughput: prefdata's ``Sample`` stage (transformers backend) against a plain
hand-written ``model.generate`` loop over the same prompts, batch size and token budget.

The model is a random-weight Llama built in-process (the tokenizer of ``prefdata.testing``,
hidden 256, 4 layers by default), large enough that generation dominates. Prompts are
AlpacaEval instructions from ``shared/data/alpaca_eval_pool.parquet``. Both sides run
interleaved ``--repeats`` times after a warm-up; medians and minima of wall time and of
process CPU time are compared (on a shared CPU box, CPU time with one torch thread is the
steadier measure; on a GPU, wall time is the one that counts). The overhead target is
prefdata's time <= 1.05x the plain loop's.

    .venv/bin/python benchmarks/bench_sampling.py                 # CPU default, < 2 min
    .venv/bin/python benchmarks/bench_sampling.py --device cuda --hidden 1024 --layers 24 \
        --prompts 512 --batch-size 64 --max-tokens 256             # GPU, ~0.3B parameters
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PREFDATA_SHARED_DATA", ROOT.parent / "shared" / "data"))


def build_model(root: Path, hidden: int, layers: int, heads: int, seed: int = 0) -> Path:
    import torch
    from transformers import LlamaForCausalLM

    from prefdata.testing import build_tokenizer, llama_config

    tok = build_tokenizer()
    cfg = llama_config(
        tok,
        hidden_size=hidden,
        intermediate_size=hidden * 8 // 3 // 64 * 64 or hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=4096,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).eval()
    model.generation_config.pad_token_id = tok.pad_token_id
    path = root / "bench-llama"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: random Llama, hidden {hidden}, {layers} layers, {n_params / 1e6:.1f}M params")
    return path


def load_prompts(n: int, max_chars: int) -> list[str]:
    """The first ``n`` distinct AlpacaEval instructions of at most ``max_chars`` characters."""
    table = pq.read_table(SHARED / "alpaca_eval_pool.parquet", columns=["instruction"])
    seen: dict[str, None] = {}
    for text in table["instruction"].to_pylist():
        if text and len(text) <= max_chars:
            seen.setdefault(text, None)
        if len(seen) == n:
            break
    return list(seen)


def plain_loop(model, tok, prompts, batch_size, max_tokens, temperature, top_p, device):
    """What a user writes by hand: template, pad left, generate, decode. Returns tokens."""
    import torch

    tokens = 0
    for start in range(0, len(prompts), batch_size):
        texts = [
            tok.apply_chat_template(
                [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
            )
            for p in prompts[start : start + batch_size]
        ]
        enc = tok(
            texts, add_special_tokens=False, padding=True, padding_side="left", return_tensors="pt"
        ).to(device)
        with torch.inference_mode():
            out = model.generate(
                **enc,
                do_sample=True,
                temperature=temperature,
                top_p=top_p,
                max_new_tokens=max_tokens,
                pad_token_id=tok.pad_token_id,
            )
        gen = out[:, enc["input_ids"].shape[1] :]
        # generated tokens: up to and including the first EOS, as the backend counts them
        is_eos = gen == tok.eos_token_id
        first = torch.where(is_eos.any(1), is_eos.int().argmax(1) + 1, gen.shape[1])
        tokens += int(first.sum())
        tok.batch_decode(gen, skip_special_tokens=True)
    return tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--max-chars", type=int, default=400)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--n", type=int, default=1, help="candidates per prompt (plain loop: repeats)")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--device", default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prefdata.generate import Sample
    from prefdata.ids import prompt_id
    from prefdata.schema import pool_schema

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    prompts = load_prompts(args.prompts, args.max_chars)
    print(
        f"prompts: {len(prompts)} AlpacaEval instructions (<= {args.max_chars} chars); "
        f"batch {args.batch_size}, max_new_tokens {args.max_tokens}, n {args.n}, "
        f"device {device}, torch threads {torch.get_num_threads()}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = build_model(Path(tmp), args.hidden, args.layers, args.heads)
        stage = Sample(
            model=str(path),
            n=args.n,
            temperature=args.temperature,
            top_p=args.top_p,
            max_tokens=args.max_tokens,
            seed=0,
            progress=False,
            options={"batch_size": args.batch_size, "device": device},
        )
        stage.setup()
        backend = stage.resources["backend"]
        stage.resources["__setup_done__"] = True
        # The plain loop gets the same weights, dtype and device, loaded its own way.
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=backend.dtype).to(device).eval()
        plain_prompts = [p for p in prompts for _ in range(args.n)]
        rows = [
            {
                "prompt_id": prompt_id(m),
                "prompt": m,
                "source": "alpaca_eval",
                "metadata": None,
                "candidates": [],
            }
            for m in ([{"role": "user", "content": p}] for p in prompts)
        ]
        pools = pa.Table.from_pylist(rows, schema=pool_schema())

        def run_ours() -> int:
            out = stage(pools)
            assert out.rejects.num_rows == 0, out.rejects["reason"].to_pylist()
            nums = out.table["candidates"].combine_chunks().flatten().field("num_tokens")
            return int(pa.compute.sum(nums).as_py())

        # The same loop over length-sorted prompts (the batches the backend forms), to tell
        # framework overhead apart from the padding that sorting saves.
        sorted_prompts = sorted(
            plain_prompts,
            key=lambda p: -len(backend.encode([{"role": "user", "content": p}], {})),
        )

        def run_plain(prompts=plain_prompts) -> int:
            return plain_loop(
                model,
                tok,
                prompts,
                args.batch_size,
                args.max_tokens,
                args.temperature,
                args.top_p,
                device,
            )

        def timed(fn):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            w0, c0 = time.perf_counter(), time.process_time()
            n_tok = fn()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            return time.perf_counter() - w0, time.process_time() - c0, n_tok

        small = pools.slice(0, min(4, pools.num_rows))  # warm-up both paths
        stage(small)
        plain_loop(model, tok, prompts[:4], args.batch_size, 4, 1.0, 1.0, device)
        sides = {
            "prefdata Sample": run_ours,
            "plain generate": run_plain,
            "plain, sorted": lambda: run_plain(sorted_prompts),
        }
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in sides}
        tokens: dict[str, int] = {}
        for _ in range(args.repeats):  # interleaved, so drifting machine load hits all
            for name, fn in sides.items():
                wall, cpu, tokens[name] = timed(fn)
                runs[name].append((wall, cpu))
    report(runs, tokens, len(prompts))


def report(runs: dict[str, list[tuple[float, float]]], tokens: dict[str, int], n_prompts: int):
    """Per side: median and min of wall and CPU seconds, prompts/s and tokens/s (median wall)."""
    stats = {}
    print(
        f"{'':17}{'wall med':>9}{'wall min':>9}{'cpu med':>9}{'cpu min':>9}"
        f"{'prompts/s':>10}{'tokens/s':>9}{'tokens':>7}"
    )
    for name, pairs in runs.items():
        wall = [w for w, _ in pairs]
        cpu = [c for _, c in pairs]
        st = (statistics.median(wall), min(wall), statistics.median(cpu), min(cpu))
        stats[name] = st
        print(
            f"{name:17}{st[0]:9.2f}{st[1]:9.2f}{st[2]:9.2f}{st[3]:9.2f}"
            f"{n_prompts / st[0]:10.1f}{tokens[name] / st[0]:9.0f}{tokens[name]:7d}"
        )
        print(f"{'':17}wall runs: " + " ".join(f"{w:.2f}" for w in wall))
    ours = stats["prefdata Sample"]
    labels = ("wall median", "wall min", "cpu median", "cpu min")
    for base in ("plain generate", "plain, sorted"):
        ratios = ", ".join(
            f"{k} {a / b:.3f}" for k, a, b in zip(labels, ours, stats[base], strict=True)
        )
        print(f"time ratio prefdata / {base} (target <= 1.05): {ratios}")


if __name__ == "__main__":
    main()
