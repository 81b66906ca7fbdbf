"""A run's input: resolving the source, its content digest (in the background for cheap
pipelines), planning shards as pieces of the input files' row groups (or copied shard
files), and reading them back; how many rows a shard gets.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from prefdata.execute.manifest import (
    FORMAT,
    INPUT_DIR,
    MANIFEST,
    STAGES_DIR,
    Manifest,
    Source,
    file_size,
)
from prefdata.io.parquet import from_parquet_layout, parquet_files
from prefdata.io.shards import TableFile, read_files, read_schema, write_shard


class KnownFiles(list):
    """Table files whose content digest their producer already holds: an ingest's pool
    shards are a function of the ingest's own digest (its source, layout and options), a
    finished run's outputs of its stages and input, so a run over them hashes nothing
    (:func:`source_digest` uses ``digest``). The files' size, mtime and inode are taken
    when it is made: a file rewritten since (a rerun of its producer on changed input) is
    hashed byte by byte as any other.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "shard-00000.arrow"
    >>> _ = path.write_bytes(b"pools")
    >>> files = KnownFiles([path], digest="0f3a")
    >>> files.digest, files.current()
    ('0f3a', True)
    """

    def __init__(self, paths: Sequence[str | os.PathLike], digest: str) -> None:
        super().__init__(Path(p) for p in paths)
        self.digest = digest
        self.stamps = _stamps(self)

    def current(self) -> bool:
        """Whether every file is still the one the digest describes."""
        try:
            return _stamps(self) == self.stamps
        except OSError:
            return False


def resolve_source(source: Source) -> pa.Table | list[Path]:
    """A table as is, or the table files (Parquet, or the executor's Arrow IPC shards) of
    a path, a folder (``*.parquet``, else ``*.arrow``, sorted) or a list of paths
    (:func:`~prefdata.io.parquet.parquet_files`); :class:`KnownFiles` as they are."""
    if isinstance(source, pa.Table | KnownFiles):
        return source
    return parquet_files(source)


def source_digest(
    source: pa.Table | list[Path], shard_rows: int, stop: threading.Event | None = None
) -> str | None:
    """Content digest of the input and the shard size (which fixes the shard boundaries).

    Files are hashed byte by byte (streamed); a table by its Arrow IPC bytes, batch by batch.
    SHA-256 (hardware-accelerated on current x86 and ARM CPUs: 1.4 GB/s here, 2.8x
    BLAKE2b), cut to 32 hex digits. None when ``stop`` is set before the end.
    :class:`KnownFiles` are not read while :meth:`~KnownFiles.current`: their producer's
    digest stands for their bytes.
    """
    h = hashlib.sha256(f"prefdata-input/{FORMAT}/{shard_rows}".encode())
    if isinstance(source, KnownFiles) and source.current():
        h.update(f"known/{source.digest}".encode())
        return h.hexdigest()[:32]
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


def _stamps(source: pa.Table | list[Path]) -> list[tuple[int, int, int]]:
    """(size, mtime_ns, inode) of each input file: a rewrite (in place, or a new file
    renamed over it) shows here."""
    if isinstance(source, pa.Table):
        return []
    return [(st.st_size, st.st_mtime_ns, st.st_ino) for st in map(os.stat, source)]


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
    schema = source.schema if isinstance(source, pa.Table) else read_schema(source[0])
    return _conformed(schema.empty_table()).schema


def _batches(source: pa.Table | list[Path], rows: int) -> Iterator[pa.Table]:
    """Conformed pieces of at most ``rows`` rows; files are streamed batch by batch."""
    schema = source_schema(source)
    if isinstance(source, pa.Table):
        for start in range(0, source.num_rows, rows):
            yield _conformed(source.slice(start, rows))
        return
    for path in source:
        for piece in _file_pieces(TableFile(path), rows):
            piece = _conformed(piece)
            if not piece.schema.equals(schema):
                raise ValueError(
                    f"{path}: schema differs from the first input file's; "
                    f"expected {schema}, got {piece.schema}"
                )
            yield piece


BIG_ROW_GROUP = 256 << 20  # uncompressed bytes; larger row groups are streamed in batches


def _file_pieces(file: TableFile, rows: int) -> Iterator[pa.Table]:
    """A table file in pieces of at most ``rows`` rows, one row group in memory at a time.

    ``iter_batches`` reads ahead and held about the whole file's worth of buffers (265 MB for
    a 250 MB file of 1M pools, against 93 MB row group by row group, which is also 1.5x
    faster); row groups too big to hold are still streamed batch by batch.
    """
    for i in range(file.num_groups):
        if file.group_bytes(i) > BIG_ROW_GROUP:
            for batch in file.iter_batches(i, rows):
                yield pa.Table.from_batches([batch])
            continue
        group = file.read_group(i)
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
    files = [TableFile(p) for p in paths]
    for path, file in zip(paths, files, strict=True):
        got = _conformed(file.schema.empty_table()).schema
        if not got.equals(schema):
            raise ValueError(
                f"{path}: schema differs from the first input file's; expected {schema}, got {got}"
            )
    shards: list[list[list[int]]] = [[]]
    room = shard_rows
    for f, file in enumerate(files):
        for g in range(file.num_groups):
            if file.group_bytes(g) > BIG_ROW_GROUP:
                return None
            start, group_rows = 0, file.group_rows(g)
            while start < group_rows:
                if room == 0:
                    shards.append([])
                    room = shard_rows
                take = min(room, group_rows - start)
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
    ``copy=True`` are cut into ``workdir/input/shard-*.arrow`` instead.

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
    known = isinstance(source, KnownFiles) and source.current()
    fresh = done is None and background and not known
    digest = None if fresh else source_digest(source, shard_rows)
    if (
        done is not None
        and done["digest"] == digest
        and (("pieces" in done and not copy) or _copies_intact(manifest, done))
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
    else:
        manifest.data["input"]["bytes"] = [
            file_size(manifest.input_path(i)) for i in range(len(rows))
        ]
    return rows  # the caller saves the plan with its stages: until then a rerun replans


def _copies_intact(manifest: Manifest, done: dict[str, Any]) -> bool:
    """Every input copy is there, of the size recorded (they are not synced to disk: a
    machine's crash may cut one short; a record without sizes: the files exist)."""
    sizes = [file_size(manifest.input_path(i)) for i in range(len(done["shards"]))]
    return -1 not in sizes and done.get("bytes", sizes) == sizes


class RowGroupCache:
    """The last row group decoded, so shards read in order decode each row group once."""

    def __init__(self) -> None:
        self.key: tuple[str, int] | None = None
        self.table: pa.Table | None = None
        self.file: TableFile | None = None  # the last file read (one open at a time)
        self.footers: dict[str, Any] = {}  # Parquet footers, parsed once per file

    def get(self, path: str, group: int, threads: int | None = None) -> pa.Table:
        if self.key != (path, group):
            self.key, self.table = None, None  # free the old group before reading the next
            if self.file is None or str(self.file.path) != str(path):
                self.file = TableFile(path, metadata=self.footers.get(path))
                if self.file.footer is not None:
                    self.footers[path] = self.file.footer
            group_table = self.file.read_group(group, threads=threads)
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
            return read_files(self.manifest.input_path(shard))
        return read_pieces(self.manifest.input["sources"], pieces, self.cache, threads)


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
    - Otherwise, about 64 MiB of decoded input (from the Parquet footers, the sizes of an
      Arrow IPC file's record batches or the table's size), between 10,000 and 65,536
      rows. A run over the executor's own IPC shards (an ingest's pools) counts Arrow's
      in-memory bytes, about 15% above the Parquet footer's figure for pools.

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
        files = [TableFile(p) for p in source]
        rows = sum(f.num_rows for f in files)
        size = sum(f.group_bytes(g) for f in files for g in range(f.num_groups))
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


__all__ = [
    "BIG_ROW_GROUP",
    "CHEAP_SHARD_BYTES",
    "CHEAP_SHARD_ROWS",
    "COSTLY_SHARD_ROWS",
    "BackgroundDigest",
    "InputReader",
    "KnownFiles",
    "RowGroupCache",
    "check_whole_input_fits",
    "choose_shard_rows",
    "iter_shards",
    "lower_thread_priority",
    "plan_pieces",
    "prepare_input",
    "read_pieces",
    "resolve_source",
    "source_digest",
    "source_schema",
]
