"""The Sample stage on real backends: the tiny transformers model, and the same model served
over HTTP by tests/openai_server.py as a second generator."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pyarrow as pa
import pytest

torch = pytest.importorskip("torch")

from openai_server import Fault, OpenAIServer  # noqa: E402

from prefdata.execute.local import LocalExecutor, StageError  # noqa: E402
from prefdata.generate import Sample, append_candidates, candidate_seed  # noqa: E402
from prefdata.generate.openai_backend import BackendUnavailableError  # noqa: E402
from prefdata.generate.transformers_backend import TransformersBackend  # noqa: E402
from prefdata.ids import candidate_id, prompt_id  # noqa: E402
from prefdata.io.parquet import read_parquet, write_parquet  # noqa: E402
from prefdata.pipeline import Pipeline  # noqa: E402
from prefdata.schema import candidate_type, pool_schema  # noqa: E402

PROMPTS = [
    [{"role": "user", "content": "Write a short poem about the sea and the sky."}],
    [{"role": "user", "content": "What is the capital of France?"}],
    [
        {"role": "system", "content": "Answer in Spanish."},
        {"role": "user", "content": "Translate good morning."},
    ],
    [{"role": "user", "content": "Solve 12 * 7 and explain each step."}],
]


def pools(prompts=PROMPTS, scores=()) -> pa.Table:
    rows = [
        {
            "prompt_id": prompt_id(p),
            "prompt": p,
            "source": "test",
            "metadata": "{}",
            "candidates": [],
        }
        for p in prompts
    ]
    return pa.Table.from_pylist(rows, schema=pool_schema(list(scores)))


@pytest.fixture(scope="module")
def sampler(tiny_models):
    return Sample(model=str(tiny_models["causal"]), n=3, max_tokens=16, seed=7)


def test_fills_pools_with_recorded_candidates(sampler, tiny_models):
    out = sampler(pools())
    assert "backend" not in pickle.loads(pickle.dumps(sampler)).__dict__.get("_resources", {})
    assert out.rejects.num_rows == 0 and out.table.num_rows == 4
    assert out.table.schema.field("candidates").type == pa.list_(candidate_type())
    for row in out.table.to_pylist():
        cands = row["candidates"]
        assert [c["sample_index"] for c in cands] == [0, 1, 2]
        assert [c["seed"] for c in cands] == [
            candidate_seed(7, row["prompt_id"], j) for j in range(3)
        ]
        for c in cands:
            assert c["generator"] == str(tiny_models["causal"])  # the model path as given
            assert c["candidate_id"] == candidate_id(
                row["prompt_id"], str(tiny_models["causal"]), c["sample_index"], c["response"]
            )
            assert c["finish_reason"] in ("stop", "length") and 1 <= c["num_tokens"] <= 16
            assert ("truncated" in c["flags"]) == (c["finish_reason"] == "length")
            assert ("empty" in c["flags"]) == (not c["response"].strip())
        assert len({c["candidate_id"] for c in cands}) == 3


def test_deterministic_and_independent_of_sharding(sampler, tiny_models, tmp_path):
    whole = sampler(pools()).table
    again = Sample(model=str(tiny_models["causal"]), n=3, max_tokens=16, seed=7)(pools()).table
    assert whole.equals(again)
    # another shard split, another batch size and chunk size: the same rows
    small = Sample(
        model=str(tiny_models["causal"]),
        n=3,
        max_tokens=16,
        seed=7,
        options={"batch_size": 2},
        chunk_size=1,
    )
    halves = [small(pools()[:1]).table, small(pools()[1:]).table]
    assert pa.concat_tables(halves).equals(whole)
    # byte-identical Parquet output
    write_parquet(whole, tmp_path / "a.parquet")
    write_parquet(again, tmp_path / "b.parquet")
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    assert read_parquet(tmp_path / "a.parquet").equals(whole)
    assert sampler.fingerprint == small.fingerprint  # batch/chunk sizes do not change outputs
    other_seed = Sample(model=str(tiny_models["causal"]), n=3, max_tokens=16, seed=8)
    assert other_seed.fingerprint != sampler.fingerprint
    assert other_seed(pools()).table["candidates"].to_pylist() != whole["candidates"].to_pylist()


def test_second_sampler_appends_from_another_generator(sampler, tiny_models):
    """A local model and an HTTP-served one fill the same pools; existing scores stay."""
    first = sampler(pools(scores=["rm"])).table
    # give one existing candidate a score, to check it survives
    rows = first.to_pylist()
    rows[0]["candidates"][0]["scores"] = {"rm": 0.5}
    first = pa.Table.from_pylist(rows, schema=first.schema)
    served = TransformersBackend(tiny_models["causal"])
    with OpenAIServer(served, model="tiny-served") as server:
        second = Sample(
            model="tiny-served",
            backend="openai",
            base_url=server.url,
            n=2,
            max_tokens=8,
            seed=7,
            generator="weak",
            options={"api_key_env": None},
        )
        out = second(first)
    assert out.rejects.num_rows == 0
    for before, after in zip(first.to_pylist(), out.table.to_pylist(), strict=True):
        cands = after["candidates"]
        assert cands[:3] == before["candidates"]  # untouched, in order
        assert [c["generator"] for c in cands] == [str(tiny_models["causal"])] * 3 + ["weak"] * 2
        assert [c["sample_index"] for c in cands[3:]] == [0, 1]
        assert all(c["scores"] == {"rm": None} for c in cands[3:])
    assert out.table.to_pylist()[0]["candidates"][0]["scores"] == {"rm": 0.5}
    # the HTTP generator with the same seeds gives the local model's samples
    pid = out.table["prompt_id"][0].as_py()
    [res] = served.chat(
        [PROMPTS[0]], second.generation_config, [[candidate_seed(7, pid, j) for j in range(2)]]
    )
    assert [c["response"] for c in out.table.to_pylist()[0]["candidates"][3:]] == [
        c.text for c in res.completions
    ]


def test_same_generator_again_continues_sample_indices(sampler):
    once = sampler(pools()[:2]).table
    twice = sampler(once).table
    for row in twice.to_pylist():
        idx = [c["sample_index"] for c in row["candidates"]]
        assert idx == [0, 1, 2, 3, 4, 5]
        assert len({c["candidate_id"] for c in row["candidates"]}) == 6
        assert len({c["seed"] for c in row["candidates"]}) == 6


def test_first_free_index_ignores_a_null_candidates_hidden_fields(sampler):
    """A null candidate may keep child values (valid Arrow): its hidden generator and
    sample_index must not move where this generator's new samples start."""
    name = sampler.generator_name
    rows = [{"generator": name, "sample_index": i} for i in (7, 0, 1)]
    kids = pa.Table.from_pylist(rows)
    cands = pa.StructArray.from_arrays(
        [kids["generator"].combine_chunks(), kids["sample_index"].combine_chunks()],
        names=["generator", "sample_index"],
        mask=pa.array([True, False, False]),
    )
    lists = pa.ListArray.from_arrays(pa.array([0, 3], pa.int32()), cands)
    assert sampler._first_indices(lists).tolist() == [2]


def test_bad_and_too_long_prompts_go_to_rejects(sampler):
    bad = [
        [{"role": "user", "content": "sea sky " * 400}],  # longer than the 512-token context
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
        [],
    ]
    table = pools(PROMPTS[:2] + bad)
    result = Pipeline([sampler]).run(table)
    assert result.table.num_rows == 2
    stage = f"Sample[{sampler.generator_name}]"
    assert result.funnel.to_list() == [
        {"stage": stage, "rows_in": 5, "rows_out": 2, "rows_rejected": 3}
    ]
    rej = result.rejects.to_pylist()
    assert [r["row"] for r in rej] == [2, 3, 4]
    assert (
        rej[0]["reason"].startswith("sampling failed: prompt is")
        and "512 tokens" in rej[0]["reason"]
    )
    assert rej[1]["reason"] == "prompt must end with a user or tool turn; it ends with 'assistant'"
    assert rej[2]["reason"] == "prompt is empty"
    assert all(r["field"] == "prompt" and r["stage"] == stage for r in rej)
    assert json.loads(rej[1]["record"])["prompt_id"] == table["prompt_id"][3].as_py()


def test_system_prompt_stop_and_empty_flag_over_http(tiny_models):
    served = TransformersBackend(tiny_models["causal"])
    with OpenAIServer(served) as server:
        server.script(Fault(content="   "))
        stage = Sample(
            model="tiny",
            backend="openai",
            base_url=server.url,
            n=1,
            max_tokens=8,
            system_prompt="Be brief.",
            stop="###",
            options={"api_key_env": None, "concurrency": 1},
        )
        out = stage(pools(PROMPTS[:3]))
        msgs = [r["body"]["messages"] for r in server.requests]
    assert msgs[0][0] == {"role": "system", "content": "Be brief."}
    assert msgs[2][0] == {"role": "system", "content": "Answer in Spanish."}  # its own wins
    assert len(msgs[2]) == 2
    assert all(r["body"]["stop"] == ["###"] for r in server.requests)
    first = out.table.to_pylist()[0]["candidates"][0]
    assert first["response"] == "   " and first["flags"] == ["empty"]


def test_config_refuses_credentials_and_holds_none(tiny_models, monkeypatch):
    monkeypatch.setenv("SAMPLE_TEST_KEY", "sk-secret-in-env")
    with pytest.raises(ValueError, match="looks like a credential"):
        Sample(model="m", backend="openai", base_url="http://x/v1", options={"api_key": "sk-1"})
    stage = Sample(
        model="m",
        backend="openai",
        base_url="http://x/v1",
        options={"api_key_env": "SAMPLE_TEST_KEY"},
    )
    assert "sk-secret-in-env" not in json.dumps(stage.config(), default=str) + stage.fingerprint
    clone = pickle.loads(pickle.dumps(stage))  # shipped to Ray workers without resources
    assert clone == stage and clone.fingerprint == stage.fingerprint
    with pytest.raises(ValueError, match="temperature"):
        Sample(model="m", temperature=-1)
    with pytest.raises(ValueError, match="needs model"):
        Sample()


def test_append_candidates_handles_nulls_and_chunks():
    t = candidate_type(["rm"])
    c = {
        "candidate_id": "c0",
        "response": "r",
        "generator": "g",
        "scores": {"rm": 1.0},
        "flags": [],
    }
    old = pa.array([[c], None, [], [c, c]], type=pa.list_(t))
    new = [
        [],
        [dict(c, candidate_id="n1")],
        [dict(c, candidate_id="n2")],
        [dict(c, candidate_id="n3")],
    ]
    got = append_candidates(old, new, t).to_pylist()
    assert [[x["candidate_id"] for x in row] for row in got] == [
        ["c0"],
        ["n1"],
        ["n2"],
        ["c0", "c0", "n3"],
    ]
    sliced = append_candidates(old.slice(2), new[2:], t).to_pylist()
    assert [[x["candidate_id"] for x in row] for row in sliced] == [["n2"], ["c0", "c0", "n3"]]


def test_input_without_candidates_column(sampler):
    table = pa.table({"prompt_id": ["p-a"], "prompt": [PROMPTS[1]]})
    out = sampler(table)
    assert len(out.table["candidates"][0]) == 3
    assert np.all(np.array(out.table.column_names) == ["prompt_id", "prompt", "candidates"])


def test_outage_stops_the_shard_and_a_rerun_regenerates_only_unfinished_shards(
    tiny_models, tmp_path
):
    """Through the local executor: the server fails on the third shard, the run stops there;
    the rerun sends requests for that shard only and ends with the rows of an in-memory run."""
    prompts = [[{"role": "user", "content": f"Give me tip number {k}."}] for k in range(6)]
    table = pools(prompts)
    served = TransformersBackend(tiny_models["causal"])
    with OpenAIServer(served) as server:
        stage = Sample(
            model="tiny",
            backend="openai",
            base_url=server.url,
            n=2,
            max_tokens=8,
            options={"api_key_env": None, "max_retries": 0, "concurrency": 1},
        )
        server.script(*[Fault()] * 8, Fault(status=503))  # shards 0, 1 fine; shard 2 fails
        executor = LocalExecutor(tmp_path / "run", shard_rows=2, progress=False)
        with pytest.raises(StageError) as failed:
            executor.run([stage], table)
        assert isinstance(failed.value.__cause__, BackendUnavailableError)
        assert failed.value.shard == 2
        server.requests.clear()
        result = executor.run([stage], table)
        assert len(server.requests) == 4  # shard 2 only: 2 prompts x 2 candidates
        expected = stage(table).table
    assert result.read().equals(expected)
    assert result.funnel.to_list() == [
        {"stage": "Sample[tiny]", "rows_in": 6, "rows_out": 6, "rows_rejected": 0}
    ]


def test_engine_options_are_not_mistaken_for_credentials():
    from prefdata.generate import Sample

    s = Sample(
        model="m",
        backend="vllm",
        options={"max_num_batched_tokens": 8192, "tokenizer_mode": "auto"},
    )
    assert dict(s.options)["max_num_batched_tokens"] == 8192
    with pytest.raises(ValueError, match="credential"):
        Sample(model="m", backend="openai", options={"hf_token": "x"})


def test_two_samplers_are_two_generators_and_two_funnel_lines(tiny_models, tmp_path):
    """Two local models in folders of the same name stay two generators (the default name
    is the path as given), and each sampler is its own funnel line."""
    a, b = tmp_path / "a" / "model", tmp_path / "b" / "model"
    for link in (a, b):
        link.parent.mkdir()
        link.symlink_to(tiny_models["causal"], target_is_directory=True)
    stages = [Sample(model=str(m), n=1, max_tokens=4, seed=1) for m in (a, b)]
    result = Pipeline(stages).run(pools())
    gens = [c["generator"] for p in result.table["candidates"].to_pylist() for c in p]
    assert sorted(set(gens)) == [str(a), str(b)] and len(gens) == 8
    assert [e["stage"] for e in result.funnel.to_list()] == [f"Sample[{a}]", f"Sample[{b}]"]
    assert all(e["rows_in"] == 4 for e in result.funnel.to_list())
