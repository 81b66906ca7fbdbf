"""Credentials planted, every byte scanned: an API key for an OpenAI-compatible server and
a Hugging Face token go through sampling, judging and a Hub export, with a careless server
that echoes the Authorization header deep inside long error bodies; not one 8-character
piece of either secret may appear in any file written (work directories, rejects, exports,
the Hub folder and what is uploaded), on stdout, stderr or in the logs.

The server is real HTTP on 127.0.0.1 (tests/openai_server.py, generating with the tiny
model). The Hub is the one fake: ``HfApi``'s network calls are replaced by a recorder, as
no network reaches the Hub here; the token must reach those calls and nothing else.
"""

from __future__ import annotations

import logging

import pytest

torch = pytest.importorskip("torch")

from openai_server import Fault, OpenAIServer  # noqa: E402

from prefdata.construct import Pairs  # noqa: E402
from prefdata.execute import LocalExecutor  # noqa: E402
from prefdata.generate import Sample  # noqa: E402
from prefdata.generate.openai_backend import Backoff, OpenAIBackend  # noqa: E402
from prefdata.generate.transformers_backend import TransformersBackend  # noqa: E402
from prefdata.io.export import export, hub_table  # noqa: E402
from prefdata.io.hub import push_to_hub, write_hub_folder  # noqa: E402
from prefdata.report.card import CardInfo  # noqa: E402
from prefdata.score import JudgePointwise, RewardModel  # noqa: E402

API_KEY = "sk-proj-Q7vX2mLp9RtZ4bNc8WdY1kHs6JfA3eGu"
HF_TOKEN = "hf_Jk4Lm9Qr2Tv7Wx1Zb5Nc8Pd3Fg6Hs0Ya"
KEY_ENV = "PREFDATA_TEST_JUDGE_KEY"
FAST = Backoff(base=0.001, max_delay=0.01)


def pieces(secret: str, k: int = 8) -> set[str]:
    """Every ``k``-character window of ``secret`` past its public prefix (``sk-proj-``,
    ``hf_``): one of them anywhere is a leak."""
    body = secret.split("-")[-1] if secret.startswith("sk-") else secret[3:]
    return {body[i : i + k] for i in range(len(body) - k + 1)}


@pytest.fixture
def hub_calls(monkeypatch):
    from huggingface_hub import HfApi

    calls: list[dict] = []

    def record(name):
        def method(self, *args, **kwargs):
            calls.append({"call": name, "token": self.token, "args": args, **kwargs})
            return f"commit:{name}"

        return method

    for name in ("create_repo", "create_branch", "upload_folder"):
        monkeypatch.setattr(HfApi, name, record(name))
    return calls


def test_no_byte_written_or_printed_holds_a_credential(
    tiny_models, tmp_path, monkeypatch, capsys, caplog, hub_calls
):
    monkeypatch.setenv(KEY_ENV, API_KEY)
    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)  # must not go to 127.0.0.1 on its own
    prompts = [f"Question {i}: tell me about the sea." for i in range(4)]
    import pyarrow as pa

    from prefdata.ids import prompt_id
    from prefdata.schema import pool_schema

    rows = [
        {
            "prompt_id": prompt_id([{"role": "user", "content": p}]),
            "prompt": [{"role": "user", "content": p}],
            "candidates": [],
        }
        for p in prompts
    ]
    pools = pa.Table.from_pylist(rows, schema=pool_schema())
    options = (("api_key_env", KEY_ENV), ("backoff", FAST), ("concurrency", 1))
    model = TransformersBackend(tiny_models["causal"])
    with OpenAIServer(model) as server, OpenAIServer(model) as judge_server:
        # a careless server echoes the key deep into long errors, around where messages
        # are cut (about 300 characters): the first sampling request (its prompt is
        # rejected with the message) and every judge request (each candidate is flagged
        # judge_error, the message logged)
        pads = [0, 120, 240, 250, 255, 260, 265, 270, 280, 400]
        server.script(Fault(echo_auth=True, pad=255))
        judge_server.script(*[Fault(echo_auth=True, pad=pads[i % 10]) for i in range(40)])
        stages = [
            Sample(
                model="tiny",
                backend="openai",
                base_url=server.url,
                n=2,
                max_tokens=8,
                seed=1,
                options=options,
            ),
            RewardModel(str(tiny_models["reward"]), name="rm"),
            JudgePointwise(
                backend=lambda: OpenAIBackend(
                    judge_server.url, "tiny", api_key_env=KEY_ENV, backoff=FAST, concurrency=1
                ),
                rubric="helpfulness",
                name="judge",
            ),
            Pairs("best-worst", score="rm"),
        ]
        with caplog.at_level(logging.DEBUG):
            result = LocalExecutor(tmp_path / "work", shard_rows=2, progress=False).run(
                stages, pools
            )
            pairs = result.read()
            export(pairs, "trl-dpo", tmp_path / "out" / "trl-dpo", funnel=result.funnel)
            converted = hub_table(pairs)
            folder = write_hub_folder(
                tmp_path / "out" / "hub",
                {"default": {"train": converted.table}},
                card=CardInfo(pretty_name="leak check", stages=stages, funnel=result.funnel),
            )
            push_to_hub(folder, "me/leak-check")
        sent = [r["headers"].get("Authorization", "") for r in server.requests]
        sent += [r["headers"].get("Authorization", "") for r in judge_server.requests]
    # the key went to the servers it was named for (and was echoed back)
    assert len(sent) > 4 and all(a == f"Bearer {API_KEY}" for a in sent)
    rejects = result.rejects().to_pylist()
    assert [r["reason"][:26] for r in rejects] == ["sampling failed: HTTP 401:"]
    # the token reached the Hub calls, nothing else
    assert hub_calls and all(c["token"] == HF_TOKEN for c in hub_calls)
    assert pairs.num_rows > 0
    out = capsys.readouterr()
    written = {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}
    assert len(written) > 20  # shards, manifests, rejects, exports, the Hub folder
    texts = {"stdout": out.out, "stderr": out.err, "logs": caplog.text}
    texts.update({str(p): b.decode("utf-8", "replace") for p, b in written.items()})
    texts["uploaded"] = repr([{k: v for k, v in c.items() if k != "token"} for c in hub_calls])
    for secret in (API_KEY, HF_TOKEN):
        for where, text in texts.items():
            leaked = [w for w in pieces(secret) if w in text]
            assert not leaked, f"{where} holds {leaked[:3]} of a credential"
