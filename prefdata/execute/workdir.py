"""The work directory of a checkpointed run: its layout, housekeeping (the lock, temp files),
reading back what it holds, and the start of every run (:func:`begin_run`). The manifest
is :mod:`prefdata.execute.manifest`, the input plan :mod:`prefdata.execute.inputs`.

Layout (the local executor writes it; the Ray executor writes the same)::

    workdir/
      manifest.json                          what is done (the only source of truth)
      .lock                                  held (flock) by the one process running
      input/shard-00000.arrow ...            only when the input had to be copied (below)
      stages/<ii>-<Stage>-<key>/shard-00000.arrow              rows a stage kept (if stored)
      stages/<ii>-<Stage>-<key>/rejects/shard-00000.arrow      rows it rejected (REJECTS_SCHEMA)

``<ii>`` is the stage's position, ``<key>`` its chained fingerprint
(:func:`prefdata.pipeline.stage_keys`): a changed config changes the key of that stage and
of every stage after it, so those write into new folders and recompute, while the earlier
stages' folders are reused as they are. Folders of keys no longer in the pipeline stay (a
config switched back is free) until the input changes or the folder is deleted by hand.

The input: Parquet files are read where they are. The manifest records each shard as
pieces of the files' row groups (``input.pieces``: ``[file, row_group, start, rows]``),
computed from the footers, so nothing is copied and a shard is read by decoding its row
groups (the local executor reads shards in order and decodes each row group once; a Ray
worker keeps the last row group it decoded). A table, a pipeline with no
stage (its output is the input shards) and row groups too big to hold are cut into
``input/shard-*.arrow`` instead.

>>> info = open_workdir("/path/to/workdir")  # doctest: +SKIP
>>> info.funnel.summary(), info.outputs[:1]  # doctest: +SKIP
('Tag: 200 in -> 200 out, 0 rejected; ...', [PosixPath('.../shard-00000.arrow')])
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from prefdata.execute.inputs import (
    check_whole_input_fits,
    choose_shard_rows,
    prepare_input,
    resolve_source,
    source_schema,
)
from prefdata.execute.manifest import MANIFEST, Manifest
from prefdata.ids import digest
from prefdata.io.shards import read_files
from prefdata.pipeline import Funnel, Pipeline
from prefdata.schema import empty_rejects

# --------------------------------------------------------------------------- housekeeping


def clean_temp_files(workdir: Path) -> int:
    """Remove temp files a killed write left behind (``.<name>.<random>.tmp``)."""
    n = 0
    for p in Path(workdir).rglob(".*.tmp"):
        if p.is_file():
            p.unlink(missing_ok=True)
            n += 1
    return n


class WorkdirBusy(RuntimeError):
    """Another process holds the work directory (a run in progress)."""


@contextlib.contextmanager
def workdir_lock(workdir: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``workdir/.lock`` (the kernel drops it when the
    process dies, so a killed run leaves nothing to recover)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, single use is on the caller
        yield
        return
    with open(Path(workdir) / ".lock", "a+b") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WorkdirBusy(f"work directory {workdir} is in use by another run") from None
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def check_workdir(workdir: Path) -> None:
    """Refuse a non-empty folder that is not a work directory (we delete inside it)."""
    if workdir.exists() and not workdir.is_dir():
        raise NotADirectoryError(f"work directory {workdir} is a file")
    if workdir.is_dir() and not (workdir / MANIFEST).exists():
        strays = [
            p.name
            for p in workdir.iterdir()
            if p.name != ".lock" and not (p.name.startswith(".") and p.name.endswith(".tmp"))
        ]
        if strays:
            raise ValueError(
                f"{workdir} is not empty and has no {MANIFEST}: not a prefdata work directory "
                f"(found {sorted(strays)[:5]}); use an empty or new folder"
            )


# --------------------------------------------------------------------------- reading back


@dataclass
class WorkdirInfo:
    """What a work directory holds, from its manifest: the latest run's stages, the funnel
    over finished shards, and the Parquet files of outputs and rejects.

    ``outputs``: the last stage's finished shards, in shard order (the input shards when
    the pipeline has no stages). ``rejects``: every stage's rejects files, stage by stage.
    ``stages``: one JSON-friendly dict per stage (index, name, key, fingerprint, config,
    dir, shards_done, num_shards, rows_in, rows_out, rows_rejected).
    """

    path: Path
    input: dict[str, Any] | None
    stages: list[dict[str, Any]]
    funnel: Funnel
    outputs: list[Path]
    rejects: list[Path]
    complete: bool
    manifest: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def num_shards(self) -> int:
        return len(self.input["shards"]) if self.input else 0

    @property
    def identity(self) -> str | None:
        """Digest of the finished outputs: the stage keys and the input's content digest
        (what the outputs are a function of); None while the run is unfinished or its
        input has no digest yet."""
        input_digest = (self.input or {}).get("digest")
        if input_digest is None or not self.complete:
            return None
        return digest("segment", self.manifest.get("pipeline", []), input_digest)

    def read(self) -> pa.Table:
        """The finished output shards, concatenated (pool tables conformed)."""
        if not self.outputs:
            raise FileNotFoundError(f"{self.path}: no finished output shards")
        return read_files(list(self.outputs))

    def read_rejects(self) -> pa.Table:
        """All rejects of finished shards, stage by stage then shard by shard."""
        return read_files(list(self.rejects)) if self.rejects else empty_rejects()


def open_workdir(path: str | os.PathLike) -> WorkdirInfo:
    """Read a work directory's manifest (no shard data is read).

    >>> info = open_workdir("runs/demo")  # doctest: +SKIP
    >>> info.complete, len(info.outputs), info.funnel.to_list()[0]["rows_in"]  # doctest: +SKIP
    (True, 40, 200)
    """
    path = Path(path)
    if not (path / MANIFEST).exists():
        raise FileNotFoundError(f"{path}: no {MANIFEST}; not a prefdata work directory")
    manifest = Manifest.load(path)
    inp = manifest.input
    num_shards = len(inp["shards"]) if inp else 0
    stages, funnel, rejects = [], Funnel(), []
    for key in manifest.data["pipeline"]:
        rec = manifest.stage(key)
        shards = sorted(int(s) for s in rec["shards"])
        counts = [rec["shards"][f"{s:05d}"] for s in shards]
        totals = {c: sum(x[c] for x in counts) for c in ("rows_in", "rows_out", "rows_rejected")}
        funnel.add(rec["name"], totals["rows_in"], totals["rows_out"], totals["rows_rejected"])
        rejects.extend(manifest.rejects_path(key, s) for s in shards)
        stages.append(
            {
                "index": rec["index"],
                "name": rec["name"],
                "key": key,
                "fingerprint": rec["fingerprint"],
                "config": rec["config"],
                "dir": rec["dir"],
                "shards_done": len(shards),
                "num_shards": num_shards,
                **totals,
            }
        )
    if manifest.data["pipeline"]:
        last = manifest.data["pipeline"][-1]
        done = sorted(int(s) for s in manifest.stage(last)["shards"])
        outputs = [manifest.output_path(last, s) for s in done]
    else:
        outputs = [manifest.input_path(s) for s in range(num_shards)]
    complete = inp is not None and all(s["shards_done"] == num_shards for s in stages)
    return WorkdirInfo(path, inp, stages, funnel, outputs, rejects, complete, manifest.data)


@contextlib.contextmanager
def begin_run(
    workdir: Path, pipeline: Pipeline, source: Any, shard_rows: int | None
) -> Iterator[tuple[Manifest, list[str], list[int]]]:
    """What every executor does before the work: check the stages' columns against the
    source, lock the work directory, clear stray temp files, shard the input (once; None
    rows per shard: :func:`choose_shard_rows`) and record the pipeline in the manifest.
    Yields (manifest, stage keys, rows per shard)."""
    src = resolve_source(source)
    pipeline.check(source_schema(src))
    check_workdir(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    with workdir_lock(workdir):
        clean_temp_files(workdir)
        manifest = Manifest.load(workdir)
        if shard_rows is None:
            shard_rows = choose_shard_rows(pipeline.stages, src, manifest)
        try:
            # with no stage the output is the input shards, so they must be files
            shard_counts = prepare_input(
                manifest,
                src,
                shard_rows,
                copy=not pipeline.stages,
                background=not any(stage.costly for stage in pipeline.stages),
            )
            check_whole_input_fits(pipeline.stages, len(shard_counts))
            keys = pipeline.keys()
            for i, (stage, key) in enumerate(zip(pipeline.stages, keys, strict=True)):
                manifest.add_stage(i, stage.name, key, stage.fingerprint, stage.config())
            manifest.data["pipeline"] = keys
            manifest.save()
            yield manifest, keys, shard_counts
        except Exception:  # a failed run is resumed too: it waits for the hash
            if manifest.input is None:  # the input was not planned: nothing to resume
                manifest.cancel_digest()
            else:
                manifest.settle_digest()
                manifest.save()
            raise
        except BaseException:  # Ctrl-C: stop at once (a rerun replans a cheap pipeline)
            manifest.cancel_digest()
            if manifest.input is not None:
                manifest.save()
            raise
        manifest.settle_digest()
        manifest.save()


__all__ = [
    "WorkdirBusy",
    "WorkdirInfo",
    "begin_run",
    "check_workdir",
    "clean_temp_files",
    "open_workdir",
    "workdir_lock",
]
