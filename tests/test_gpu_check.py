"""benchmarks/gpu_check.sh: its dry run (every step that needs no GPU and no vLLM, on the CPU
with tiny models) in a subprocess, its refusal to run without a GPU, and its score check."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"

pytestmark = pytest.mark.slow

VLLM_INSTALLED = importlib.util.find_spec("vllm") is not None


def run_script(*args: str, **extra_env: str) -> subprocess.CompletedProcess:
    # the test's own interpreter: CI's python3 need not be the one with torch
    env = {**os.environ, "GPU_CHECK_PYTHON": sys.executable, "GPU_CHECK_TIMEOUT": "240"}
    env.update(extra_env)
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=300, env=env
    )


def load_module():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    pytest.importorskip("transformers")
    out = tmp_path_factory.mktemp("gpu_check")
    proc = run_script("--dry-run", "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout, json.loads((out / "gpu_check.json").read_text()), out


def test_dry_run_passes_its_checks(dry_run):
    stdout, report, _ = dry_run
    assert stdout.strip().splitlines()[-1].startswith("VERDICT: PASS (2/2 correctness checks")
    assert report["passed"] is True and report["dry_run"] is True
    assert report["device_dtype"] == "bfloat16" and report["reference"] == "cpu float32"
    checks = {c["name"]: c for c in report["checks"]}
    assert set(checks) == {"prefdata_vs_plain_scores", "device_vs_cpu_float32_scores"}
    sizes = report["sizes"]
    assert checks["prefdata_vs_plain_scores"]["rows"] == sizes["score_pools"] * sizes["per_prompt"]
    assert (
        checks["device_vs_cpu_float32_scores"]["rows"] == sizes["cpu_pools"] * sizes["per_prompt"]
    )
    for c in checks.values():
        # a pass that means something: within tolerance, and a text mix-up would not be
        assert c["passed"] and c["max_abs_diff"] <= c["tolerance"] < c["control"], c
    assert "bfloat16 vs on CPU float32" in checks["device_vs_cpu_float32_scores"]["note"]


def test_dry_run_reports_timings_and_versions(dry_run):
    stdout, report, out = dry_run
    env = report["environment"]
    assert env["device"] == "cpu" and "dry run" in env["device_name"]
    assert env["torch"] and env["transformers"] and env["python"]
    sizes = report["sizes"]
    for section, unit, work in (
        (report["sampling"]["transformers"], "tokens", None),
        (report["scoring"], "rows", sizes["score_pools"] * sizes["per_prompt"]),
    ):
        for side in ("prefdata", "plain"):
            assert section[side][unit] > 0 and section[side][f"{unit}_per_s"] > 0
            assert len(section[side]["seconds"]) == sizes["repeats"]
            if work is not None:
                assert section[side][unit] == work
        ratio = section["prefdata"][f"{unit}_per_s"] / section["plain"][f"{unit}_per_s"]
        assert section["rate_ratio"] == pytest.approx(ratio, rel=1e-2)
    # at most n x max_tokens tokens per prompt, the same bound on both sides
    cap = sizes["prompts"] * sizes["n"] * sizes["max_tokens"]
    assert report["sampling"]["transformers"]["prefdata"]["tokens"] <= cap
    assert "transformers sampling (prefdata Sample / plain generate)" in stdout
    md = (out / "gpu_check.md").read_text()
    assert "| transformers sampling |" in md and "| reward-model scoring |" in md
    assert md.count("| PASS |") == 2


def test_dry_run_says_vllm_was_not_measured(dry_run):
    stdout, report, out = dry_run
    assert report["vllm"]["available"] is False
    assert "vllm" not in report["sampling"]
    if VLLM_INSTALLED:
        assert "it needs a GPU" in report["vllm"]["note"]
    else:
        assert report["environment"]["vllm"] is None
        assert report["vllm"]["note"] == "vLLM not installed: measured the transformers path only"
    assert f"vLLM: {report['vllm']['note']}" in stdout
    assert report["vllm"]["note"] in stdout.strip().splitlines()[-1]
    assert (
        f"| vLLM sampling | - | - | - | {report['vllm']['note']} |"
        in (out / "gpu_check.md").read_text()
    )


def test_refuses_a_real_run_without_a_gpu(tmp_path):
    """No GPU visible (CUDA_VISIBLE_DEVICES empty hides one where there is one): a real run
    is refused with status 4 and a FAIL verdict, and writes nothing."""
    pytest.importorskip("torch")
    proc = run_script("--out", str(tmp_path), CUDA_VISIBLE_DEVICES="")
    assert proc.returncode == 4, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1].startswith("VERDICT: FAIL (no CUDA device here")
    assert not (tmp_path / "gpu_check.json").exists()


def test_score_check_fails_when_it_should():
    pytest.importorskip("pyarrow")
    compare = load_module().compare
    ref = np.array([1.0, -1.0, 0.5, 2.0, -0.3])
    assert compare("ok", "", ref + 0.01, ref).passed
    assert not compare("off", "", ref + 0.5, ref).passed
    assert not compare("mixed up", "", np.roll(ref, 1), ref).passed
    assert not compare("nan", "", np.where(ref > 1.5, np.nan, ref), ref).passed
    # texts the reference cannot tell apart: the check proves nothing, so it fails
    flat = np.full(5, 0.7)
    assert not compare("flat", "", flat, flat).passed
