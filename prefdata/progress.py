"""Progress bars on stderr, shared by the executors and (later) the samplers.

A bar shows the rate (``rows/s``, ``tokens/s``) and an ETA over a known total. It is off
when stderr is not a terminal (CI logs, pipes) unless asked for with ``enabled=True``, so
logs stay clean by default and a notebook or shell still sees it.

>>> import io
>>> with progress_bar(100, desc="demo", enabled=True, stream=io.StringIO()) as bar:
...     _ = bar.update(40)
...     bar.n
40
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

from tqdm import tqdm


def progress_enabled(enabled: bool | None = None, stream: TextIO | None = None) -> bool:
    """``enabled`` when given; otherwise whether ``stream`` (default stderr) is a terminal.

    >>> progress_enabled(True), progress_enabled(False)
    (True, False)
    """
    if enabled is not None:
        return bool(enabled)
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def _has_size(stream: TextIO) -> bool:
    """Whether ``stream`` is a terminal that reports its size: a pseudo-terminal without
    one (``script``, some CI runners, ``docker exec``) says 0 x 0, and tqdm then draws an
    empty bar, or none (it hides bars below the last of 0 rows)."""
    try:
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return size.columns > 0 and size.lines > 0


def progress_bar(
    total: int | float | None,
    *,
    desc: str = "",
    unit: str = "rows",
    initial: int | float = 0,
    enabled: bool | None = None,
    stream: TextIO | None = None,
) -> tqdm:
    """A tqdm bar on stderr with ``unit``/s and an ETA over ``total``.

    ``initial`` counts work already done (a resumed run): the rate and the ETA only cover
    what this process does. ``enabled=None`` shows the bar only on a terminal.
    """
    stream = sys.stderr if stream is None else stream
    sized = _has_size(stream)
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=bool(total and total >= 10_000),  # 1.2M rows, but 12/12 not 12.0/12.0
        initial=initial,
        file=stream,
        disable=not progress_enabled(enabled, stream),
        dynamic_ncols=sized,  # follow the terminal's size where it has one
        ncols=None if sized else 100,
        nrows=None if sized else 20,
        smoothing=0.1,
        mininterval=0.2,
    )


__all__ = ["progress_bar", "progress_enabled"]
