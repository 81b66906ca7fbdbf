#!/usr/bin/env bash
# One GPU check of prefdata's model paths (benchmarks/gpu_check.py says what it measures).
#
#   benchmarks/gpu_check.sh [--out DIR] [--dry-run] [gpu_check.py options]
#
# Offline (nothing comes from the Hugging Face Hub: models are built in-process), and
# stopped after GPU_CHECK_TIMEOUT seconds (default 555, killed 15 s later if it lingers: 9.5
# minutes at most). The last line is the verdict: "VERDICT: PASS ..." or "VERDICT: FAIL ...".
# Exit status: 0 pass, 3 a check failed, 4 no GPU without --dry-run, 124 timed out, else an
# error (a traceback or usage message above).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
# GPU_CHECK_PYTHON if set (the test's interpreter), else the project's venv where there is
# one (this dev box), else the machine's python3 (the GPU image holds torch, transformers).
py="${GPU_CHECK_PYTHON:-}"
if [[ -z "$py" ]]; then
    if [[ -x "$root/.venv/bin/python" ]]; then py="$root/.venv/bin/python"; else py=python3; fi
fi

export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
limit="${GPU_CHECK_TIMEOUT:-555}"
# The script skips vLLM when too little of the guard is left for its engine to start.
export GPU_CHECK_DEADLINE=$(($(date +%s) + limit))

rc=0
# timeout signals the whole process group, vLLM's engine process included.
timeout --kill-after=15 "$limit" "$py" "$here/gpu_check.py" "$@" || rc=$?
if [[ $rc -eq 124 || $rc -eq 137 ]]; then
    echo "VERDICT: FAIL (timed out after ${limit}s; partial results in the --out folder)"
elif [[ $rc -ne 0 && $rc -ne 3 && $rc -ne 4 ]]; then
    echo "VERDICT: FAIL (gpu_check.py exited with status $rc)"
fi
exit "$rc"
