"""The work directory of a checkpointed run: its layout, the manifest, the input plan.

Layout (the local executor writes it; the Ray executor writes the same)::

    workdir/
      manifest.json                          what is done (the only source of truth)
      .lock                                  held (flock) by the one process running
      input/shard-00000.parquet ...          only when the input had to be copied (below)
      stages/<ii>-<Stage>-<key>/shard-00000.parquet            rows a stage kept (if stored)
      stages/<ii>-<Stage>-<key>/rejects/shard-00000.parquet    rows it rejected (REJECTS_SCHEMA)

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
``input/shard-*.parquet`` instead.

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
  stored) were renamed into place *and* the manifest records it; a file without a record
  is recomputed and overwritten (stages are deterministic, so this is idempotent), a
  record without its file too;
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

>>> info = open_workdir("/path/to/workdir")  # doctest: +SKIP
>>> info.funnel.summary(), info.outputs[:1]  # doctest: +SKIP
('Tag: 200 in -> 200 out, 0 rejected; ...', [PosixPath('.../shard-00000.parquet')])
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from prefdata.io.atomic import atomic_path
from prefdata.io.parquet import (
    from_parquet_layout,
    parquet_files,
    read_parquet,
    read_row_group,
    write_shard,
)
from prefdata.pipeline import Funnel, Pipeline
from prefdata.schema import empty_rejects

MANIFEST = "manifest.json"
FORMAT = 1
INPUT_DIR = "input"
STAGES_DIR = "stages"
REJECTS_DIR = "rejects"

Source = str | os.PathLike | Sequence[str | os.PathLike] | pa.Table


def shard_name(shard: int) -> str:
    """``shard-00042.parquet``.

    >>> shard_name(42)
    'shard-00042.parquet'
    """
    return f"shard-{shard:05d}.parquet"


def stage_dir_name(index: int, name: str, key: str) -> str:
    """``<ii>-<Stage>-<key>``, relative to ``workdir/stages``.

    >>> stage_dir_name(1, "Filter", "ab12")
    '01-Filter-ab12'
    """
    return f"{index:02d}-{name}-{key}"


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


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write the manifest atomically (:func:`~prefdata.io.atomic.atomic_path`)."""
    atomic_path(path, lambda tmp: tmp.write_text(dumps_manifest(obj), encoding="utf-8"))


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
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != FORMAT:
            raise ValueError(f"{path}: manifest format {data.get('format')!r}, expected {FORMAT}")
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
        """Record a (stage, shard) as done; ``stored=False``: only its rejects were kept."""
        rec = {"rows_in": rows_in, "rows_out": rows_out, "rows_rejected": rows_rejected}
        if not stored:
            rec["stored"] = False
        self.data["stages"][key]["shards"][f"{shard:05d}"] = rec

    def is_done(self, key: str, shard: int) -> bool:
        """Recorded, with its rejects file, and its output file unless it was not stored."""
        rec = self.done(key, shard)
        return (
            rec is not None
            and self.rejects_path(key, shard).exists()
            and (not rec.get("stored", True) or self.output_path(key, shard).exists())
        )

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


# --------------------------------------------------------------------------- the input


def resolve_source(source: Source) -> pa.Table | list[Path]:
    """A table as is, or the Parquet files of a path, a folder (``*.parquet``, sorted) or
    a list of paths (:func:`~prefdata.io.parquet.parquet_files`)."""
    return source if isinstance(source, pa.Table) else parquet_files(source)


def source_digest(
    source: pa.Table | list[Path], shard_rows: int, stop: threading.Event | None = None
) -> str | None:
    """Content digest of the input and the shard size (which fixes the shard boundaries).

    Files are hashed byte by byte (streamed); a table by its Arrow IPC bytes, batch by batch.
    SHA-256 (hardware-accelerated on current x86 and ARM CPUs: 1.4 GB/s here, 2.8x
    BLAKE2b), cut to 32 hex digits. None when ``stop`` is set before the end.
    """
    h = hashlib.sha256(f"prefdata-input/{FORMAT}/{shard_rows}".encode())
    if isinstance(source, pa.Table):
        h.update(source.schema.serialize())
        for batch in source.to_batches():
            if stop is not None and stop.is_set():
                return None
            h.update(batch.serialize())
        return h.hexdigest()[:32]
    for path in source:
        part = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                if stop is not None and stop.is_set():
                    return None
                part.update(block)
        h.update(part.digest())
    return h.hexdigest()[:32]


def _stamps(source: pa.Table | list[Path]) -> list[tuple[int, int]]:
    """(size, mtime_ns) of each input file: a rewrite while a run hashes it shows here."""
    if isinstance(source, pa.Table):
        return []
    return [(st.st_size, st.st_mtime_ns) for st in (os.stat(p) for p in source)]


def lower_thread_priority(nice: int) -> None:
    """Set the calling thread's nice value to ``nice`` (Linux: a thread's id is a task
    id; elsewhere, or where not allowed, nothing changes), so work that can wait runs on
    the cores the stages leave idle. Threads it starts inherit the priority: use it only
    on threads that start none (the digest: hashlib over file bytes or IPC buffers)."""
    try:
        if sys.platform == "linux":
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except Exception:  # noqa: BLE001 - not allowed here: normal priority
        pass


class BackgroundDigest:
    """:func:`source_digest` of a freshly planned input on a daemon thread, at low priority
    (Linux), so the first shards' decoding and stages get the cores; the run records it
    when it is done. ``digest`` stays None when the hash was stopped, failed, or the files
    changed (size or mtime) since they were planned, so a rerun never trusts it wrongly."""

    def __init__(
        self, source: pa.Table | list[Path], shard_rows: int, stamps: list[tuple[int, int]]
    ) -> None:
        self.digest: str | None = None
        self.stop, self.done = threading.Event(), threading.Event()
        thread = threading.Thread(
            target=self._run, args=(source, shard_rows, stamps), name="prefdata-digest"
        )
        thread.daemon = True  # a failed or interrupted run does not wait for it at exit
        thread.start()

    def _run(self, source, shard_rows: int, stamps) -> None:
        lower_thread_priority(15)
        try:
            digest = source_digest(source, shard_rows, self.stop)
            if digest is not None and _stamps(source) == stamps:
                self.digest = digest
        except Exception:  # noqa: BLE001 - an unreadable file: no digest, a rerun replans
            pass
        finally:
            self.done.set()


def _conformed(table: pa.Table) -> pa.Table:
    return from_parquet_layout(table).replace_schema_metadata(None)


def source_schema(source: pa.Table | list[Path]) -> pa.Schema:
    """The conformed schema stages will see (from the first file's footer; no data read)."""
    schema = source.schema if isinstance(source, pa.Table) else pq.read_schema(source[0])
    return _conformed(schema.empty_table()).schema


def _batches(source: pa.Table | list[Path], rows: int) -> Iterator[pa.Table]:
    """Conformed pieces of at most ``rows`` rows; files are streamed batch by batch."""
    schema = source_schema(source)
    if isinstance(source, pa.Table):
        for start in range(0, source.num_rows, rows):
            yield _conformed(source.slice(start, rows))
        return
    for path in source:
        for piece in _file_pieces(pq.ParquetFile(path), rows):
            piece = _conformed(piece)
            if not piece.schema.equals(schema):
                raise ValueError(
                    f"{path}: schema differs from the first input file's; "
                    f"expected {schema}, got {piece.schema}"
                )
            yield piece


BIG_ROW_GROUP = 256 << 20  # uncompressed bytes; larger row groups are streamed in batches


def _file_pieces(file: pq.ParquetFile, rows: int) -> Iterator[pa.Table]:
    """A Parquet file in pieces of at most ``rows`` rows, one row group in memory at a time.

    ``iter_batches`` reads ahead and held about the whole file's worth of buffers (265 MB for
    a 250 MB file of 1M pools, against 93 MB row group by row group, which is also 1.5x
    faster); row groups too big to hold are still streamed batch by batch.
    """
    for i in range(file.num_row_groups):
        if file.metadata.row_group(i).total_byte_size > BIG_ROW_GROUP:
            for batch in file.iter_batches(batch_size=rows, row_groups=[i]):
                yield pa.Table.from_batches([batch])
            continue
        group = file.read_row_group(i)
        for start in range(0, group.num_rows, rows):
            yield group.slice(start, rows)


def iter_shards(source: pa.Table | list[Path], shard_rows: int) -> Iterator[pa.Table]:
    """The input cut into shards of exactly ``shard_rows`` rows (the last one shorter),
    across file boundaries, holding at most about two shards in memory.

    An empty input gives one empty shard, so every stage still runs once and the output
    has its schema (and DuckDB has a file to read).

    >>> [t.num_rows for t in iter_shards(pa.table({"prompt_id": list("abcde")}), 2)]
    [2, 2, 1]
    """
    if shard_rows < 1:
        raise ValueError(f"shard_rows must be >= 1, got {shard_rows}")
    pending: list[pa.Table] = []
    n = emitted = 0
    for piece in _batches(source, shard_rows):
        pending.append(piece)
        n += piece.num_rows
        while n >= shard_rows:
            joined = pa.concat_tables(pending)
            yield joined.slice(0, shard_rows)
            emitted += 1
            rest = joined.slice(shard_rows)
            pending, n = [rest], rest.num_rows
    if n or not emitted:
        yield pa.concat_tables(pending) if pending else source_schema(source).empty_table()


def plan_pieces(paths: list[Path], shard_rows: int) -> list[list[list[int]]] | None:
    """Shards as pieces of the source files' row groups, from the footers alone:
    ``[[file, row_group, start, length], ...]`` per shard, cut exactly as
    :func:`iter_shards` cuts them. None when a row group is too big to hold in memory
    (those inputs are copied into shards, streamed batch by batch).

    Raises ValueError when a file's schema differs from the first file's.
    """
    schema = source_schema(paths)
    files = [pq.ParquetFile(p) for p in paths]
    for path, file in zip(paths, files, strict=True):
        got = _conformed(file.schema_arrow.empty_table()).schema
        if not got.equals(schema):
            raise ValueError(
                f"{path}: schema differs from the first input file's; expected {schema}, got {got}"
            )
    shards: list[list[list[int]]] = [[]]
    room = shard_rows
    for f, file in enumerate(files):
        for g in range(file.num_row_groups):
            meta = file.metadata.row_group(g)
            if meta.total_byte_size > BIG_ROW_GROUP:
                return None
            start = 0
            while start < meta.num_rows:
                if room == 0:
                    shards.append([])
                    room = shard_rows
                take = min(room, meta.num_rows - start)
                shards[-1].append([f, g, start, take])
                start += take
                room -= take
    return shards


def prepare_input(
    manifest: Manifest,
    source: pa.Table | list[Path],
    shard_rows: int,
    *,
    copy: bool = False,
    background: bool = False,
) -> list[int]:
    """Plan the input's shards unless the manifest already holds this very input (same
    digest, every shard readable). Returns the rows per shard.

    Parquet files are read in place: the manifest records each shard as pieces of the
    files' row groups (``input.pieces``), nothing is copied, and the digest, checked at
    every start, guards against a changed file. A table, row groups too big to hold, or
    ``copy=True`` are cut into ``workdir/input/shard-*.parquet`` instead.

    A changed input resets the manifest and removes all shards first, so nothing computed
    from the old input can be mistaken for done.

    A fresh work directory of a pipeline with no costly stage (``background=True``) hashes
    its input on a background thread while the work starts (only a later run needs it);
    :meth:`Manifest.save` records it once done. A run killed before then leaves a null
    digest and its rerun starts over, which is cheap for such a pipeline; with a costly
    stage the hash comes first, so its outputs are never lost that way.
    """
    done = manifest.input
    stamps = _stamps(source)  # before the footers are read: the planned bytes
    fresh = done is None and background
    digest = None if fresh else source_digest(source, shard_rows)
    if (
        done is not None
        and done["digest"] == digest
        and (
            ("pieces" in done and not copy)
            or all(manifest.input_path(i).exists() for i in range(len(done["shards"])))
        )
    ):
        if "pieces" in done:  # the same bytes, possibly at another path now
            done["sources"] = [os.path.abspath(p) for p in source]
        return list(done["shards"])
    had_manifest = (manifest.workdir / MANIFEST).exists()
    manifest.data = Manifest.empty()
    if had_manifest:
        manifest.save()  # first forget, then delete: a crash in between leaves no false record
    if fresh:
        manifest.pending_digest = BackgroundDigest(source, shard_rows, stamps)
    for sub in (INPUT_DIR, STAGES_DIR):
        shutil.rmtree(manifest.workdir / sub, ignore_errors=True)
    pieces = None if copy or isinstance(source, pa.Table) else plan_pieces(source, shard_rows)
    if pieces is not None:
        rows = [sum(p[3] for p in shard) for shard in pieces]
    else:
        if not had_manifest:  # the folder must read as a work directory before files land
            manifest.save()
        rows = []
        for i, shard in enumerate(iter_shards(source, shard_rows)):
            write_shard(shard, manifest.input_path(i))
            rows.append(shard.num_rows)
    manifest.data["input"] = {
        "digest": digest,
        "shard_rows": shard_rows,
        "num_rows": sum(rows),
        "shards": rows,
        "sources": ["<pyarrow.Table>"]
        if isinstance(source, pa.Table)
        else [os.path.abspath(p) for p in source],
    }
    if pieces is not None:
        manifest.data["input"]["pieces"] = pieces
    return rows  # the caller saves the plan with its stages: until then a rerun replans


class RowGroupCache:
    """The last row group decoded, so shards read in order decode each row group once."""

    def __init__(self) -> None:
        self.key: tuple[str, int] | None = None
        self.table: pa.Table | None = None
        self.footers: dict[str, pq.FileMetaData] = {}  # parsed once per file

    def get(self, path: str, group: int, threads: int | None = None) -> pa.Table:
        if self.key != (path, group):
            self.key, self.table = None, None  # free the old group before reading the next
            if path not in self.footers:
                self.footers[path] = pq.ParquetFile(path).metadata
            group_table = read_row_group(path, group, metadata=self.footers[path], threads=threads)
            self.table = _conformed(group_table)
            self.key = (path, group)
        return self.table


def read_pieces(
    sources: Sequence[str],
    pieces: Sequence[Sequence[int]],
    cache: RowGroupCache | None = None,
    threads: int | None = None,
) -> pa.Table:
    """One shard from ``[[file, row_group, start, length], ...]`` pieces of ``sources``,
    conformed, exactly the rows :func:`iter_shards` would cut; row groups decoded on
    ``threads`` threads (see :func:`~prefdata.io.parquet.read_row_group`)."""
    if not pieces:  # the one empty shard of an empty input
        return source_schema([Path(sources[0])]).empty_table()
    cache = cache or RowGroupCache()
    return pa.concat_tables(
        cache.get(sources[f], g, threads).slice(start, n) for f, g, start, n in pieces
    )


class InputReader:
    """Reads a run's input shards: the shard files, or pieces of the source's row groups.

    >>> reader = InputReader(Manifest.load("runs/demo"))  # doctest: +SKIP
    >>> reader.read(0).num_rows  # doctest: +SKIP
    10000
    """

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self.cache = RowGroupCache()

    def pieces(self, shard: int) -> list[list[int]] | None:
        """The shard's pieces, or None when the input was copied into shard files."""
        inp = self.manifest.input
        return inp["pieces"][shard] if "pieces" in inp else None

    def describe(self, shard: int) -> str:
        """Where the shard comes from, for error messages."""
        pieces = self.pieces(shard)
        if pieces is None:
            return str(self.manifest.input_path(shard))
        sources = self.manifest.input["sources"]
        files = sorted({sources[f] for f, *_ in pieces})
        return f"row groups {[g for _, g, *_ in pieces]} of {', '.join(files)}"

    def read(self, shard: int, threads: int | None = None) -> pa.Table:
        pieces = self.pieces(shard)
        if pieces is None:
            return read_parquet(self.manifest.input_path(shard))
        return read_pieces(self.manifest.input["sources"], pieces, self.cache, threads)


# --------------------------------------------------------------------------- housekeeping


def clean_temp_files(workdir: Path) -> int:
    """Remove temp files a killed write left behind (``.<name>.<random>.tmp``)."""
    n = 0
    for p in Path(workdir).rglob(".*.tmp"):
        if p.is_file():
            p.unlink(missing_ok=True)
            n += 1
    return n


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
            raise RuntimeError(f"work directory {workdir} is in use by another run") from None
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

    def read(self) -> pa.Table:
        """The finished output shards, concatenated (pool tables conformed)."""
        if not self.outputs:
            raise FileNotFoundError(f"{self.path}: no finished output shards")
        return read_parquet(list(self.outputs))

    def read_rejects(self) -> pa.Table:
        """All rejects of finished shards, stage by stage then shard by shard."""
        return read_parquet(list(self.rejects)) if self.rejects else empty_rejects()


def open_workdir(path: str | os.PathLike) -> WorkdirInfo:
    """Read a work directory's manifest (no Parquet data is read).

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


__all__ = [
    "MANIFEST",
    "Manifest",
    "WorkdirInfo",
    "check_workdir",
    "choose_shard_rows",
    "clean_temp_files",
    "InputReader",
    "RowGroupCache",
    "iter_shards",
    "open_workdir",
    "plan_pieces",
    "prepare_input",
    "read_pieces",
    "resolve_source",
    "shard_name",
    "source_digest",
    "source_schema",
    "stage_dir_name",
    "workdir_lock",
]


# Rows per shard when the executor is given none: small shards for pipelines with a costly
# stage (the checkpoint unit of GPU work), up to one row group of our writer for cheap ones,
# whose per-shard costs (manifest, files, a few ms of Python per stage) dominate small shards.
COSTLY_SHARD_ROWS = 10_000
CHEAP_SHARD_ROWS = 64 * 1024
CHEAP_SHARD_BYTES = 64 << 20  # decoded input bytes per shard of a cheap pipeline


def choose_shard_rows(
    stages: Sequence[Any], source: pa.Table | list[Path], manifest: Manifest
) -> int:
    """Rows per shard for ``shard_rows=None``.

    - A work directory that already planned its input keeps its shard size, so a rerun
      (even with stages added) reuses what was computed.
    - A pipeline with a costly stage (:attr:`~prefdata.pipeline.Stage.costly`) gets
      10,000 rows, the unit a crash can lose.
    - Otherwise, about 64 MiB of decoded input (from the Parquet footers or the table's
      size), between 10,000 and 65,536 rows.

    >>> choose_shard_rows([], pa.table({"prompt_id": ["p"] * 3}), Manifest(Path("/nowhere")))
    65536
    """
    if manifest.input is not None and manifest.input.get("shard_rows"):
        return int(manifest.input["shard_rows"])
    if any(stage.costly for stage in stages):
        return COSTLY_SHARD_ROWS
    if isinstance(source, pa.Table):
        rows, size = source.num_rows, source.nbytes
    else:
        metas = [pq.ParquetFile(p).metadata for p in source]
        rows = sum(m.num_rows for m in metas)
        size = sum(m.row_group(g).total_byte_size for m in metas for g in range(m.num_row_groups))
    per_row = size / rows if rows else 1
    return int(min(CHEAP_SHARD_ROWS, max(COSTLY_SHARD_ROWS, CHEAP_SHARD_BYTES // max(per_row, 1))))


def check_whole_input_fits(stages: Sequence[Any], num_shards: int) -> None:
    """Refuse a stage that would fit dataset-level state on each shard by itself
    (:meth:`~prefdata.pipeline.Stage.fits_on_input`): its output would depend on
    ``shard_rows``. One shard is the whole input, so it may."""
    if num_shards <= 1:
        return
    for i, stage in enumerate(stages):
        if (what := stage.fits_on_input()) is not None:
            raise ValueError(
                f"stage {i} {stage.name} would fit {what} on each of the {num_shards} shards "
                "separately, so its output would depend on shard_rows; fit it over the whole "
                "input first and pass the result in"
            )


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
