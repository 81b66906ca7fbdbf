"""A chat backend for any OpenAI-compatible server (vLLM serve, SGLang, TGI, hosted APIs).

One ``httpx2`` client (the HTTP client of the ``openai`` SDK and ``huggingface_hub``) per
backend, with keep-alive connections pooled up to ``concurrency`` (64 by default, sized
for a serving engine), shared by ``concurrency`` worker threads: a server sees at most that
many requests in flight, each on a reused connection. A per-request timeout, retries with
exponential backoff on 429, 5xx, timeouts and dropped connections (honouring
``Retry-After``), with jitter derived from a digest of the request so a rerun waits the
same and parallel requests spread out. ``benchmarks/bench_http.py`` measures it against
the ``openai`` SDK's ``AsyncOpenAI``.

The API key is read from the environment variable named by ``api_key_env`` when the backend
is built (by default ``OPENAI_API_KEY``, and only for ``api.openai.com``: any other server
gets a key only when ``api_key_env`` names one). It is kept in a wrapper that prints as
``***``, never pickled, never logged, and scrubbed from every answer before anything reads
or cuts it (a server may echo headers back).

Seeds: with ``per_candidate_requests=True`` (the default) each candidate is its own request
(``n=1``, ``seed`` = the candidate's seed), so candidate j reproduces on its own and does not
change when ``n`` grows; servers with prefix caching (vLLM, SGLang) reuse the shared prompt.
With ``False``, one request per conversation sends ``n`` and ``seed = seeds[i][0]``, and every
completion records that request seed.

>>> backend = OpenAIBackend("http://127.0.0.1:8000/v1", "Qwen/Qwen2.5-3B")  # doctest: +SKIP
>>> chats = [[{"role": "user", "content": "Hi"}]]
>>> backend.chat(chats, GenerationConfig(n=2), [[1, 2]])  # doctest: +SKIP
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Literal

from prefdata.generate.base import ChatResult, Completion, GenerationConfig, Message, check_seeds
from prefdata.ids import digest

logger = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 409, 429}) | frozenset(range(500, 600))


class BackendUnavailableError(RuntimeError):
    """The server kept failing (429, 5xx, timeouts) after every retry.

    Raised rather than turned into rejects, so that an outage stops the shard instead of
    rejecting its rows; a rerun through the executor regenerates only unfinished shards.
    """


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff: ``min(max_delay, base * factor**attempt)``, shortened by up to
    ``jitter`` (a fraction) using a digest of the request and attempt. ``Retry-After`` wins
    when the server sends it (capped at ``max_retry_after`` seconds).

    >>> b = Backoff(base=1.0, factor=2.0, max_delay=5.0, jitter=0.0)
    >>> [b.delay(a, "k") for a in range(4)]
    [1.0, 2.0, 4.0, 5.0]
    """

    base: float = 0.5
    factor: float = 2.0
    max_delay: float = 30.0
    jitter: float = 0.5
    max_retry_after: float = 300.0

    def delay(self, attempt: int, key: str) -> float:
        raw = min(self.max_delay, self.base * self.factor**attempt)
        frac = int(digest("backoff", key, attempt, size=8), 16) / 0xFFFFFFFF
        return raw * (1.0 - self.jitter * frac)


class _Secret:
    """Holds a secret; prints as ``***`` and refuses to be pickled."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "***"

    __str__ = __repr__

    def __reduce__(self):
        raise TypeError("a secret cannot be pickled")


class _Attempt:
    """The outcome of one HTTP attempt."""

    def __init__(
        self,
        status: int | None,
        body: bytes = b"",
        retry_after: float | None = None,
        error: str | None = None,
    ):
        self.status = status
        self.body = body
        self.retry_after = retry_after
        self.error = error  # transport failure (timeout, connection refused), no status


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date).

    >>> parse_retry_after("3")
    3.0
    >>> parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0)
    10.0
    >>> parse_retry_after("soon") is None
    True
    """
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def build_request_body(
    model: str,
    messages: Sequence[Message],
    config: GenerationConfig,
    *,
    n: int,
    seed: int,
    extra_body: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON body of one chat-completions request.

    ``chat_template_kwargs`` is a vLLM / SGLang extension: sent only when set, since strict
    servers reject unknown fields.

    >>> cfg = GenerationConfig(max_tokens=8, stop=("###",))
    >>> body = build_request_body("m", [{"role": "user", "content": "Hi"}], cfg, n=1, seed=3)
    >>> body["n"], body["seed"], body["stop"], "chat_template_kwargs" in body
    (1, 3, ['###'], False)
    """
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
        "n": n,
        "seed": int(seed),
        "temperature": config.temperature,
        "top_p": config.top_p,
        "max_tokens": config.max_tokens,
    }
    if config.stop:
        body["stop"] = list(config.stop)
    if config.chat_template_kwargs:
        body["chat_template_kwargs"] = dict(config.chat_template_kwargs)
    if extra_body:
        body.update(extra_body)
    return body


class MalformedResponseError(ValueError):
    """A 2xx response that is not a chat completion."""


def parse_completions(payload: bytes, n: int, seed: int) -> list[Completion]:
    """Completions from a chat-completions response body; raise
    :class:`MalformedResponseError` with the reason when it is not one.

    ``num_tokens`` comes from ``usage.completion_tokens`` when the request had ``n == 1``
    (it is a total over choices otherwise, so left unknown).

    >>> body = b'{"choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"},'
    >>> body += b' "finish_reason": "stop"}], "usage": {"completion_tokens": 2}}'
    >>> parse_completions(body, n=1, seed=5)
    [Completion(text='Hi', finish_reason='stop', num_tokens=2, seed=5)]
    """
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedResponseError(f"response is not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise MalformedResponseError(f"response is a JSON {type(data).__name__}, not an object")
    if "error" in data and "choices" not in data:
        raise MalformedResponseError(f"server returned an error object: {_error_message(data)}")
    choices = data.get("choices")
    if not isinstance(choices, list):
        raise MalformedResponseError("response has no 'choices' list")
    if len(choices) != n:
        raise MalformedResponseError(f"expected {n} choices, got {len(choices)}")
    if all(isinstance(c, dict) and isinstance(c.get("index"), int) for c in choices):
        choices = sorted(choices, key=lambda c: c["index"])
    usage = data.get("usage")
    tokens = usage.get("completion_tokens") if isinstance(usage, dict) and n == 1 else None
    out = []
    for k, choice in enumerate(choices):
        message = choice.get("message") if isinstance(choice, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            raise MalformedResponseError(f"choices[{k}].message.content is missing or not a string")
        reason = choice.get("finish_reason")
        out.append(
            Completion(
                text=content,
                finish_reason=reason if isinstance(reason, str) else None,
                num_tokens=tokens if isinstance(tokens, int) and tokens >= 0 else None,
                seed=int(seed),
            )
        )
    return out


def _error_message(body: bytes | dict[str, Any], limit: int = 300) -> str:
    """The server's error message (OpenAI shape ``{"error": {"message": ...}}``) or the body."""
    data = body
    if isinstance(body, bytes):
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return body[:limit].decode("utf-8", errors="replace")
    if isinstance(data, dict):
        err = data.get("error", data)
        msg = err.get("message") if isinstance(err, dict) else err
        if msg is None and isinstance(data, dict):
            msg = data.get("message", data.get("detail", data))
        return str(msg)[:limit]
    return str(data)[:limit]


class OpenAIBackend:
    """Chat completions over HTTP from an OpenAI-compatible ``base_url`` (ending in ``/v1``).

    ``on_exhausted`` decides what happens when retries run out on a transient failure:
    ``"raise"`` (:class:`BackendUnavailableError`, the default: the shard fails and reruns)
    or ``"error"`` (``ChatResult(error=...)``, the row goes to rejects). Other 4xx answers
    (such as a prompt longer than the context) and malformed responses always give
    ``ChatResult(error=...)`` with the reason.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str | None = "auto",
        concurrency: int = 64,
        timeout: float = 60.0,
        max_retries: int = 5,
        backoff: Backoff = Backoff(),
        per_candidate_requests: bool = True,
        on_exhausted: Literal["raise", "error"] = "raise",
        extra_body: Mapping[str, Any] | None = None,
        name: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if on_exhausted not in ("raise", "error"):
            raise ValueError(f"on_exhausted must be 'raise' or 'error', got {on_exhausted!r}")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.base_url = base_url
        self.model = model
        self.name = name or model
        self.api_key_env = api_key_env
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.per_candidate_requests = per_candidate_requests
        self.on_exhausted = on_exhausted
        self.extra_body = dict(extra_body or {})
        self._sleep = sleep
        self._read_key()
        self._pool: ThreadPoolExecutor | None = None
        self._client: Any = None
        self._lock = threading.Lock()

    def _read_key(self) -> None:
        key = os.environ.get(env) if (env := self.key_env()) else None
        self._key = _Secret(key) if key else None

    def key_env(self) -> str | None:
        """The environment variable the key comes from: ``api_key_env``; ``"auto"`` (the
        default) is ``OPENAI_API_KEY`` for OpenAI's own host only, so a user's OpenAI key
        never goes to a local or third-party server they did not name it for.

        >>> OpenAIBackend("http://127.0.0.1:8000/v1", "m").key_env() is None
        True
        >>> OpenAIBackend("https://api.openai.com/v1", "m").key_env()
        'OPENAI_API_KEY'
        """
        if self.api_key_env != "auto":
            return self.api_key_env
        host = urllib.parse.urlsplit(self.base_url).hostname
        return "OPENAI_API_KEY" if host == "api.openai.com" else None

    def __repr__(self) -> str:
        return (
            f"OpenAIBackend(base_url={self.base_url!r}, model={self.model!r}, "
            f"api_key_env={self.api_key_env!r}, concurrency={self.concurrency}, "
            f"timeout={self.timeout}, max_retries={self.max_retries})"
        )

    def __getstate__(self) -> dict[str, Any]:
        # The key stays behind; an unpickled copy reads it from its own environment.
        skip = ("_key", "_pool", "_lock", "_client")
        return {k: v for k, v in self.__dict__.items() if k not in skip}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._read_key()
        self._pool = None
        self._client = None
        self._lock = threading.Lock()

    def close(self) -> None:
        """Stop the worker threads and close the pooled connections."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._client is not None:
            self._client.close()
            self._client = None

    def _http(self) -> Any:
        """The pooled client (made on first use, in this process)."""
        with self._lock:
            if self._client is None:
                import httpx2

                limits = httpx2.Limits(
                    max_connections=self.concurrency, max_keepalive_connections=self.concurrency
                )
                self._client = httpx2.Client(
                    timeout=self.timeout, limits=limits, follow_redirects=False, trust_env=False
                )
            return self._client

    def _scrub(self, text: str) -> str:
        if self._key is not None:
            text = text.replace(self._key.reveal(), "***")
        return text

    def _scrubbed(self, result: _Attempt) -> _Attempt:
        """The attempt with the key scrubbed from the body and the error before anything
        reads, parses or cuts them (a cut first could keep the head of an echoed key)."""
        if self._key is not None:
            key = self._key.reveal()
            result.body = result.body.replace(key.encode("utf-8"), b"***")
            if result.error is not None:
                result.error = result.error.replace(key, "***")
        return result

    # -- one request --------------------------------------------------------------------
    def _post(self, payload: bytes) -> _Attempt:
        import httpx2

        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._key is not None:
            headers["Authorization"] = "Bearer " + self._key.reveal()
        try:
            resp = self._http().post(self.url, content=payload, headers=headers)
        except httpx2.TimeoutException:
            return _Attempt(None, error=f"timed out after {self.timeout:g} s")
        except (httpx2.TransportError, OSError) as exc:
            return _Attempt(None, error=f"connection failed: {type(exc).__name__}: {exc}")
        if 200 <= resp.status_code < 300:
            return _Attempt(resp.status_code, resp.content)
        retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        return _Attempt(resp.status_code, resp.content, retry_after)

    def _request(self, body: dict[str, Any]) -> list[Completion] | str:
        """Completions, or an error string; raises BackendUnavailableError when exhausted
        and ``on_exhausted == "raise"``."""
        payload = json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")
        key = digest("request", payload.decode("utf-8"))
        last = ""
        for attempt in range(self.max_retries + 1):
            result = self._scrubbed(self._post(payload))
            if result.status is not None and 200 <= result.status < 300:
                try:
                    return parse_completions(result.body, body["n"], body["seed"])
                except MalformedResponseError as exc:
                    return self._scrub(f"malformed response from {self.url}: {exc}")
            if result.status is not None and result.status not in RETRY_STATUSES:
                return self._scrub(f"HTTP {result.status}: {_error_message(result.body)}")
            last = (
                f"HTTP {result.status}: {_error_message(result.body)}"
                if result.status is not None
                else result.error or "unknown failure"
            )
            if attempt == self.max_retries:
                break
            wait = (
                min(result.retry_after, self.backoff.max_retry_after)
                if result.retry_after is not None
                else self.backoff.delay(attempt, key)
            )
            logger.warning(
                "%s (%s); retry %d/%d in %.2f s",
                self._scrub(last[:200]),
                self.url,
                attempt + 1,
                self.max_retries,
                wait,
            )
            self._sleep(wait)
        message = self._scrub(f"{last} after {self.max_retries + 1} attempts")
        if self.on_exhausted == "raise":
            raise BackendUnavailableError(f"{self.url}: {message}")
        return message

    # -- the protocol -------------------------------------------------------------------
    def chat(
        self,
        conversations: Sequence[Sequence[Message]],
        config: GenerationConfig,
        seeds: Sequence[Sequence[int]],
    ) -> list[ChatResult]:
        check_seeds(conversations, seeds, config.n)
        jobs: list[tuple[int, dict[str, Any]]] = []
        for i, (conv, conv_seeds) in enumerate(zip(conversations, seeds, strict=True)):
            if self.per_candidate_requests:
                jobs.extend(
                    (
                        i,
                        build_request_body(
                            self.model, conv, config, n=1, seed=s, extra_body=self.extra_body
                        ),
                    )
                    for s in conv_seeds
                )
            else:
                jobs.append(
                    (
                        i,
                        build_request_body(
                            self.model,
                            conv,
                            config,
                            n=config.n,
                            seed=conv_seeds[0],
                            extra_body=self.extra_body,
                        ),
                    )
                )
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="openai")
            pool = self._pool
        futures = [pool.submit(self._request, body) for _, body in jobs]
        try:
            outcomes = [f.result() for f in futures]
        except BaseException:
            # Leave nothing running behind the exception: cancel what has not started and
            # wait for what has (at most ``concurrency`` requests).
            for f in futures:
                f.cancel()
            wait(futures)
            raise
        results = [ChatResult() for _ in conversations]
        for (i, _), outcome in zip(jobs, outcomes, strict=True):
            res = results[i]
            if res.error is not None:
                continue
            if isinstance(outcome, str):
                res.error, res.completions = outcome, []
            else:
                res.completions.extend(outcome)
        return results
