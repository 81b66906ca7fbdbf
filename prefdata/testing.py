"""Tiny real models for tests and benchmarks, built in-process, and an oracle judge.

A byte-level BPE tokenizer trained on the spot (the ``tokenizers`` library) with a Jinja chat
template, and random-weight Llama models (causal LM and sequence classification), saved with
``save_pretrained`` so they load through the same ``from_pretrained(path)`` path as a Hub model.
Needs the ``models`` extra (torch, transformers).

Example (the ``tiny_models`` test fixture does this once per session)::

    paths = build_tiny_models(tmp_dir)          # keys: tokenizer, causal, reward, reward_multi
    AutoModelForCausalLM.from_pretrained(paths["causal"])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL_TOKENS = [
    "<pad>",
    "<s>",
    "</s>",
    "<unk>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|tool|>",
    "<|end|>",
]

# What the tokenizer is trained on; its words also make gpu_check's synthetic prompts.
CORPUS = [
    "Write a short poem about the sea and the sky.",
    "Explain how photosynthesis works in simple terms for a child.",
    "What is the capital of France? The capital of France is Paris.",
    "Give me three tips for staying productive while working from home.",
    "Translate 'good morning' into Spanish: buenos dias.",
    "Solve 12 * 7 and explain each step. 12 * 7 = 84.",
    "I am sorry, but I cannot help with that request.",
    "Sure! Here is a list: 1. apples 2. bananas 3. cherries.",
    "The quick brown fox jumps over the lazy dog 0123456789.",
    "def add(a, b):\n    return a + b  # Python code with {brackets} and [lists]",
]


# Prompts (a string is one user turn) and their responses for scorer tests: a short and a
# long prompt, a system turn, an empty response and a long repetitive one.
SCORER_PROMPTS = [
    "Write a short poem about the sea and the sky.",
    "Explain how photosynthesis works in simple terms for a child. " * 3,
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "12 * 7?"}],
]
SCORER_RESPONSES = [
    ["The sea is blue.", "Waves and clouds " * 12, ""],
    ["Plants eat light.", "Sure! Here is a list: 1. apples 2. bananas", "x"],
    ["84", "12 * 7 = 84. " * 20],
]


def build_tokenizer(vocab_size: int = 512):
    """A byte-level BPE ``PreTrainedTokenizerFast`` with a chat template; pad differs from EOS."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="<|end|>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=SPECIAL_TOKENS[4:],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def llama_config(tokenizer, **overrides):
    """The tiny Llama config of :func:`build_tiny_models` for ``tokenizer`` (hidden 32,
    2 layers, 2 heads of 16), with ``overrides`` (any ``LlamaConfig`` field).

    >>> llama_config(build_tokenizer(), hidden_size=128).head_dim
    64
    """
    from transformers import LlamaConfig

    cfg = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    cfg.update(overrides)
    return LlamaConfig(**cfg)


def build_tiny_models(root: str | Path, seed: int = 0, **config: Any) -> dict[str, Path]:
    """Save a tokenizer and three tiny random-weight Llama models under ``root``.

    Returns paths keyed ``tokenizer``, ``causal`` (LlamaForCausalLM), ``reward``
    (LlamaForSequenceClassification, one label) and ``reward_multi`` (five labels, for
    multi-objective scorers). Each model folder also holds the tokenizer. ``config``
    overrides :func:`llama_config`'s fields (vLLM's CPU attention, for one, needs heads
    of at least 32: ``hidden_size=128``).
    """
    import torch
    from transformers import LlamaForCausalLM, LlamaForSequenceClassification

    root = Path(root)
    tokenizer = build_tokenizer()
    paths = {"tokenizer": root / "tokenizer"}
    tokenizer.save_pretrained(paths["tokenizer"])
    builds = {
        "causal": (LlamaForCausalLM, {}),
        "reward": (LlamaForSequenceClassification, {"num_labels": 1}),
        "reward_multi": (LlamaForSequenceClassification, {"num_labels": 5}),
    }
    for name, (cls, extra) in builds.items():
        torch.manual_seed(seed)
        model = cls(llama_config(tokenizer, **{**config, **extra})).eval()
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id
        paths[name] = root / name
        model.save_pretrained(paths[name])
        tokenizer.save_pretrained(paths[name])
    return paths


class OracleJudge:
    """A chat backend standing in for an LLM judge at the model boundary, for tests and
    benchmarks of what a search does with a judge of known quality: it reads the two
    responses out of the pairwise judge prompt (``[Response A]`` ... ``[End of response
    A]``) and prefers the one with the higher ``utility`` (``[[C]]`` on a tie), turning a
    ``flip`` share of its answers around (chosen by the request's seed, so reruns agree).
    ``calls`` counts the conversations answered.

    >>> from prefdata.generate.base import GenerationConfig
    >>> judge = OracleJudge({"good": 1.0, "bad": 0.0})
    >>> ask = "[Response A]\\nbad\\n[End of response A]\\n[Response B]\\ngood\\n[End of response B]"
    >>> [result] = judge.chat([[{"role": "user", "content": ask}]], GenerationConfig(), [[0]])
    >>> result.completions[0].text
    '[[B]]'
    """

    name = "oracle"

    def __init__(self, utility: dict[str, float], flip: float = 0.0) -> None:
        self.utility, self.flip, self.calls = utility, flip, 0

    def chat(self, conversations, config, seeds):
        import re

        import numpy as np

        from prefdata.generate.base import ChatResult, Completion

        pattern = {
            side: re.compile(rf"\[Response {side}\]\n(.*?)\n\[End of response {side}\]", re.S)
            for side in "AB"
        }
        out = []
        for conv, s in zip(conversations, seeds, strict=True):
            self.calls += 1
            text = conv[-1]["content"]
            ua, ub = (self.utility[pattern[k].search(text).group(1)] for k in "AB")
            flipped = np.random.default_rng(s[0]).random() < self.flip
            verdict = "C" if ua == ub else ("A" if (ua > ub) != flipped else "B")
            out.append(ChatResult([Completion(f"[[{verdict}]]")]))
        return out
