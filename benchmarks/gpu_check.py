"""One GPU check for prefdata's model paths: throughput against plain loops, and correctness.

Run through ``benchmarks/gpu_check.sh`` (offline, with a time guard). On one GPU it:

1. samples with prefdata's ``Sample`` stage (transformers backend, bf16) and with a plain
   hand-written ``model.generate`` loop (``bench_sampling.plain_loop``) over the same prompts,
   batch size and token budget, the plain loop seeded with the run seed (``generate`` has
   one global generator, not one seed per candidate): tokens/s of each, and their ratio;
2. when vLLM imports: prefdata's ``Sample(backend="vllm")`` against raw ``LLM.chat`` on one
   shared engine, over the same prompts, the raw request of prompt i seeded with prefdata's
   seed of its candidate 0 (so the first candidates' texts can be compared too);
3. scores texts with prefdata's ``RewardModel`` stage (bf16, length-bucketed batches) and
   with a plain batch-1 loop: rows/s of each, and their ratio;
4. checks correctness: the prefdata scores equal the plain loop's (same device and dtype),
   and equal a float32 CPU reference on a subset (bf16 on the device).

Models are random-weight Llamas built in-process (``bench_sampling.build_model`` and
``bench_scoring.build_model``; the tokenizer of ``prefdata.testing``): by default hidden 1024
and 24 layers, about 0.3B parameters each, so GPU throughput means something. Nothing is
downloaded. Prompts and responses are synthetic and seeded (words of the test corpus).

Tolerance (bf16). bf16 keeps 8 significant bits (unit roundoff 2**-9, about 0.2 %); weights,
activations and each layer's output are rounded and the errors compound with depth. On CPU,
the same random reward models scored in bf16 and float32 differed by at most 2.4 % of the RMS
score at hidden 256 x 4 layers, 4.0 % at 512 x 8 and 4.2 % at 1024 x 24 (this check's GPU
size). The tolerance is 10 % of the RMS of the reference scores: about 2.4x that worst
observation. A check that cannot fail proves nothing, so each check also computes a control,
the largest change if every score were attached to its neighbour's text (measured at 100-160 %
of the RMS), and fails unless that control exceeds the tolerance.

``--dry-run`` runs every step that needs no GPU and no vLLM on the CPU with tiny sizes:
the "device" side is the CPU in bf16, compared with the CPU in float32.

    benchmarks/gpu_check.sh                      # one H100: about 5 minutes
    benchmarks/gpu_check.sh --dry-run            # this CPU box: tiny sizes, under a minute
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
# prefdata from this checkout (installed or not) and the bench_* helpers beside this file.
sys.path[:0] = [str(HERE.parent), str(HERE)]

from bench_sampling import build_model as build_causal  # noqa: E402
from bench_sampling import plain_loop  # noqa: E402
from bench_scoring import build_model as build_reward  # noqa: E402

BF16_RTOL = 0.1  # of the RMS of the reference scores; the module docstring says why
DEVICE_DTYPE = "bfloat16"
TEMPERATURE, TOP_P = 1.0, 0.95
MAX_POSITIONS = 4096
VLLM_MIN_SECONDS = 240  # engine start with compilation, two sides, warm-up: skip below this


@dataclass
class Sizes:
    """The sizes of one run: the GPU defaults, or the tiny ones of ``--dry-run``."""

    hidden: int = 1024
    layers: int = 24
    heads: int = 16
    prompts: int = 256
    n: int = 2
    max_tokens: int = 128
    batch_size: int = 128
    repeats: int = 2
    score_pools: int = 128
    per_prompt: int = 4
    cpu_pools: int = 8
    max_words: int = 300


# hidden 64: at 32 (head dim 16) attention is so flat that every text gets nearly the same
# score, and the control rightly fails the check (it could not tell texts apart).
DRY_SIZES = Sizes(
    hidden=64,
    layers=2,
    heads=2,
    prompts=6,
    n=2,
    max_tokens=6,
    batch_size=4,
    repeats=1,
    score_pools=4,
    per_prompt=2,
    cpu_pools=2,
    max_words=24,
)


@dataclass
class Timing:
    """Median wall seconds over the repeats, and the work done in one run."""

    seconds: list[float]
    work: int
    unit: str

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def rate(self) -> float:
        return self.work / max(self.median, 1e-9)

    def as_dict(self) -> dict[str, Any]:
        return {
            "seconds": [round(s, 4) for s in self.seconds],
            "median_s": round(self.median, 4),
            self.unit: self.work,
            f"{self.unit}_per_s": round(self.rate, 2),
        }


@dataclass
class Check:
    """A score comparison: it passes when every value is finite, the largest difference is
    within the tolerance, and the control (scores shifted by one text) is beyond it."""

    name: str
    note: str
    rows: int
    max_abs_diff: float
    tolerance: float
    control: float
    passed: bool = field(init=False)

    def __post_init__(self) -> None:
        self.passed = bool(
            np.isfinite(self.max_abs_diff) and self.max_abs_diff <= self.tolerance < self.control
        )


# -- setup -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, no vLLM")
    ap.add_argument("--out", type=Path, default=Path("gpu_check_out"), help="JSON + markdown")
    ap.add_argument("--seed", type=int, default=0)
    for name, default in asdict(Sizes()).items():  # each size can be overridden
        ap.add_argument(f"--{name.replace('_', '-')}", type=int, help=f"default {default}")
    return ap.parse_args(argv)


def pick_sizes(args: argparse.Namespace) -> Sizes:
    base = asdict(DRY_SIZES if args.dry_run else Sizes())
    return Sizes(
        **{k: v if getattr(args, k) is None else getattr(args, k) for k, v in base.items()}
    )


def pick_device(dry_run: bool):
    """cuda, or cpu in a dry run; None when a real run finds no GPU."""
    import torch

    if dry_run:
        return torch.device("cpu")
    return torch.device("cuda") if torch.cuda.is_available() else None


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment(device) -> dict[str, Any]:
    import torch
    import transformers

    import prefdata  # from this checkout: on the GPU machine it is not pip-installed

    name = "cpu (dry run: no GPU used)"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    return {
        "device": str(device),
        "device_name": name,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "vllm": package_version("vllm"),
        "prefdata": prefdata.__version__,
        "pyarrow": package_version("pyarrow"),
    }


def sync(device) -> None:
    import torch

    if device.type == "cuda":  # CUDA runs asynchronously: wait before reading the clock
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], int], device) -> tuple[float, int]:
    sync(device)
    t0 = time.perf_counter()
    work = fn()
    sync(device)
    return time.perf_counter() - t0, work


def interleaved(sides: dict[str, Callable[[], int]], repeats: int, device, unit: str):
    """Time each side ``repeats`` times, alternating, so drifting load hits all alike."""
    seconds: dict[str, list[float]] = {k: [] for k in sides}
    work: dict[str, int] = {}
    for _ in range(repeats):
        for name, fn in sides.items():
            s, work[name] = timed(fn, device)
            seconds[name].append(s)
    return {k: Timing(seconds[k], work[k], unit) for k in sides}


# -- synthetic data ----------------------------------------------------------------------------


def word_source(seed: int) -> Callable[[int], str]:
    """``text(k)``: k words of the test corpus (the tokenizer was trained on them), seeded."""
    from prefdata.testing import CORPUS

    words = sorted({w for line in CORPUS for w in line.split()})
    rng = np.random.default_rng(seed)
    return lambda k: " ".join(rng.choice(words, max(1, k)))


def synthetic_prompts(count: int, seed: int) -> list[str]:
    text = word_source(seed)
    rng = np.random.default_rng(seed + 1)
    return [f"Question {i}: {text(int(rng.integers(4, 40)))}" for i in range(count)]


def synthetic_responses(pools: int, per_prompt: int, max_words: int, seed: int):
    """Prompts and responses with long-tailed lengths (log-normal word counts, capped), so
    length bucketing has padding to save as it would on real responses."""
    text = word_source(seed + 2)
    rng = np.random.default_rng(seed + 3)
    prompts = synthetic_prompts(pools, seed)
    lengths = np.minimum(rng.lognormal(4.5, 0.8, (pools, per_prompt)), max_words).astype(int)
    return prompts, [[text(int(k)) for k in row] for row in lengths]


def empty_pools(prompts: list[str]):
    from prefdata.score import pools_from_texts

    return pools_from_texts(prompts, [[] for _ in prompts], source="gpu_check")


def flat_scores(table, name: str = "rm") -> np.ndarray:
    cands = table["candidates"].combine_chunks().flatten()
    return cands.field("scores").field(name).to_numpy(zero_copy_only=False).astype(np.float64)


def compare(name: str, note: str, got: np.ndarray, ref: np.ndarray) -> Check:
    tol = BF16_RTOL * float(np.sqrt(np.mean(ref**2)))
    control = float(np.abs(ref - np.roll(ref, 1)).max()) if len(ref) > 1 else 0.0
    return Check(name, note, len(ref), float(np.abs(got - ref).max()), tol, control)


# -- sampling ----------------------------------------------------------------------------------


def sample_stage(path: Path, sizes: Sizes, seed: int, backend: str, options: dict):
    from prefdata.generate import Sample

    return Sample(
        model=str(path),
        backend=backend,
        n=sizes.n,
        temperature=TEMPERATURE,
        top_p=TOP_P,
        max_tokens=sizes.max_tokens,
        seed=seed,
        dtype=DEVICE_DTYPE if backend == "transformers" else None,
        progress=False,
        options=options,
    )


def run_stage(stage, pools):
    """Run a ``Sample`` stage; its pools (every prompt must be served)."""
    out = stage(pools)
    assert out.rejects.num_rows == 0, out.rejects["reason"].to_pylist()
    return out.table


def sum_tokens(table) -> int:
    nums = table["candidates"].combine_chunks().flatten().field("num_tokens")
    return int(np.nansum(nums.to_numpy(zero_copy_only=False).astype(float)))


def transformers_sampling(path: Path, prompts: list[str], sizes: Sizes, seed: int, device):
    """prefdata ``Sample`` (transformers) against ``bench_sampling.plain_loop`` on one model."""
    import torch

    stage = sample_stage(
        path, sizes, seed, "transformers", {"batch_size": sizes.batch_size, "device": str(device)}
    )
    stage.ensure_setup()
    backend = stage.resources["backend"]
    pools = empty_pools(prompts)
    plain_prompts = [p for p in prompts for _ in range(sizes.n)]  # n candidates per prompt

    def plain(texts: list[str] = plain_prompts, max_tokens: int = sizes.max_tokens) -> int:
        torch.manual_seed(seed)  # generate draws from the one global generator
        return plain_loop(
            backend.model,
            backend.tokenizer,
            texts,
            sizes.batch_size,
            max_tokens,
            TEMPERATURE,
            TOP_P,
            device,
        )

    run_stage(stage, pools.slice(0, 2))  # warm-up: kernels, allocator, caches
    plain(plain_prompts[:4], 4)
    times = interleaved(
        {"prefdata": lambda: sum_tokens(run_stage(stage, pools)), "plain": plain},
        sizes.repeats,
        device,
        "tokens",
    )
    stage.resources.clear()  # drop the model before the next section
    return times


def vllm_sampling(path: Path, prompts: list[str], sizes: Sizes, seed: int, device):
    """prefdata ``Sample(backend="vllm")`` against raw ``LLM.chat``, one shared engine."""
    from vllm import LLM, SamplingParams

    from prefdata.generate import candidate_seed

    llm = LLM(
        model=str(path),
        dtype=DEVICE_DTYPE,
        seed=seed,
        gpu_memory_utilization=0.5,  # the transformers models may still hold some memory
        enable_prefix_caching=True,
    )
    stage = sample_stage(path, sizes, seed, "vllm", {"llm": llm})
    pools = empty_pools(prompts)
    # role and content only, as Sample sends them (the pool's message struct has more fields)
    convs = [stage.conversation(p) for p in pools["prompt"].to_pylist()]
    first_seeds = [candidate_seed(seed, pid, 0) for pid in pools["prompt_id"].to_pylist()]
    outputs: dict[str, Any] = {}

    def raw(k: int = len(convs)) -> int:
        params = [
            SamplingParams(
                n=sizes.n, seed=s, temperature=TEMPERATURE, top_p=TOP_P, max_tokens=sizes.max_tokens
            )
            for s in first_seeds[:k]
        ]
        outs = llm.chat(convs[:k], params, use_tqdm=False)
        outputs["raw"] = [o.outputs[0].text for o in outs]
        return sum(len(c.token_ids) for o in outs for c in o.outputs)

    def ours() -> int:
        table = run_stage(stage, pools)
        outputs["prefdata"] = [c[0]["response"] for c in table["candidates"].to_pylist()]
        return sum_tokens(table)

    run_stage(stage, pools.slice(0, 2))
    raw(2)
    times = interleaved({"prefdata": ours, "plain": raw}, sizes.repeats, device, "tokens")
    same = sum(a == b for a, b in zip(outputs["prefdata"], outputs["raw"], strict=True))
    return times, {"first_candidate_texts_identical": f"{same}/{len(convs)}"}


def vllm_plan(device) -> tuple[bool, str]:
    """Whether to run the vLLM comparison, and why not."""
    version = package_version("vllm")
    if version is None:
        return False, "vLLM not installed: measured the transformers path only"
    if device.type != "cuda":
        return False, f"vLLM {version} installed but not run: it needs a GPU (dry run)"
    try:
        import vllm  # noqa: F401
    except Exception as exc:  # a wheel built for another torch fails here, not at install
        return False, f"vLLM {version} installed but does not import: {exc!r}"
    return True, f"vLLM {version}"


def vllm_in_time(run: bool, note: str, deadline: float | None) -> tuple[bool, str]:
    """Skip vLLM when the time guard leaves too little for its engine to start: the
    transformers results are kept, rather than the whole run being killed."""
    left = None if deadline is None else deadline - time.time()
    if run and left is not None and left < VLLM_MIN_SECONDS:
        return False, f"{note} installed, not run: {left:.0f}s left of the time guard"
    return run, note


# -- scoring -----------------------------------------------------------------------------------


def plain_scores(model, tokenizer, table, device) -> np.ndarray:
    """What a user writes by hand: one text at a time, template, tokenise, forward."""
    import torch

    scores = []
    for prompt, cands in zip(
        table["prompt"].to_pylist(), table["candidates"].to_pylist(), strict=True
    ):
        for c in cands:
            msgs = [*prompt, {"role": "assistant", "content": c["response"]}]
            text = tokenizer.apply_chat_template(msgs, tokenize=False)
            # the template writes the BOS itself
            enc = tokenizer(text, add_special_tokens=False, return_tensors="pt").to(device)
            with torch.inference_mode():
                scores.append(float(model(**enc).logits[0, 0].float()))
    return np.array(scores)


def reward_scoring(path: Path, sizes: Sizes, seed: int, device):
    """prefdata ``RewardModel`` against a plain batch-1 loop; the scores of each side and of
    a float32 CPU reference on the first ``cpu_pools`` pools."""
    from prefdata.score import RewardModel, pools_from_texts

    prompts, responses = synthetic_responses(
        sizes.score_pools, sizes.per_prompt, sizes.max_words, seed
    )
    pools = pools_from_texts(prompts, responses, generator="synthetic")
    rm = RewardModel(str(path), device=str(device), dtype=DEVICE_DTYPE, progress=False)
    rm.ensure_setup()
    model, tok = rm.resources["model"], rm.resources["tokenizer"]
    got: dict[str, np.ndarray] = {}

    def ours() -> int:
        got["prefdata"] = flat_scores(rm(pools).table)
        return len(got["prefdata"])

    def plain() -> int:
        got["plain"] = plain_scores(model, tok, pools, device)
        return len(got["plain"])

    ids, _ = rm.encode(pools)  # token lengths, for the report
    rm(pools.slice(0, 1))  # warm-up
    plain_scores(model, tok, pools.slice(0, 1), device)
    times = interleaved({"prefdata": ours, "plain": plain}, sizes.repeats, device, "rows")
    rm.resources.clear()
    free_memory(device)
    subset = pools.slice(0, sizes.cpu_pools)
    ref = RewardModel(str(path), device="cpu", dtype="float32", progress=False)
    got["cpu_float32"] = flat_scores(ref(subset).table)
    return times, got, lengths_of(ids)


def lengths_of(ids: list[list[int]]) -> dict[str, int]:
    a = np.array([len(x) for x in ids])
    return {"mean": int(a.mean()), "p50": int(np.median(a)), "max": int(a.max())}


def score_checks(got: dict[str, np.ndarray], device) -> list[Check]:
    where = "GPU" if device.type == "cuda" else "CPU (dry run)"
    k = len(got["cpu_float32"])
    return [
        compare(
            "prefdata_vs_plain_scores",
            f"RewardModel (bucketed batches) vs batch-1 loop, both {where} {DEVICE_DTYPE}",
            got["prefdata"],
            got["plain"],
        ),
        compare(
            "device_vs_cpu_float32_scores",
            f"RewardModel on {where} {DEVICE_DTYPE} vs on CPU float32, first {k} texts",
            got["prefdata"][:k],
            got["cpu_float32"],
        ),
    ]


def free_memory(device) -> None:
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# -- report ------------------------------------------------------------------------------------


def ratio_row(label: str, unit: str, times: dict[str, Timing] | None, baseline: str, note: str):
    if times is None:
        return f"| {label} | - | - | - | {note} |"
    ours, base = times["prefdata"], times["plain"]
    return (
        f"| {label} | {ours.rate:,.1f} {unit}/s | {base.rate:,.1f} {unit}/s | "
        f"{ours.rate / base.rate:.3f} | {baseline}; {note} |"
    )


def markdown(report: dict[str, Any], times: dict[str, Any], checks: list[Check]) -> str:
    env = report["environment"]
    lines = [
        f"# gpu_check on {env['device_name']}",
        "",
        f"torch {env['torch']} (CUDA {env['torch_cuda']}), transformers {env['transformers']}, "
        f"vllm {env['vllm'] or 'not installed'}, prefdata {env['prefdata']}, "
        f"Python {env['python']}; models: {report['models']}",
        "",
        "| measurement | prefdata | baseline | ratio prefdata/baseline | baseline, notes |",
        "|---|---|---|---|---|",
        ratio_row(
            "transformers sampling",
            "tok",
            times.get("transformers"),
            "plain model.generate loop",
            f"{report['device_dtype']}, median of {report['sizes']['repeats']}",
        ),
        ratio_row(
            "vLLM sampling", "tok", times.get("vllm"), "raw LLM.chat", report["vllm"]["note"]
        ),
        ratio_row(
            "reward-model scoring",
            "rows",
            times.get("scoring"),
            "plain batch-1 loop",
            f"{report['device_dtype']}, tokens per text {report['scoring']['tokens']}",
        ),
        "",
        f"Tolerance: {BF16_RTOL:g} x the RMS of the reference scores (bf16; gpu_check.py's "
        "docstring says why). Control: the largest change if each score were attached to the "
        "next text; a check passes only when it exceeds the tolerance.",
        "",
        "| check | rows | max abs diff | tolerance | control | result |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {c.name}: {c.note} | {c.rows} | {c.max_abs_diff:.3g} | {c.tolerance:.3g} | "
        f"{c.control:.3g} | {'PASS' if c.passed else 'FAIL'} |"
        for c in checks
    ]
    return "\n".join(lines) + "\n"


def save(out: Path, report: dict[str, Any], md: str | None = None) -> None:
    """Written after each section, so a run stopped by the time guard leaves what it had."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    if md is not None:
        (out / "gpu_check.md").write_text(md)


def deadline_from_env() -> float | None:
    value = os.environ.get("GPU_CHECK_DEADLINE")  # epoch seconds, set by gpu_check.sh
    return float(value) if value else None


def main(argv: list[str] | None = None) -> int:
    t_start = time.perf_counter()
    args = parse_args(argv)
    sizes = pick_sizes(args)
    device = pick_device(args.dry_run)
    if device is None:
        print("VERDICT: FAIL (no CUDA device here; use --dry-run on a machine without a GPU)")
        return 4
    env = environment(device)
    run_vllm, vllm_note = vllm_plan(device)
    print(
        f"device: {env['device_name']} | torch {env['torch']} (CUDA {env['torch_cuda']}) | "
        f"transformers {env['transformers']} | vllm {env['vllm'] or 'not installed'}"
    )
    print(f"vLLM: {vllm_note}")
    print(f"sizes: {asdict(sizes)}")
    report: dict[str, Any] = {
        "dry_run": args.dry_run,
        "environment": env,
        "device_dtype": DEVICE_DTYPE,
        "reference": "cpu float32",
        "sizes": asdict(sizes),
        "vllm": {"available": run_vllm, "note": vllm_note},
        "sampling": {},
        "scoring": {},
        "checks": [],
    }
    times: dict[str, Any] = {}
    prompts = synthetic_prompts(sizes.prompts, args.seed)
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        causal = build_causal(Path(tmp), sizes.hidden, sizes.layers, sizes.heads, args.seed)
        reward = build_reward(Path(tmp) / "rm", sizes.hidden, sizes.layers, MAX_POSITIONS)
        report["models"] = f"random Llama, hidden {sizes.hidden}, {sizes.layers} layers"

        times["transformers"] = transformers_sampling(causal, prompts, sizes, args.seed, device)
        report["sampling"]["transformers"] = summary(times["transformers"])
        print_ratio(
            "transformers sampling (prefdata Sample / plain generate)", times["transformers"]
        )
        free_memory(device)
        save(args.out, report)

        times["scoring"], scores, tokens = reward_scoring(reward, sizes, args.seed, device)
        report["scoring"] = {**summary(times["scoring"]), "tokens": tokens}
        print_ratio("reward-model scoring (prefdata RewardModel / plain batch-1)", times["scoring"])
        checks = score_checks(scores, device)
        report["checks"] = [asdict(c) for c in checks]
        free_memory(device)  # before vLLM takes its share of the card
        save(args.out, report)

        run_vllm, vllm_note = vllm_in_time(run_vllm, vllm_note, deadline_from_env())
        report["vllm"] = {"available": run_vllm, "note": vllm_note}

        if run_vllm:
            times["vllm"], extra = vllm_sampling(causal, prompts, sizes, args.seed, device)
            report["sampling"]["vllm"] = {**summary(times["vllm"]), **extra}
            print_ratio("vLLM sampling (prefdata Sample / raw LLM.chat)", times["vllm"])
            print(
                f"  first candidates' texts identical: {extra['first_candidate_texts_identical']}"
            )
    report["passed"] = all(c.passed for c in checks)
    report["wall_seconds"] = round(time.perf_counter() - t_start, 1)
    md = markdown(report, times, checks)
    save(args.out, report, md)
    print(md)
    print(f"wrote {args.out / 'gpu_check.json'} and {args.out / 'gpu_check.md'}")
    verdict = "PASS" if report["passed"] else "FAIL"
    failed = [c.name for c in checks if not c.passed]
    print(
        f"VERDICT: {verdict} ({len(checks) - len(failed)}/{len(checks)} correctness checks"
        f"{'; failed: ' + ', '.join(failed) if failed else ''}; {vllm_note}; "
        f"{report['wall_seconds']}s)"
    )
    return 0 if report["passed"] else 3  # not 1: that is Python's status for a crash


def summary(times: dict[str, Timing]) -> dict[str, Any]:
    ours, base = times["prefdata"], times["plain"]
    return {
        "prefdata": ours.as_dict(),
        "plain": base.as_dict(),
        "rate_ratio": round(ours.rate / base.rate, 4),
    }


def print_ratio(label: str, times: dict[str, Timing]) -> None:
    ours, base = times["prefdata"], times["plain"]
    print(
        f"{label}: {ours.rate:,.1f} vs {base.rate:,.1f} {ours.unit}/s, "
        f"ratio {ours.rate / base.rate:.3f} (median of {len(ours.seconds)})"
    )


if __name__ == "__main__":
    sys.exit(main())
