"""Shared fixtures: real tiny models, the shared public data, a local Ray."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Nothing in the tests may reach the Hugging Face Hub: there is no network here or in CI.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(
    os.environ.get("PREFDATA_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Tiny models run fastest on one thread; two threads spin-wait on a busy 2-core box."""
    try:
        import torch
    except ImportError:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


SHARED_FILES = ("alpaca_eval_pool.parquet", "hh_rlhf_harmless_test.jsonl.gz")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data; tests using it carry the ``shared_data`` marker. Where it is absent
    they skip with a visible reason; CI sets PREFDATA_REQUIRE_SHARED_DATA=1 to fail instead."""
    missing = [f for f in SHARED_FILES if not (SHARED_DATA / f).exists()]
    if missing:
        msg = f"shared data {missing} not found at {SHARED_DATA} (set PREFDATA_SHARED_DATA)"
        if os.environ.get("PREFDATA_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Tiny random-weight Llama models and a tokenizer trained in-process, saved to a temp
    folder: keys tokenizer, causal, reward, reward_multi; load with ``from_pretrained(path)``."""
    pytest.importorskip("transformers")
    from prefdata.testing import build_tiny_models

    return build_tiny_models(tmp_path_factory.mktemp("tiny-models"))
