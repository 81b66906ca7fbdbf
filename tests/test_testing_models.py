"""The tiny in-process models load through from_pretrained and run for real."""

import pytest

torch = pytest.importorskip("torch")


def test_tiny_models_load_and_run(tiny_models):
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    tok = AutoTokenizer.from_pretrained(tiny_models["causal"])
    assert tok.pad_token_id != tok.eos_token_id
    text = tok.apply_chat_template(
        [{"role": "user", "content": "Write a poem"}], tokenize=False, add_generation_prompt=True
    )
    assert text.startswith("<s><|user|>") and text.endswith("<|assistant|>\n")
    ids = tok(text, return_tensors="pt", add_special_tokens=False)
    lm = AutoModelForCausalLM.from_pretrained(tiny_models["causal"])
    out = lm.generate(**ids, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]

    rm = AutoModelForSequenceClassification.from_pretrained(tiny_models["reward"])
    assert rm.config.pad_token_id == tok.pad_token_id
    logits = rm(**ids).logits
    assert logits.shape == (1, 1) and torch.isfinite(logits).all()
    multi = AutoModelForSequenceClassification.from_pretrained(tiny_models["reward_multi"])
    assert multi(**ids).logits.shape == (1, 5)
