"""TRL itself trains on our exports: DPOTrainer, RewardTrainer (with margin) and KTOTrainer,
two steps each on CPU with the tiny in-process Llama models (``tiny_models`` fixture).

The files are read back with ``datasets.load_dataset("parquet"/"json", ...)`` exactly as a
user would, then handed to the trainers. No fakes.
"""

from __future__ import annotations

import math
import os

import pyarrow as pa
import pytest

from prefdata.io.export import export
from prefdata.schema import PAIR_SCHEMA, UNPAIRED_SCHEMA

pytest.importorskip("trl")

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

_COMMON = dict(
    max_steps=2,
    per_device_train_batch_size=2,
    gradient_accumulation_steps=1,
    learning_rate=1e-3,
    report_to="none",
    bf16=False,
    fp16=False,
    use_cpu=True,
    save_strategy="no",
    logging_steps=1,
    dataloader_num_workers=0,
    disable_tqdm=True,
    seed=0,
)


def _pairs(n: int = 6) -> pa.Table:
    rows = []
    for i in range(n):
        prompt = [{"role": "user", "content": f"Give me tip {i} for staying productive."}]
        if i % 3 == 0:
            prompt = [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "What is the capital of France?"},
                {"role": "assistant", "content": "Paris."},
                {"role": "user", "content": f"And tip {i}?"},
            ]
        rows.append(
            {
                "prompt_id": f"p{i}",
                "prompt": prompt,
                "chosen": f"Sure! Here is a list: {i}. apples 2. bananas",
                "rejected": "I am sorry, but I cannot help with that request.",
                "margin": 0.5 + i / 10,
                "chosen_generator": "strong",
                "rejected_generator": "weak",
                "strategy": "best-worst",
            }
        )
    return pa.Table.from_pylist(rows, schema=PAIR_SCHEMA)


def _load(path, **kw):
    from datasets import load_dataset

    kind = "parquet" if str(path).endswith(".parquet") else "json"
    return load_dataset(kind, data_files=str(path), split="train", **kw)


def _losses(trainer) -> list[float]:
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


@pytest.fixture(scope="module")
def tokenizer(tiny_models):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_models["tokenizer"])


def test_dpo_trainer_trains_on_trl_dpo_export(tiny_models, tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    out = export(_pairs(), "trl-dpo", tmp_path / "dpo")
    assert out.rejects.num_rows == 0
    ds = _load(out[0], cache_dir=str(tmp_path / "cache"))
    assert ds.features["prompt"].feature["role"].dtype == "string"
    model = AutoModelForCausalLM.from_pretrained(tiny_models["causal"])
    args = DPOConfig(output_dir=str(tmp_path / "run"), max_length=128, **_COMMON)
    trainer = DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tokenizer)
    trainer.train()
    assert trainer.state.global_step == 2
    losses = _losses(trainer)
    assert losses and all(math.isfinite(x) for x in losses)


def test_reward_trainer_uses_margin_from_export(tiny_models, tokenizer, tmp_path):
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig, RewardTrainer

    out = export(_pairs(), "trl-reward", tmp_path / "rm")
    ds = _load(out[0], cache_dir=str(tmp_path / "cache"))
    assert ds.features["margin"].dtype == "float64"
    model = AutoModelForSequenceClassification.from_pretrained(tiny_models["reward"], num_labels=1)
    args = RewardConfig(output_dir=str(tmp_path / "run"), max_length=128, **_COMMON)
    trainer = RewardTrainer(model=model, args=args, train_dataset=ds, processing_class=tokenizer)
    # The margin must reach the loss: the collated batch carries it.
    batch = next(iter(trainer.get_train_dataloader()))
    assert "margin" in batch
    expected = {round(0.5 + i / 10, 5) for i in range(6)}
    assert {round(x, 5) for x in batch["margin"].tolist()} <= expected
    trainer.train()
    assert trainer.state.global_step == 2
    assert all(math.isfinite(x) for x in _losses(trainer))


def _unpaired() -> pa.Table:
    rows = []
    for i in range(6):
        rows.append(
            {
                "prompt_id": f"p{i}",
                "prompt": [{"role": "user", "content": f"Solve 12 * {i} and explain."}],
                "completion": f"12 * {i} = {12 * i}." if i % 2 == 0 else "The quick brown fox.",
                "label": i % 2 == 0,
            }
        )
    return pa.Table.from_pylist(rows, schema=UNPAIRED_SCHEMA)


@pytest.mark.parametrize("source", ["unpaired", "pairs"])
def test_kto_trainer_trains_on_trl_kto_export(tiny_models, tokenizer, tmp_path, source):
    from transformers import AutoModelForCausalLM
    from trl import KTOConfig, KTOTrainer

    table = _unpaired() if source == "unpaired" else _pairs(4)
    out = export(table, "trl-kto", tmp_path / "kto")
    ds = _load(out[0], cache_dir=str(tmp_path / "cache"))
    assert ds.features["label"].dtype == "bool"
    assert set(ds["label"]) == {True, False}
    model = AutoModelForCausalLM.from_pretrained(tiny_models["causal"])
    args = KTOConfig(output_dir=str(tmp_path / "run"), max_length=128, **_COMMON)
    trainer = KTOTrainer(model=model, args=args, train_dataset=ds, processing_class=tokenizer)
    trainer.train()
    assert trainer.state.global_step == 2
    assert all(math.isfinite(x) for x in _losses(trainer))
