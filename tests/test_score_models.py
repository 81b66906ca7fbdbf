"""Reward models, log-probs and CDR on the tiny in-process Llama models (real transformers).

vLLM is not in the dev venv (it pins its own torch; the real engine runs in
``tests/test_vllm_cpu.py`` on vLLM's CPU build): here its request builders and output mappers
are tested against stand-in objects shaped like vLLM's documented outputs
(ClassificationRequestOutput.outputs.probs; RequestOutput.prompt_token_ids/prompt_logprobs).
"""

from types import SimpleNamespace as NS

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from prefdata.score import DensityRatio, LogProb, RewardModel, pools_from_texts  # noqa: E402
from prefdata.score.batching import chat_token_ids, plan_batches  # noqa: E402
from prefdata.score.logprob import (  # noqa: E402
    response_token_ids,
    vllm_logprob_requests,
    vllm_prompt_logprob_scores,
)
from prefdata.score.reward_model import (  # noqa: E402
    map_reward_outputs,
    vllm_classify_requests,
    vllm_classify_scores,
)
from prefdata.testing import SCORER_PROMPTS as PROMPTS  # noqa: E402
from prefdata.testing import SCORER_RESPONSES as RESPONSES  # noqa: E402


@pytest.fixture(scope="module")
def pools():
    return pools_from_texts(PROMPTS, RESPONSES)


def flat(table, field):
    return np.array(
        [
            np.nan if c["scores"].get(field) is None else c["scores"][field]
            for row in table["candidates"].to_pylist()
            for c in row
        ]
    )


def test_bucketed_equals_batch_size_one(tiny_models, pools):
    bucketed = RewardModel(str(tiny_models["reward"]), token_budget=256)
    single = RewardModel(str(tiny_models["reward"]), token_budget=1)
    a = flat(bucketed(pools).table, "rm")
    b = flat(single(pools).table, "rm")
    assert max(bucketed.resources["batch_sizes"]) > 1
    assert set(single.resources["batch_sizes"]) == {1}
    assert np.isfinite(a).all() and np.ptp(a) > 0
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # Deterministic: a rerun gives identical floats.
    np.testing.assert_array_equal(a, flat(bucketed(pools).table, "rm"))


def test_plan_batches_respects_budget():
    lengths = np.random.default_rng(0).integers(1, 300, 500)
    batches = plan_batches(lengths, 1024)
    assert sorted(i for b in batches for i in b) == list(range(500))
    for b in batches:
        assert len(b) == 1 or len(b) * lengths[b].max() <= 1024


def test_no_double_bos_and_pad_differs_from_eos(tiny_models, pools):
    rm = RewardModel(str(tiny_models["reward"]))
    rm.setup()
    tok = rm.resources["tokenizer"]
    ids = chat_token_ids(tok, [[{"role": "user", "content": "Hi"}]], ["Hello"])[0]
    assert ids[0] == tok.bos_token_id and ids[1] != tok.bos_token_id
    assert ids.count(tok.bos_token_id) == 1 and ids[-2] == tok.eos_token_id
    assert rm.resources["model"].config.pad_token_id == tok.pad_token_id != tok.eos_token_id


def test_pad_equal_to_eos_is_replaced(tiny_models, pools, tmp_path):
    """A tokenizer whose pad is its EOS: the scorer pads with another id, so the EOS that ends
    the template is still read, and scores match the properly configured model."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_models["reward"])
    tok.pad_token = tok.eos_token
    model = AutoModelForSequenceClassification.from_pretrained(tiny_models["reward"])
    model.config.pad_token_id = tok.eos_token_id
    tok.save_pretrained(tmp_path)
    model.save_pretrained(tmp_path)
    rm = RewardModel(str(tmp_path), token_budget=512)
    got = flat(rm(pools).table, "rm")
    assert rm.resources["pad_id"] not in (tok.eos_token_id, None)
    ref = flat(RewardModel(str(tiny_models["reward"]), token_budget=1)(pools).table, "rm")
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_truncation_sets_flag(tiny_models, pools):
    out = RewardModel(str(tiny_models["reward"]), max_length=40)(pools).table
    cands = [c for row in out["candidates"].to_pylist() for c in row]
    lengths = [
        len(x)
        for x in chat_token_ids(
            RewardModel(str(tiny_models["reward"])).resources.get("tokenizer")
            or __import__("transformers").AutoTokenizer.from_pretrained(tiny_models["reward"]),
            [p for p, rs in zip(pools["prompt"].to_pylist(), RESPONSES, strict=True) for _ in rs],
            [r for rs in RESPONSES for r in rs],
        )
    ]
    assert [("rm_truncated" in c["flags"]) for c in cands] == [n > 40 for n in lengths]
    assert any(n > 40 for n in lengths) and any(n <= 40 for n in lengths)
    assert all(c["scores"]["rm"] is not None for c in cands)


def test_oom_halves_the_batch(tiny_models, pools):
    """CUDA is absent here, so the out-of-memory error is raised at the boundary: batches of
    more than two rows fail the way ``torch.OutOfMemoryError`` does on a GPU."""
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class SmallGpu(RewardModel):
        def _forward(self, batch):
            if len(batch) > 2:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return super()._forward(batch)

    rm = SmallGpu(str(tiny_models["reward"]), token_budget=4096)
    got = flat(rm(pools).table, "rm")
    assert rm.resources["oom_retries"] > 0 and max(rm.resources["batch_sizes"]) <= 2
    ref = flat(RewardModel(str(tiny_models["reward"]), token_budget=1)(pools).table, "rm")
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_multi_head_objectives(tiny_models, pools):
    objs = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
    rm = RewardModel(
        str(tiny_models["reward_multi"]), name="armo", objectives=objs, token_budget=300
    )
    out = rm(pools).table
    fields = [f"armo.{o}" for o in objs]
    assert rm.provided_columns() == tuple(f"scores.{f}" for f in fields)
    mat = np.stack([flat(out, f) for f in fields], axis=1)
    assert np.isfinite(mat).all()
    # Column i of the head is objective i: compare with the model run directly, one by one.
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_models["reward_multi"])
    model = AutoModelForSequenceClassification.from_pretrained(tiny_models["reward_multi"])
    prompts = [p for p, rs in zip(pools["prompt"].to_pylist(), RESPONSES, strict=True) for _ in rs]
    ids = chat_token_ids(tok, prompts, [r for rs in RESPONSES for r in rs])
    with torch.inference_mode():
        direct = np.stack([model(input_ids=torch.tensor([x])).logits[0].numpy() for x in ids])
    np.testing.assert_allclose(mat, direct, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="objectives has 2 names"):
        RewardModel(str(tiny_models["reward_multi"]), objectives=("a", "b"))(pools)


def test_armo_style_output_gives_objectives_and_aggregate(tiny_models):
    """ArmoRM's remote-code head returns ``rewards`` (per objective) and ``score``; the mapping
    is checked on such an output built from the tiny multi-head model's real logits."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import ModelOutput

    model = AutoModelForSequenceClassification.from_pretrained(tiny_models["reward_multi"])
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([[1, 5, 9, 12], [1, 7, 7, 8]])).logits
    gate = torch.softmax(torch.tensor([0.1, 0.2, 0.3, 0.2, 0.2]), 0)
    out = ModelOutput(rewards=logits, score=(logits * gate).sum(-1), logits=(logits * gate).sum(-1))
    got = map_reward_outputs(out, "armo", ["a", "b", "c", "d", "e"], aggregate=True)
    assert sorted(got) == ["armo", "armo.a", "armo.b", "armo.c", "armo.d", "armo.e"]
    # the aggregate is written only when declared (score_fields must name every field)
    assert "armo" not in map_reward_outputs(out, "armo", ["a", "b", "c", "d", "e"])
    with pytest.raises(ValueError, match="no score"):
        map_reward_outputs(NS(logits=logits), "m", aggregate=True)
    np.testing.assert_allclose(got["armo.c"], logits[:, 2].numpy())
    np.testing.assert_allclose(got["armo"], (logits * gate).sum(-1).numpy(), rtol=1e-6)
    unnamed = map_reward_outputs(NS(logits=logits), "m")
    assert sorted(unnamed) == [f"m.{i}" for i in range(5)]


def test_vllm_classify_mapping(tiny_models):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_models["reward"])
    reqs, cut = vllm_classify_requests(
        tok, [[{"role": "user", "content": "Hi"}]] * 2, ["Hello", "long " * 80], max_length=32
    )
    assert reqs[0]["prompt_token_ids"][0] == tok.bos_token_id
    assert reqs[0]["prompt_token_ids"][1] != tok.bos_token_id
    assert cut == [False, True] and len(reqs[1]["prompt_token_ids"]) == 32
    outs = [NS(outputs=NS(probs=[0.25])), NS(outputs=NS(probs=[-3.0]))]
    np.testing.assert_array_equal(vllm_classify_scores(outs, ["rm"])["rm"], [0.25, -3.0])
    with pytest.raises(ValueError, match="differing widths"):
        vllm_classify_scores([NS(outputs=NS(probs=[1.0])), NS(outputs=NS(probs=[1.0, 2.0]))], ["m"])
    # a labelled two-column head is named from its config, as RewardModel names it
    two = [NS(outputs=NS(probs=[1.0, 2.0]))]
    got = vllm_classify_scores(two, ["rm.helpful", "rm.safe"])
    assert {k: v.tolist() for k, v in got.items()} == {"rm.helpful": [1.0], "rm.safe": [2.0]}
    with pytest.raises(ValueError, match="2 values per candidate"):
        vllm_classify_scores(two, ["rm"])
    assert vllm_classify_scores([], ["rm.a", "rm.b"])["rm.b"].size == 0


def _manual_logprob(model, tok, prompt, response):
    pre = tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    full = tok.apply_chat_template(
        [*prompt, {"role": "assistant", "content": response}], tokenize=False
    )
    p = tok(pre, add_special_tokens=False)["input_ids"]
    ids = p + tok(full[len(pre) :], add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        lp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), -1)
    toks = [lp[t - 1, ids[t]].item() for t in range(len(p), len(ids))]
    return sum(toks), len(toks)


def test_logprob_matches_direct_computation(tiny_models, pools):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lp = LogProb(str(tiny_models["causal"]), name="ref", token_budget=300)
    out = lp(pools).table
    sums, means = flat(out, "ref.sum"), flat(out, "ref.mean")
    tok = AutoTokenizer.from_pretrained(tiny_models["causal"])
    model = AutoModelForCausalLM.from_pretrained(tiny_models["causal"])
    prompts = [p for p, rs in zip(pools["prompt"].to_pylist(), RESPONSES, strict=True) for _ in rs]
    manual = [
        _manual_logprob(model, tok, p, r)
        for p, r in zip(prompts, [r for rs in RESPONSES for r in rs], strict=True)
    ]
    np.testing.assert_allclose(sums, [m[0] for m in manual], rtol=1e-4)
    np.testing.assert_allclose(means, [m[0] / m[1] for m in manual], rtol=1e-4)
    assert (sums < 0).all()
    single = flat(
        LogProb(str(tiny_models["causal"]), name="ref", token_budget=1)(pools).table, "ref.sum"
    )
    np.testing.assert_allclose(sums, single, rtol=1e-5)


def test_density_ratio_is_strong_minus_weak(tiny_models, pools, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # A "weak" model: the tiny causal model with different random weights.
    from prefdata.testing import llama_config

    tok = AutoTokenizer.from_pretrained(tiny_models["causal"])
    torch.manual_seed(1)
    weak = AutoModelForCausalLM.from_config(llama_config(tok))
    weak.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    cdr = DensityRatio(str(tiny_models["causal"]), str(tmp_path), keep_components=True)
    out = cdr(pools).table
    s = flat(LogProb(str(tiny_models["causal"]))(pools).table, "logp.sum")
    w = flat(LogProb(str(tmp_path))(pools).table, "logp.sum")
    np.testing.assert_allclose(flat(out, "cdr"), s - w, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(flat(out, "cdr.strong"), s, rtol=1e-6)
    assert np.abs(s - w).max() > 0
    prov = cdr.provenance()
    assert prov["strong"]["model"] == str(tiny_models["causal"]) and prov["fields"][0] == "cdr"


def test_vllm_prompt_logprobs_mapping(tiny_models):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_models["causal"])
    pairs = response_token_ids(tok, [[{"role": "user", "content": "Hi"}]], ["Hello there"])
    reqs, starts = vllm_logprob_requests(pairs)
    ids = reqs[0]["prompt_token_ids"]
    # vLLM's RequestOutput: entry 0 is None; entry t maps ids[t] (and top-k others) to Logprob.
    lps = [None] + [
        {ids[t]: NS(logprob=-0.1 * t, rank=1), 0: NS(logprob=-9.0, rank=2)}
        for t in range(1, len(ids))
    ]
    sums, counts = vllm_prompt_logprob_scores(
        [NS(prompt_token_ids=ids, prompt_logprobs=lps)], starts
    )
    expect = [-0.1 * t for t in range(starts[0], len(ids))]
    np.testing.assert_allclose(sums, [sum(expect)])
    assert counts[0] == len(ids) - starts[0] > 1
    lps[-1] = {0: NS(logprob=-1.0)}
    with pytest.raises(ValueError, match="no prompt logprob"):
        vllm_prompt_logprob_scores([NS(prompt_token_ids=ids, prompt_logprobs=lps)], starts)


def test_declared_score_fields_are_the_written_ones(tiny_models, pools):
    """A multi-head model without objectives declares (from its config, before loading any
    weight) exactly the fields it writes, so a plan naming another score fails at check."""
    from prefdata.construct import Pairs
    from prefdata.pipeline import MissingColumnsError, Pipeline

    rm = RewardModel(str(tiny_models["reward_multi"]), token_budget=300)
    declared = rm.score_fields()
    assert len(declared) == 5 and all(f.startswith("rm.") for f in declared)
    written = set(
        rm(pools).table.schema.field("candidates").type.value_type.field("scores").type.names
    )
    assert written == set(declared)
    with pytest.raises(MissingColumnsError, match="scores.rm"):
        Pipeline([RewardModel(str(tiny_models["reward_multi"])), Pairs(score="rm")]).check(
            pools.schema
        )
    agg = RewardModel(str(tiny_models["reward"]), name="armo", objectives=("a",), aggregate=True)
    assert agg.score_fields() == ("armo.a", "armo")


@pytest.mark.parametrize("kind", ["no rows", "no candidates"])
def test_model_scorers_take_a_table_with_nothing_to_score(tiny_models, pools, kind):
    """A shard emptied upstream reaches the scorers too: empty output, same score fields."""
    import pyarrow as pa

    if kind == "no rows":
        table = pools.slice(0, 0)
    else:
        empty = pa.array([[]], pools.schema.field("candidates").type)
        table = pools.slice(0, 1).set_column(
            pools.schema.get_field_index("candidates"), "candidates", empty
        )
    for stage, field in (
        (RewardModel(str(tiny_models["reward"])), "rm"),
        (LogProb(str(tiny_models["causal"])), "logp.sum"),
    ):
        out = stage(table).table
        assert out.num_rows == table.num_rows
        scores = out.schema.field("candidates").type.value_type.field("scores").type
        assert field in scores.names


def test_density_ratio_vllm_engines_share_the_gpu():
    """Two vLLM engines in one process: each gets half the budget (vLLM's fraction is per
    engine). Only the configs are built here: vLLM cannot run without a GPU."""
    cdr = DensityRatio("strong", "weak", engine="vllm", gpu_memory_utilization=0.8)
    assert [p.gpu_memory_utilization for p in cdr._parts()] == [0.4, 0.4]
    assert cdr.fingerprint == DensityRatio("strong", "weak", engine="vllm").fingerprint


def test_costly_scorers_show_progress_inside_a_shard(tiny_models, capsys):
    """A reward model and a log-prob scorer show a bar per shard (sequences and tokens/s)
    when asked (on a terminal by default); progress is not part of the config."""
    import pyarrow as pa

    from prefdata.schema import pool_schema
    from prefdata.score import LogProb, RewardModel

    rows = [
        {"prompt_id": f"p{i}", "prompt": [{"role": "user", "content": f"q {i}"}],
         "candidates": [{"candidate_id": f"c{i}{j}", "response": f"a {j}", "flags": []}
                        for j in range(3)]}
        for i in range(4)
    ]  # fmt: skip
    pools = pa.Table.from_pylist(rows, schema=pool_schema())
    for stage in (RewardModel(str(tiny_models["reward"]), progress=True),
                  LogProb(str(tiny_models["causal"]), name="lp", progress=True)):  # fmt: skip
        stage(pools)
        err = capsys.readouterr().err
        assert f"{stage.name}: 100%" in err and "12/12" in err and "tok/s" in err, err
        assert "progress" not in stage.config()
    RewardModel(str(tiny_models["reward"]), progress=False)(pools)
    assert "rm:" not in capsys.readouterr().err  # (transformers' own loading bar aside)
