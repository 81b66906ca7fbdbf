"""A small OpenAI-compatible chat-completions server for tests, on 127.0.0.1.

It really generates: each request is served by a :class:`ChatBackend` (the tiny transformers
model in the tests), with completion j seeded ``seed + j`` as vLLM does for ``n > 1``. A
script of :class:`Fault` entries, consumed one per request in arrival order, injects the
failures a real server shows: 429 with ``Retry-After``, 5xx, slow answers (timeouts),
malformed bodies. Prompts longer than the backend's context get a 400 worded like vLLM's.

>>> with OpenAIServer(backend) as server:  # doctest: +SKIP
...     server.script(Fault(status=429, headers={"Retry-After": "0"}))
...     OpenAIBackend(server.url, "tiny").chat(...)
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prefdata.generate.base import ChatBackend, GenerationConfig


@dataclass
class Fault:
    """What the server does with one request instead of (or before) serving it.

    ``delay``: sleep first (then serve normally unless another field is set);
    ``status`` + ``body``/``headers``: answer with these; ``content``: a 200 whose single
    choice holds this text; ``echo_auth``: a 401 whose message repeats the Authorization
    header (a careless server), to check that clients scrub it, ``pad`` characters into
    a long message (and as many after it).
    """

    status: int | None = None
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    content: str | None = None
    echo_auth: bool = False
    pad: int = 0


class OpenAIServer:
    """``POST {url}/chat/completions`` served from ``backend``; see the module docstring."""

    def __init__(self, backend: ChatBackend, model: str = "tiny") -> None:
        self.backend = backend
        self.model = model
        self.requests: list[dict[str, Any]] = []  # {"headers", "body", "peer": client port}
        self._script: deque[Fault] = deque()
        self._lock = threading.Lock()
        self._generate_lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def script(self, *faults: Fault) -> None:
        with self._lock:
            self._script.extend(faults)

    def pending(self) -> int:
        with self._lock:
            return len(self._script)

    def start(self) -> OpenAIServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    status, headers, body = server.handle(
                        self.path, dict(self.headers), raw, peer=self.client_address[1]
                    )
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout); nothing to answer

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- request handling ---------------------------------------------------------------
    def handle(
        self, path: str, headers: dict[str, str], raw: bytes, peer: int | None = None
    ) -> tuple[int, dict, bytes]:
        json_headers = {"Content-Type": "application/json"}
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            return 400, json_headers, _error("request body is not JSON")
        with self._lock:
            self.requests.append({"headers": headers, "body": body, "peer": peer})
            fault = self._script.popleft() if self._script else None
        if not path.endswith("/chat/completions"):
            return 404, json_headers, _error(f"no route {path}")
        if fault is not None:
            if fault.delay:
                time.sleep(fault.delay)
            if fault.echo_auth:
                auth = headers.get("Authorization", "")
                text = f"invalid credentials: {auth}"
                if fault.pad:
                    text = f"{'x' * fault.pad} {text} {'y' * fault.pad}"
                return 401, json_headers, _error(text)
            if fault.status is not None:
                payload = fault.body if fault.body is not None else _error(f"fault {fault.status}")
                return fault.status, {**json_headers, **fault.headers}, payload
            if fault.content is not None:
                return 200, json_headers, _completion(self.model, [(fault.content, "stop")], 1)
        return self._generate(body)

    def _generate(self, body: dict[str, Any]) -> tuple[int, dict, bytes]:
        json_headers = {"Content-Type": "application/json"}
        n = int(body.get("n", 1))
        seed = int(body.get("seed", 0))
        config = GenerationConfig(
            n=n,
            temperature=float(body.get("temperature", 1.0)),
            top_p=float(body.get("top_p", 1.0)),
            max_tokens=int(body.get("max_tokens", 16)),
            stop=tuple(body.get("stop") or ()),
            chat_template_kwargs=tuple(sorted((body.get("chat_template_kwargs") or {}).items())),
        )
        with self._generate_lock:  # one generate at a time on the shared model
            [result] = self.backend.chat([body["messages"]], config, [[seed + j for j in range(n)]])
        if result.error is not None:
            return 400, json_headers, _error(f"This model's maximum context length: {result.error}")
        choices = [(c.text, c.finish_reason) for c in result.completions]
        tokens = sum(c.num_tokens or 0 for c in result.completions)
        return 200, json_headers, _completion(self.model, choices, tokens)


def _error(message: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": "invalid_request_error"}}).encode()


def _completion(model: str, choices: list[tuple[str, str | None]], tokens: int) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "model": model,
            "choices": [
                {
                    "index": k,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": reason,
                }
                for k, (text, reason) in enumerate(choices)
            ],
            "usage": {"completion_tokens": tokens},
        }
    ).encode()
