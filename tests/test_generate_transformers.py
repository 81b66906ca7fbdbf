"""TransformersBackend: real ``generate`` on the tiny random Llama (CPU)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from prefdata.generate.base import ChatBackend, GenerationConfig  # noqa: E402
from prefdata.generate.transformers_backend import (  # noqa: E402
    SeededSampler,
    TransformersBackend,
    truncate_at_stop,
)

HI = [{"role": "user", "content": "Hi there"}]
POEM = [{"role": "user", "content": "Write a short poem about the sea and the sky, please."}]
CODE = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "def add(a, b): explain this Python code"},
]


@pytest.fixture(scope="module")
def backend(tiny_models):
    return TransformersBackend(tiny_models["causal"], batch_size=4)


def test_is_a_chat_backend_on_cpu_fp32(backend):
    assert isinstance(backend, ChatBackend)
    assert backend.device.type == "cpu" and backend.model.dtype == torch.float32
    assert backend.max_model_len == 512  # the tiny config's max_position_embeddings


def test_no_double_bos(backend):
    ids = backend.encode(HI, {})
    assert ids[0] == backend.tokenizer.bos_token_id
    assert ids[1] != backend.tokenizer.bos_token_id


def test_same_seed_same_candidates_different_seed_different(backend):
    cfg = GenerationConfig(n=3, max_tokens=24, temperature=1.0)
    a = backend.chat([HI, POEM], cfg, [[1, 2, 3], [4, 5, 6]])
    b = backend.chat([HI, POEM], cfg, [[1, 2, 3], [4, 5, 6]])
    assert a == b
    texts = [c.text for c in a[0].completions]
    assert len(set(texts)) == 3  # three seeds, three different samples
    c = backend.chat([HI], cfg, [[7, 8, 9]])
    assert [x.text for x in c[0].completions] != texts
    assert [x.seed for x in a[1].completions] == [4, 5, 6]
    for res in a:
        for comp in res.completions:
            assert comp.finish_reason in ("stop", "length")
            assert 1 <= comp.num_tokens <= 24
            if comp.finish_reason == "length":
                assert comp.num_tokens == 24


def test_seed_reproduces_whatever_the_batch(backend, tiny_models):
    """A candidate's text depends on its seed, not on its batch neighbours or order."""
    cfg = GenerationConfig(n=1, max_tokens=20)
    alone = backend.chat([POEM], cfg, [[11]])[0].completions[0]
    mixed = backend.chat([HI, CODE, POEM], cfg, [[1], [2], [11]])[2].completions[0]
    other_batch = TransformersBackend(tiny_models["causal"], batch_size=1)
    single = other_batch.chat([CODE, POEM], cfg, [[5], [11]])[1].completions[0]
    assert alone == mixed == single


def test_greedy_ignores_seed(backend):
    cfg = GenerationConfig(n=2, max_tokens=12, temperature=0.0)
    [res] = backend.chat([HI], cfg, [[1, 2]])
    assert res.completions[0].text == res.completions[1].text


def test_stop_strings_truncate_and_finish_stop(backend):
    cfg = GenerationConfig(n=4, max_tokens=40)
    [free] = backend.chat([POEM], cfg, [[21, 22, 23, 24]])
    # Choose a stop string that occurs inside a free-running sample, after its start.
    text = next(c.text for c in free.completions if len(c.text.strip()) > 6)
    stop = text.strip()[3:5]
    [cut] = backend.chat(
        [POEM], GenerationConfig(n=4, max_tokens=40, stop=(stop,)), [[21, 22, 23, 24]]
    )
    assert sum(stop in c.text for c in free.completions) >= 1
    for before, after in zip(free.completions, cut.completions, strict=True):
        assert stop not in after.text
        if stop in before.text:
            assert after.finish_reason == "stop"
            assert after.text == before.text[: before.text.index(stop)]
            assert after.num_tokens < before.num_tokens
        else:
            assert after == before


def test_eos_stops_with_reason_stop(backend):
    """Make EOS the only allowed token after the first step: generation stops there."""
    cfg = GenerationConfig(n=1, max_tokens=30, temperature=0.0)
    eos = int(backend.eos_ids[0])
    bias = torch.full((len(backend.tokenizer),), -1e9)
    bias[eos] = 0.0

    original = backend.model.lm_head.bias
    backend.model.lm_head.bias = torch.nn.Parameter(bias)
    try:
        [res] = backend.chat([HI], cfg, [[1]])
    finally:
        backend.model.lm_head.bias = original
    comp = res.completions[0]
    assert comp.finish_reason == "stop" and comp.num_tokens == 1 and comp.text == ""


def test_too_long_prompt_is_an_error_not_a_crash(backend):
    long = [{"role": "user", "content": "sea sky " * 400}]
    cfg = GenerationConfig(n=2, max_tokens=8)
    ok, bad = backend.chat([HI, long], cfg, [[1, 2], [3, 4]])
    assert ok.error is None and len(ok.completions) == 2
    assert bad.completions == [] and "context is 512 tokens" in bad.error


def test_rows_near_the_context_stop_at_its_end(tiny_models):
    small = TransformersBackend(tiny_models["causal"], max_model_len=40)
    n_prompt = len(small.encode(POEM, {}))
    [res] = small.chat([POEM], GenerationConfig(n=1, max_tokens=100), [[3]])
    comp = res.completions[0]
    if comp.finish_reason == "length":
        assert comp.num_tokens == 40 - n_prompt
    else:
        assert comp.num_tokens < 40 - n_prompt


def test_seeded_sampler_matches_the_softmax():
    """Gumbel-max with hashed noise: empirical frequencies match softmax(logits / T)."""
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])
    rows = 20000
    for temperature in (1.0, 0.5):
        s = SeededSampler(range(rows), temperature=temperature, top_p=1.0, prompt_len=0)
        picks = s(torch.zeros(rows, 3, dtype=torch.long), logits.repeat(rows, 1)).argmax(-1)
        freq = torch.bincount(picks, minlength=4).float() / rows
        expected = (logits / temperature).softmax(-1)
        assert torch.allclose(freq, expected, atol=0.015), (freq, expected)


def test_seeded_sampler_top_p_keeps_the_nucleus():
    logits = torch.tensor([3.0, 2.0, 0.0, -1.0])  # probs ~ .71 .26 .04 .01
    rows = 5000
    s = SeededSampler(range(rows), temperature=1.0, top_p=0.9, prompt_len=0)
    picks = s(torch.zeros(rows, 1, dtype=torch.long), logits.repeat(rows, 1)).argmax(-1)
    assert set(picks.tolist()) == {0, 1}
    p = logits[:2].softmax(-1)[0]
    assert abs((picks == 0).float().mean() - p) < 0.03


def test_seeded_sampler_draws_per_step_and_per_seed():
    s = SeededSampler([5, 5, 6], temperature=1.0, top_p=1.0, prompt_len=0)
    picks = torch.stack(
        [s(torch.zeros(3, t, dtype=torch.long), torch.zeros(3, 64)).argmax(-1) for t in range(8)]
    )
    assert torch.equal(picks[:, 0], picks[:, 1])  # same seed, same draws
    assert len(set(picks[:, 0].tolist())) > 1  # new draws every step
    assert not torch.equal(picks[:, 0], picks[:, 2])


def test_seeded_sampler_never_picks_a_masked_token():
    logits = torch.full((2000, 10), float("-inf"))
    logits[:, 3] = 0.0
    logits[:, 7] = 1.0
    s = SeededSampler(range(2000), temperature=0.7, top_p=1.0, prompt_len=0)
    picks = s(torch.zeros(2000, 1, dtype=torch.long), logits).argmax(-1)
    assert set(picks.tolist()) == {3, 7}


def test_truncate_at_stop_takes_the_earliest():
    assert truncate_at_stop("a END b STOP", ["STOP", "END"]) == ("a ", True)
    assert truncate_at_stop("abc", ["", "zz"]) == ("abc", False)
