"""Bounded, ordered thread pools for the executors' own passes (ingest, fits): work runs on
a few threads (the Arrow, polars and DuckDB kernels release the GIL), results come back in
submission order, and at most ``workers + 1`` jobs are in flight, so memory stays a few
batches.

>>> list(ordered(((k, lambda k=k: k * k) for k in range(4)), workers=2))
[(0, 0), (1, 1), (2, 4), (3, 9)]
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any


def workers(limit: int = 4) -> int:
    """Threads for a pass: the cores this process may use, at most ``limit``."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(limit, cores or 1))


def ordered(
    jobs: Iterator[tuple[Any, Callable[[], Any]]], workers: int, name: str = "prefdata-pass"
) -> Iterator[tuple]:
    """Run ``(key, fn)`` jobs on ``workers`` threads, at most ``workers + 1`` in flight,
    and yield ``(key, result)`` in job order."""
    with ThreadPoolExecutor(workers, thread_name_prefix=name) as pool:
        pending: deque = deque()
        for key, fn in jobs:
            pending.append((key, pool.submit(fn)))
            while len(pending) > workers:
                k, f = pending.popleft()
                yield k, f.result()
        while pending:
            k, f = pending.popleft()
            yield k, f.result()


__all__ = ["ordered", "workers"]
