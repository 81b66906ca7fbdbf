"""Atomic file writes: every file prefdata writes (shards, manifests, exports, cards) goes
through :func:`atomic_path`, so a reader or a killed process never sees half a file.

Durability: what a user keeps (exports, cards, reports) is synced to disk before it is
renamed into place. The work directory's files (shards, rejects, spills, fits, manifests)
are not: a killed process leaves each of them whole or absent either way, and a crash of
the machine can at worst cut one short (or leave it empty), which the resumed run
notices and computes again: the manifests record their files' sizes, and a fit that does
not load is fitted again. Syncing each of them took about a sixth of a 200k-pair run on
this project's disk (115 syncs, 1.5 s, in a 1.6M-row run).

>>> import tempfile
>>> out = Path(tempfile.mkdtemp()) / "a" / "note.txt"
>>> atomic_path(out, lambda p: p.write_text("done")).read_text()
'done'
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_path(
    path: str | os.PathLike, write: Callable[[Path], object], *, durable: bool = True
) -> Path:
    """Call ``write(tmp)`` on a temp file beside ``path`` (``.<name>.<random>.tmp``, which
    the executor clears after a crash), fsync it (``durable``; not for the work
    directory's files, see the module docstring), then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        if durable:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


__all__ = ["atomic_path"]
