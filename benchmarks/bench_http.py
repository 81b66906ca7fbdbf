"""The HTTP chat backend against the ``openai`` SDK's ``AsyncOpenAI``, same server, same
requests, in one run.

Server: a stub OpenAI-compatible endpoint on 127.0.0.1 (asyncio, HTTP/1.1 keep-alive, its
own process), answering every chat completion with a fixed small JSON, either at once or
after ``--latency`` seconds (the time a serving engine would take). Each client sends
``--requests`` single-completion chat requests with at most C in flight, for each C in
``--concurrency``:

- ``prefdata``: ``OpenAIBackend(concurrency=C).chat(...)`` (one request per candidate);
- ``sdk``: ``AsyncOpenAI(max_retries=0)`` over an ``httpx2.AsyncClient`` pooled to C
  connections, ``asyncio.gather`` under a semaphore of C.

Reported: requests per second of each, their ratio, and against the ideal
``C / latency`` when there is a latency. The SDK needs its own venv (it is not a prefdata
dependency)::

    python3 -m venv /tmp/oai-venv && /tmp/oai-venv/bin/pip install openai
    .venv/bin/python benchmarks/bench_http.py                      # instant answers
    .venv/bin/python benchmarks/bench_http.py --latency 0.05
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import socket
import subprocess
import sys
import time

ANSWER = json.dumps(
    {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
    }
).encode()


# ----------------------------------------------------------------- the stub server


def varied_answer(body: bytes) -> bytes:
    """An answer that depends on the request (its messages and seed): different
    candidates get different texts of different lengths, the same request the same one."""
    h = hashlib.md5(body).hexdigest()
    words = " ".join(f"w{h[k : k + 2]}" for k in range(0, 2 * (1 + int(h[0], 16) % 12), 2))
    answer = json.loads(ANSWER)
    answer["choices"][0]["message"]["content"] = f"Answer {h[:6]}: {words}."
    return json.dumps(answer).encode()


async def _serve_one(reader, writer, latency: float, vary: bool) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = await reader.readexactly(length) if length else b""
            if latency:
                await asyncio.sleep(latency)
            answer = varied_answer(body) if vary else ANSWER
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(answer), answer)
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


def serve(port: int, latency: float, vary: bool = False) -> None:
    """The stub server, until killed: ``python benchmarks/bench_http.py --serve PORT
    LATENCY [--vary]`` (``--vary``: answers that differ per request, for a recipe run)."""

    async def main() -> None:
        server = await asyncio.start_server(
            lambda r, w: _serve_one(r, w, latency, vary), "127.0.0.1", port, backlog=1024
        )
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------- the clients


def run_prefdata(url: str, concurrency: int, requests: int) -> float:
    from prefdata.generate.base import GenerationConfig
    from prefdata.generate.openai_backend import OpenAIBackend

    backend = OpenAIBackend(url, "m", concurrency=concurrency, api_key_env=None, max_retries=0)
    chats = [[{"role": "user", "content": f"question {i}"}] for i in range(requests)]
    seeds = [[i] for i in range(requests)]
    backend.chat(chats[: concurrency * 2], GenerationConfig(max_tokens=4), seeds[: concurrency * 2])
    t = time.perf_counter()
    results = backend.chat(chats, GenerationConfig(max_tokens=4), seeds)
    seconds = time.perf_counter() - t
    backend.close()
    assert all(r.error is None for r in results), [r.error for r in results if r.error][:3]
    return requests / seconds


SDK_CLIENT = r"""
import asyncio, sys, time
import httpx2
from openai import AsyncOpenAI

url, concurrency, requests = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

async def main():
    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    client = AsyncOpenAI(base_url=url, api_key="x", max_retries=0,
                         http_client=httpx2.AsyncClient(limits=limits, timeout=60))
    gate = asyncio.Semaphore(concurrency)

    async def one(i):
        async with gate:
            r = await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": f"question {i}"}],
                max_tokens=4, seed=i)
            return r.choices[0].message.content

    await asyncio.gather(*(one(i) for i in range(concurrency * 2)))  # warm the pool
    t = time.perf_counter()
    out = await asyncio.gather(*(one(i) for i in range(requests)))
    seconds = time.perf_counter() - t
    assert all(x == "ok" for x in out)
    print(requests / seconds)

asyncio.run(main())
"""


def run_sdk(python: str, url: str, concurrency: int, requests: int) -> float:
    done = subprocess.run(
        [python, "-c", SDK_CLIENT, url, str(concurrency), str(requests)],
        capture_output=True, text=True, timeout=600, check=True,
    )  # fmt: skip
    return float(done.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=5000)
    p.add_argument("--concurrency", type=int, nargs="+", default=[8, 32, 64, 128, 256])
    p.add_argument("--latency", type=float, default=0.0, help="seconds the server waits")
    p.add_argument("--sdk-python", default="/tmp/oai-venv/bin/python")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds (best kept)")
    args = p.parse_args()
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port), str(args.latency)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        time.sleep(1.0)
        have_sdk = os.path.exists(args.sdk_python)
        if not have_sdk:
            print(f"(no SDK venv at {args.sdk_python}: prefdata only; see the docstring)")
        print(f"{args.requests:,} requests, server latency {args.latency * 1000:.0f} ms, "
              f"{os.cpu_count()} CPUs, best of {args.rounds} alternating rounds")  # fmt: skip
        print("| concurrency | prefdata req/s | SDK req/s | prefdata / SDK | ideal req/s | "
              "prefdata / ideal |")  # fmt: skip
        print("|---:|---:|---:|---:|---:|---:|")
        for c in args.concurrency:
            ours, sdk = 0.0, 0.0
            for _ in range(args.rounds):
                ours = max(ours, run_prefdata(url, c, args.requests))
                if have_sdk:
                    sdk = max(sdk, run_sdk(args.sdk_python, url, c, args.requests))
            ideal = c / args.latency if args.latency else float("nan")
            ratio = f"{ours / sdk:.2f}" if sdk else ""
            vs_ideal = f"{ours / ideal:.2f}" if args.latency else ""
            ideal_s = f"{ideal:,.0f}" if args.latency else ""
            sdk_s = f"{sdk:,.0f}" if sdk else ""
            print(f"| {c} | {ours:,.0f} | {sdk_s} | {ratio} | {ideal_s} | {vs_ideal} |", flush=True)
    finally:
        server.terminate()
        server.wait()
    return 0


if __name__ == "__main__":
    if len(sys.argv) in (4, 5) and sys.argv[1] == "--serve":
        if sys.argv[4:] not in ([], ["--vary"]):
            sys.exit(f"bench_http.py --serve PORT LATENCY [--vary]: unknown {sys.argv[4]!r}")
        serve(int(sys.argv[2]), float(sys.argv[3]), vary=sys.argv[4:] == ["--vary"])
    else:
        sys.exit(main())
