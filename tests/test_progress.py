"""Progress bars: on a terminal only, and drawn on a pseudo-terminal that reports no size
(``script``, some CI runners, ``docker exec``), where tqdm alone draws an empty bar or none
(it hides bars below the last of 0 rows)."""

from __future__ import annotations

import io
import os
import select
import subprocess
import sys
import time

import pytest

from prefdata.progress import progress_bar

pty = pytest.importorskip("pty")  # POSIX

CODE = (
    "from prefdata.progress import progress_bar\n"
    "with progress_bar(10, desc='demo') as bar:\n"
    "    bar.update(10)\n"
)


def _on_a_pty(code: str) -> str:
    """What ``code`` writes to a fresh pseudo-terminal (whose size is 0 x 0)."""
    main, child = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=child, stderr=child)
    os.close(child)
    out, deadline = b"", time.monotonic() + 60
    while time.monotonic() < deadline:
        if not select.select([main], [], [], 1.0)[0]:
            continue
        try:
            data = os.read(main, 4096)
        except OSError:  # the child closed its side
            break
        if not data:
            break
        out += data
    os.close(main)
    assert proc.wait(timeout=60) == 0
    return out.decode("utf-8", "replace")


def test_a_terminal_without_a_size_still_shows_the_bar():
    main, child = pty.openpty()
    try:
        assert os.get_terminal_size(main).columns == 0  # the case under test
    finally:
        os.close(main), os.close(child)
    out = _on_a_pty(CODE)
    assert "demo: 100%" in out and "10/10" in out and "rows/s" in out


def test_no_bar_off_a_terminal():
    stream = io.StringIO()
    with progress_bar(10, desc="demo", stream=stream) as bar:
        bar.update(10)
    assert stream.getvalue() == ""
