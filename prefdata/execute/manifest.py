"""The manifest of a work directory: what is done, written atomically.

The manifest (``manifest.json``)::

    {"format": 1,
     "input": {"digest": ..., "shard_rows": 10000, "num_rows": ..., "shards": [rows, ...],
               "sources": [...], "pieces": [[[file, group, start, rows], ...], ...]},
     "pipeline": [key, ...],                        the stages of the latest run, in order
     "stages": {key: {"index", "name", "fingerprint", "config", "dir",
                      "shards": {"00000": {"rows_in", "rows_out", "rows_rejected"}}}}}

A shard record with ``"stored": false`` is done but kept only its rejects (a cheap stage
under ``checkpoint="auto"``).

Why JSON and not DuckDB: one process writes it (the lock), and a whole-file rewrite to a
temp file then ``os.replace`` is atomic, so after a crash at any instant the manifest is
either the old or the new one, never torn; there is no lock file or WAL to recover, and a
person can read it. It stays small (one entry per shard and stage).

The rules that make a killed run resumable with every row exactly once:

- a shard is done for a stage only when its rejects file (and its output file, when
  stored) were renamed into place *and* the manifest records it, with the files' sizes;
  a file without a record is recomputed and overwritten (stages are deterministic, so
  this is idempotent), a record without its file, or with a file of another size (cut
  short since), too;
- a rerun starts each shard at :meth:`Manifest.resume_point`: the first stage not done,
  moved back to just after the last stored output (or the input) before it;
- the input is planned once, keyed by a content digest of the source and ``shard_rows``,
  and the digest is checked at every start: a different digest (a file rewritten in
  place, a different table) resets the manifest and removes every shard, so everything
  recomputes; the same bytes at another path resume as they are (a fresh run of a
  pipeline with no costly stage hashes its input on a background thread and records the
  digest when it is done, also when a stage fails; a run killed or interrupted before that
  has ``"digest": null`` and its rerun starts over, as when a file changed while it was
  hashed);
- temp files left by a killed write (``.*.tmp``) are removed at the start of the next run.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from prefdata.io.atomic import atomic_path

if TYPE_CHECKING:
    from prefdata.execute.inputs import BackgroundDigest

MANIFEST = "manifest.json"
FORMAT = 1
INPUT_DIR = "input"
STAGES_DIR = "stages"
REJECTS_DIR = "rejects"

Source = str | os.PathLike | Sequence[str | os.PathLike] | pa.Table


def shard_name(shard: int) -> str:
    """``shard-00042.arrow`` (an Arrow IPC file, :func:`~prefdata.io.shards.write_shard`).

    >>> shard_name(42)
    'shard-00042.arrow'
    """
    return f"shard-{shard:05d}.arrow"


def stage_dir_name(index: int, name: str, key: str) -> str:
    """``<ii>-<Stage>-<key>``, relative to ``workdir/stages``: the name before any
    ``[...]`` label (a generator may be a path), in characters safe in a file name.

    >>> stage_dir_name(1, "Filter", "ab12"), stage_dir_name(0, "Sample[/m/q:7b]", "cd")
    ('01-Filter-ab12', '00-Sample-cd')
    """
    base = re.sub(r"[^A-Za-z0-9_.]+", "_", name.split("[")[0]).strip("_.")[:60] or "stage"
    return f"{index:02d}-{base}-{key}"


def dumps_manifest(obj: dict[str, Any]) -> str:
    """JSON with one line per top-level key and per stage: readable, and encoded by the C
    encoder (``indent`` would force the pure-Python one, 3x slower on big manifests).

    >>> print(dumps_manifest({"format": 1, "stages": {"k": {"shards": {}}}}), end="")
    {
    "format": 1,
    "stages": {
     "k": {"shards": {}}
    }
    }
    """

    def line(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False)

    parts = []
    for key, value in obj.items():
        if isinstance(value, dict) and value and key == "stages":
            body = ",\n".join(f" {line(k)}: {line(v)}" for k, v in value.items())
            parts.append(f"{line(key)}: {{\n{body}\n}}")
        else:
            parts.append(f"{line(key)}: {line(value)}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def file_size(path: Path) -> int:
    """A file's size, -1 when it is not there: what a resumed run compares with the size
    it recorded (work-directory files are not synced to disk, :mod:`prefdata.io.atomic`).

    >>> file_size(Path("/nonexistent/shard-00000.arrow"))
    -1
    """
    try:
        return path.stat().st_size
    except OSError:
        return -1


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write the manifest atomically (:func:`~prefdata.io.atomic.atomic_path`; a
    work-directory file, not synced to disk)."""
    text = dumps_manifest(obj)
    atomic_path(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), durable=False)


class Manifest:
    """The manifest of a work directory, in memory; :meth:`save` writes it atomically."""

    def __init__(self, workdir: Path, data: dict[str, Any] | None = None) -> None:
        self.workdir = Path(workdir)
        self.data = data if data is not None else self.empty()
        self.pending_digest: BackgroundDigest | None = None

    @staticmethod
    def empty() -> dict[str, Any]:
        return {"format": FORMAT, "input": None, "pipeline": [], "stages": {}}

    @classmethod
    def load(cls, workdir: str | os.PathLike) -> Manifest:
        path = Path(workdir) / MANIFEST
        if not path.exists():
            return cls(Path(workdir))
        start_over = f"delete the work directory {workdir} to start over"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path} is damaged ({e}); {start_over}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            got = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"{path}: manifest format {got!r}, expected {FORMAT}; {start_over}")
        missing = [k for k in ("input", "pipeline", "stages") if k not in data]
        if missing:
            raise ValueError(f"{path} lacks {missing}; {start_over}")
        return cls(Path(workdir), data)

    def save(self) -> None:
        """Write the manifest, with the input digest once its background hash is done."""
        self.settle_digest(wait=False)
        write_json_atomic(self.workdir / MANIFEST, self.data)

    def settle_digest(self, *, wait: bool = True) -> None:
        """Put the digest of a freshly planned input in place once its background hash is
        done (``wait=False``: only if it already is). Until then, or when the hash could
        not vouch for the planned bytes, the input records ``"digest": null``, which a
        rerun treats as a changed input."""
        pending = self.pending_digest
        if not wait and self.data["input"] is None:
            return  # no plan to put it in yet: a save before planning must not drop it
        if pending is not None and (wait or pending.done.is_set()):
            pending.done.wait()
            if self.data["input"] is not None:
                self.data["input"]["digest"] = pending.digest
            self.pending_digest = None

    def cancel_digest(self) -> None:
        """Stop a background hash (a failed run does not wait for it)."""
        if self.pending_digest is not None:
            self.pending_digest.stop.set()
            self.settle_digest(wait=False)

    @property
    def input(self) -> dict[str, Any] | None:
        return self.data["input"]

    def stage(self, key: str) -> dict[str, Any]:
        return self.data["stages"][key]

    def add_stage(self, index: int, name: str, key: str, fingerprint: str, config: Any) -> None:
        """Register a stage (kept when already there: its finished shards stay valid)."""
        self.data["stages"].setdefault(
            key,
            {
                "index": index,
                "name": name,
                "fingerprint": fingerprint,
                "config": json.loads(json.dumps(config, sort_keys=True, default=str)),
                "dir": f"{STAGES_DIR}/{stage_dir_name(index, name, key)}",
                "shards": {},
            },
        )

    def done(self, key: str, shard: int) -> dict[str, int] | None:
        """The counts recorded for ``shard`` of stage ``key``, or None when not done."""
        return self.data["stages"][key]["shards"].get(f"{shard:05d}")

    def record(
        self,
        key: str,
        shard: int,
        rows_in: int,
        rows_out: int,
        rows_rejected: int,
        stored: bool = True,
    ) -> None:
        """Record a (stage, shard) as done; ``stored=False``: only its rejects were kept.
        The sizes of its files are kept too, so a file damaged since (cut short by a full
        disk, copied in part) is noticed and the shard computed again."""
        rec = {"rows_in": rows_in, "rows_out": rows_out, "rows_rejected": rows_rejected}
        if not stored:
            rec["stored"] = False
        rec["bytes"] = self._sizes(key, shard, stored)
        self.data["stages"][key]["shards"][f"{shard:05d}"] = rec

    def _sizes(self, key: str, shard: int, stored: bool) -> list[int | None]:
        """[output file size (None when not stored), rejects file size]; -1 for a file
        that is not there."""
        out = file_size(self.output_path(key, shard)) if stored else None
        return [out, file_size(self.rejects_path(key, shard))]

    def is_done(self, key: str, shard: int) -> bool:
        """Recorded, with its rejects file, and its output file unless it was not stored,
        each of the size recorded (a record without sizes, from an earlier version: the
        files exist)."""
        rec = self.done(key, shard)
        if rec is None:
            return False
        stored = rec.get("stored", True)
        now = self._sizes(key, shard, stored)
        if now[1] < 0 or (stored and now[0] < 0):
            return False
        return "bytes" not in rec or rec["bytes"] == now

    def resume_point(self, keys: Sequence[str], shard: int) -> int:
        """The first stage to run on ``shard``: every stage before it is done and its input
        is at hand (the input shard, or the stored output of the stage before). Stages
        between a stored output and the first unfinished stage run again (stages are
        deterministic, so their rejects and counts come out the same). ``len(keys)`` when
        the shard is finished (its last stage done with its output stored).

        >>> m = Manifest(Path("/nonexistent"))
        >>> m.data["stages"] = {k: {"dir": k, "shards": {}} for k in "abc"}
        >>> m.resume_point(["a", "b", "c"], 0)
        0
        """
        done = [self.is_done(k, shard) for k in keys]  # each record and file checked once
        # done with its output file in place: the next stage can start from it
        kept = [
            d and self.done(k, shard).get("stored", True) for k, d in zip(keys, done, strict=True)
        ]
        if keys:
            done[-1] = kept[-1]
        i = done.index(False) if False in done else len(keys)
        if i == len(keys):
            return i
        while i > 0 and not kept[i - 1]:
            i -= 1
        return i

    def stage_dir(self, key: str) -> Path:
        return self.workdir / self.data["stages"][key]["dir"]

    def output_path(self, key: str, shard: int) -> Path:
        return self.stage_dir(key) / shard_name(shard)

    def rejects_path(self, key: str, shard: int) -> Path:
        return self.stage_dir(key) / REJECTS_DIR / shard_name(shard)

    def input_path(self, shard: int) -> Path:
        return self.workdir / INPUT_DIR / shard_name(shard)


__all__ = [
    "FORMAT",
    "INPUT_DIR",
    "MANIFEST",
    "REJECTS_DIR",
    "STAGES_DIR",
    "Manifest",
    "Source",
    "dumps_manifest",
    "shard_name",
    "stage_dir_name",
    "file_size",
    "write_json_atomic",
]
