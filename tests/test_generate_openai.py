"""OpenAIBackend against a real HTTP server on 127.0.0.1 that generates with the tiny model.

The server (tests/openai_server.py) runs in a thread, serves chat completions from a
TransformersBackend, and injects scripted faults: 429 with Retry-After, 5xx, slow answers,
malformed bodies, and an error that echoes the Authorization header.
"""

from __future__ import annotations

import logging
import pickle

import pytest

torch = pytest.importorskip("torch")

from openai_server import Fault, OpenAIServer  # noqa: E402

from prefdata.generate.base import ChatBackend, GenerationConfig  # noqa: E402
from prefdata.generate.openai_backend import (  # noqa: E402
    BackendUnavailableError,
    Backoff,
    OpenAIBackend,
    parse_completions,
)
from prefdata.generate.transformers_backend import TransformersBackend  # noqa: E402

SECRET = "sk-test-0123456789-DO-NOT-LEAK"
KEY_ENV = "PREFDATA_TEST_OPENAI_KEY"
HI = [{"role": "user", "content": "Hi there"}]
POEM = [{"role": "user", "content": "Write a short poem about the sea."}]
CFG = GenerationConfig(n=2, max_tokens=12)
FAST = Backoff(base=0.001, max_delay=0.01)


@pytest.fixture(scope="module")
def local_model(tiny_models):
    return TransformersBackend(tiny_models["causal"], batch_size=4)


@pytest.fixture(scope="module")
def server(local_model):
    with OpenAIServer(local_model) as srv:
        yield srv


@pytest.fixture
def fresh(server):
    """The shared server with an empty script and request log."""
    server.requests.clear()
    yield server
    assert server.pending() == 0, "a scripted fault was not consumed"


@pytest.fixture
def keyed(monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)


def client(server, **kw) -> OpenAIBackend:
    kw.setdefault("backoff", FAST)
    kw.setdefault("api_key_env", KEY_ENV)
    return OpenAIBackend(server.url, "tiny", **kw)


def test_generates_what_the_model_generates(fresh, local_model, keyed):
    backend = client(fresh, concurrency=3)
    assert isinstance(backend, ChatBackend)
    got = backend.chat([HI, POEM], CFG, [[1, 2], [3, 4]])
    want = local_model.chat([HI, POEM], CFG, [[1, 2], [3, 4]])
    assert got == want  # text, finish_reason, num_tokens and seed per candidate
    # one request per candidate, each with its own seed and n=1
    bodies = sorted((r["body"]["seed"], r["body"]["n"]) for r in fresh.requests)
    assert bodies == [(1, 1), (2, 1), (3, 1), (4, 1)]
    assert all(r["headers"]["Authorization"] == f"Bearer {SECRET}" for r in fresh.requests)
    body = fresh.requests[0]["body"]
    assert body["max_tokens"] == 12 and body["model"] == "tiny" and "stop" not in body


def test_one_request_with_n_records_the_request_seed(fresh, local_model):
    backend = client(fresh, per_candidate_requests=False, api_key_env=None)
    [res] = backend.chat([HI], CFG, [[40, 41]])
    assert [(r["body"]["n"], r["body"]["seed"]) for r in fresh.requests] == [(2, 40)]
    assert "Authorization" not in fresh.requests[0]["headers"]
    assert [c.seed for c in res.completions] == [40, 40]
    # the server seeds child j with seed + j, as vLLM does
    want = local_model.chat([HI], CFG, [[40, 41]])[0].completions
    assert [c.text for c in res.completions] == [c.text for c in want]
    assert all(c.num_tokens is None for c in res.completions)  # usage is a total over n


def test_stop_and_template_kwargs_are_sent(fresh):
    cfg = GenerationConfig(n=1, max_tokens=8, stop=("###",), chat_template_kwargs=(("x", 1),))
    client(fresh).chat([HI], cfg, [[5]])
    body = fresh.requests[0]["body"]
    assert body["stop"] == ["###"] and body["chat_template_kwargs"] == {"x": 1}


def test_429_with_retry_after_is_honoured(fresh, caplog):
    slept: list[float] = []
    fresh.script(
        Fault(status=429, headers={"Retry-After": "7"}),
        Fault(status=429, headers={"Retry-After": "2"}),
    )
    backend = client(fresh, concurrency=1, sleep=slept.append)
    with caplog.at_level(logging.WARNING, logger="prefdata.generate.openai_backend"):
        [res] = backend.chat([HI], GenerationConfig(n=1, max_tokens=8), [[9]])
    assert res.error is None and len(res.completions) == 1
    assert slept == [7.0, 2.0]
    assert len(fresh.requests) == 3
    assert "HTTP 429" in caplog.text and "retry 1/5" in caplog.text


def test_500_then_success_uses_deterministic_backoff(fresh):
    slept_a: list[float] = []
    slept_b: list[float] = []
    backoff = Backoff(base=0.5, max_delay=4.0, jitter=0.5)
    for slept in (slept_a, slept_b):
        fresh.script(Fault(status=500), Fault(status=503))
        backend = client(fresh, concurrency=1, sleep=slept.append, backoff=backoff)
        [res] = backend.chat([HI], GenerationConfig(n=1, max_tokens=8), [[9]])
        assert res.error is None
    assert slept_a == slept_b  # jitter is a digest of the request: the same on a rerun
    assert 0.25 <= slept_a[0] <= 0.5 and 0.5 <= slept_a[1] <= 1.0


def test_timeout_then_success(fresh):
    fresh.script(Fault(delay=1.0))
    backend = client(fresh, timeout=0.2)
    [res] = backend.chat([HI], GenerationConfig(n=1, max_tokens=8), [[9]])
    assert res.error is None and len(res.completions) == 1


def test_exhausted_retries_raise_or_reject(fresh):
    fresh.script(Fault(delay=0.6), Fault(delay=0.6))
    with pytest.raises(BackendUnavailableError, match="timed out"):
        client(fresh, timeout=0.15, max_retries=1, concurrency=1).chat(
            [HI], GenerationConfig(n=1, max_tokens=8), [[9]]
        )
    fresh.script(Fault(status=502), Fault(status=502))
    [res] = client(fresh, max_retries=1, on_exhausted="error").chat(
        [HI], GenerationConfig(n=1, max_tokens=8), [[9]]
    )
    assert res.completions == [] and res.error.startswith("HTTP 502") and "2 attempts" in res.error


def test_connection_refused_is_transient(fresh):
    backend = OpenAIBackend(
        "http://127.0.0.1:9/v1", "tiny", max_retries=1, backoff=FAST, on_exhausted="error"
    )
    [res] = backend.chat([HI], GenerationConfig(n=1, max_tokens=8), [[1]])
    assert "connection failed" in res.error


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<html>oops</html>", "not JSON"),
        (b'{"object": "chat.completion"}', "no 'choices' list"),
        (b'{"choices": [{"message": {"role": "assistant"}}]}', "choices[0].message.content"),
        (b'{"choices": []}', "expected 1 choices, got 0"),
        (b"[1, 2]", "JSON list"),
    ],
)
def test_malformed_response_is_an_error_with_the_reason(fresh, body, reason):
    fresh.script(Fault(status=200, body=body))
    [res] = client(fresh).chat([HI], GenerationConfig(n=1, max_tokens=8), [[1]])
    assert res.completions == [] and "malformed response" in res.error and reason in res.error
    assert len(fresh.requests) == 1  # not retried


def test_client_errors_are_not_retried(fresh):
    long = [{"role": "user", "content": "sea sky " * 400}]
    ok, bad = client(fresh).chat([HI, long], GenerationConfig(n=1, max_tokens=8), [[1], [2]])
    assert ok.error is None
    assert bad.error.startswith("HTTP 400") and "maximum context length" in bad.error
    assert len(fresh.requests) == 2


def test_one_failed_candidate_fails_its_conversation_only(fresh):
    fresh.script(Fault(status=400, body=b'{"error": {"message": "bad seed"}}'))
    a, b = client(fresh, concurrency=1).chat(
        [HI, POEM], GenerationConfig(n=2, max_tokens=8), [[1, 2], [3, 4]]
    )
    assert a.error == "HTTP 400: bad seed" and a.completions == []
    assert b.error is None and len(b.completions) == 2


def test_the_key_never_leaks(fresh, keyed, caplog, capsys):
    fresh.script(
        Fault(status=429, headers={"Retry-After": "0"}),
        Fault(status=500, body=f'{{"error": {{"message": "boom {SECRET}"}}}}'.encode()),
        Fault(echo_auth=True),
        Fault(status=200, body=f"not json {SECRET}".encode()),
    )
    backend = client(fresh, concurrency=1, max_retries=3)
    with caplog.at_level(logging.DEBUG):
        results = backend.chat([HI, POEM], GenerationConfig(n=1, max_tokens=8), [[1], [2]])
        fresh.script(*[Fault(status=503, body=SECRET.encode())] * 2)
        with pytest.raises(BackendUnavailableError) as raised:
            client(fresh, max_retries=1).chat([HI], GenerationConfig(n=1, max_tokens=8), [[3]])
    # the key did reach the server, and the server did echo it
    assert any(SECRET in r["headers"].get("Authorization", "") for r in fresh.requests)
    assert "invalid credentials: Bearer ***" in results[0].error
    assert "malformed response" in results[1].error
    out = capsys.readouterr()
    texts = [
        caplog.text,
        out.out,
        out.err,
        repr(backend),
        str(vars(backend)),
        repr(results),
        str(raised.value),
        repr(raised.value),
    ]
    for text in texts:
        assert SECRET not in text
    assert "***" in caplog.text  # the echoed key was scrubbed from the retry log
    clone = pickle.loads(pickle.dumps(backend))
    assert SECRET.encode() not in pickle.dumps(backend)
    assert clone._key is not None  # re-read from this process's environment


def test_parse_completions_orders_choices_by_index():
    body = (
        b'{"choices": [{"index": 1, "message": {"content": "b"}, "finish_reason": "length"},'
        b' {"index": 0, "message": {"content": "a"}, "finish_reason": "stop"}]}'
    )
    comps = parse_completions(body, n=2, seed=3)
    assert [(c.text, c.finish_reason, c.seed) for c in comps] == [
        ("a", "stop", 3),
        ("b", "length", 3),
    ]


def test_an_echoed_key_deep_in_a_long_error_leaks_no_character(fresh, keyed, caplog):
    """A server that echoes the key after 290 characters of error text: the body is
    scrubbed before the message is cut, so not even the key's head survives."""
    padding = "x" * 290
    fresh.script(
        Fault(status=400, body=f'{{"error": {{"message": "{padding} {SECRET}"}}}}'.encode()),
        Fault(status=400, body=f"{padding} Bearer {SECRET} trailing".encode()),
    )
    with caplog.at_level(logging.DEBUG):
        results = client(fresh, concurrency=1).chat(
            [HI, POEM], GenerationConfig(n=1, max_tokens=8), [[1], [2]]
        )
    heads = {SECRET[:k] for k in range(6, len(SECRET) + 1)}
    for text in [r.error for r in results] + [caplog.text]:
        assert not any(h in text for h in heads), text


def test_no_key_goes_to_a_server_it_was_not_named_for(fresh, monkeypatch):
    """OPENAI_API_KEY is sent to api.openai.com only: a local or third-party server gets
    no Authorization header unless api_key_env names a variable for it."""
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    backend = OpenAIBackend(fresh.url, "tiny", backoff=FAST)
    backend.chat([HI], GenerationConfig(n=1, max_tokens=4), [[1]])
    assert all("Authorization" not in r["headers"] for r in fresh.requests)
    assert OpenAIBackend("https://api.openai.com/v1", "gpt")._key is not None


def test_connections_are_kept_alive_and_pooled(fresh):
    """40 requests through 4 workers use at most 4 connections (keep-alive, pooled), not
    one connection per request."""
    backend = OpenAIBackend(fresh.url, "tiny", concurrency=4, backoff=FAST, api_key_env=None)
    seeds = [[i, i + 1, i + 2, i + 3] for i in range(10)]
    results = backend.chat([HI] * 10, GenerationConfig(n=4, max_tokens=2), seeds)
    assert all(r.error is None and len(r.completions) == 4 for r in results)
    peers = {r["peer"] for r in fresh.requests}
    assert len(fresh.requests) == 40 and 1 <= len(peers) <= 4
    backend.close()
