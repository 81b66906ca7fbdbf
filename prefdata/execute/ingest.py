"""Ingest inside the executor: a raw source in any layout, converted to pool shards in two
streamed, checkpointed passes, with memory bounded by a batch or a partition, never by the
input.

1. **read**: the source is read batch by batch (:func:`~prefdata.io.readers.read_batches`:
   Parquet row groups, JSON Lines by the 64 MiB of text), each batch becomes candidate
   entries (:func:`~prefdata.io.layouts.read_entries`, column-wise, ids in bulk) and the
   entries are hash-partitioned by prompt id into ``P`` spill files (Arrow IPC), so every
   prompt's entries land in one partition wherever its rows are in the input;
2. **build**: each partition's entries become one pool shard
   (:func:`~prefdata.io.layouts.build_pools`), pools in order of first appearance.

With one partition (a small input) both passes run in memory and write the one shard.
Rejects of both passes are written per batch and per partition; the funnel counts input
rows, like :func:`~prefdata.io.readers.read_pools`: ``read`` and ``layout:<name>``.

Layout of ``workdir/ingest``::

    manifest.json               the plan (digest of the source and options, P) and what is done
    spill/b00000-p00000.arrow   a batch's entries of one partition (removed when all is built)
    pools/shard-00000.arrow     the pool shard of partition 0
    rejects/read-00000.arrow    rows batch 0 could not read or convert
    rejects/build-00000.arrow   rows rejected while building partition 0

A batch or partition is recorded only after its files are in place (and a partition only
after every batch), so a killed run resumes where it stopped, recomputing nothing
finished; the outcome is byte-identical to an uninterrupted run. A changed source, layout,
options or partition count starts the ingest over.

>>> source = Ingest("data.parquet", "long", score_cols=["rm"])  # doctest: +SKIP
>>> LocalExecutor("work/").run(stages, source)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from prefdata.execute.inputs import source_digest
from prefdata.execute.manifest import MANIFEST, file_size, shard_name, write_json_atomic
from prefdata.execute.threads import ordered, workers
from prefdata.execute.workdir import clean_temp_files, workdir_lock
from prefdata.io.layouts import (
    Entries,
    LayoutOptions,
    build_pools,
    read_entries,
)
from prefdata.io.readers import RawBatch, read_batches
from prefdata.io.shards import write_shard
from prefdata.pipeline import Funnel
from prefdata.schema import empty_rejects

FORMAT = 1
PARTITION_BYTES = 64 << 20  # decoded input bytes per partition (about one pool shard)


@dataclass(frozen=True)
class Ingest:
    """A raw source and its layout, for an executor to convert as its first step.

    ``source``: a path (Parquet, JSON Lines, CSV, a ``datasets`` folder), a Hub name, a
    ``datasets.Dataset`` or an in-memory table; ``options``:
    :class:`~prefdata.io.layouts.LayoutOptions` by keyword.
    ``partition_bytes``: about how much decoded input one pool shard comes from.

    >>> Ingest("pairs.parquet", "pairs", prompt_col="question").options.prompt_col
    'question'
    """

    source: Any
    layout: str
    options: LayoutOptions = field(default_factory=LayoutOptions)
    split: str | None = None
    source_name: str | None = None
    partition_bytes: int = PARTITION_BYTES

    def __init__(
        self,
        source: Any,
        layout: str,
        *,
        split: str | None = None,
        source_name: str | None = None,
        partition_bytes: int = PARTITION_BYTES,
        **options: Any,
    ) -> None:
        set_ = object.__setattr__
        set_(self, "source", source)
        set_(self, "layout", layout)
        set_(self, "options", LayoutOptions(**options).check(layout))
        set_(self, "split", split)
        set_(self, "source_name", source_name)
        set_(self, "partition_bytes", partition_bytes)
        if layout == "pool":
            raise ValueError("layout 'pool' needs no ingest: pass the pool files to run()")

    def name(self) -> str | None:
        """The pools' ``source``: ``source_name``, else the file or Hub name."""
        from prefdata.io.readers import source_label

        return (
            self.source_name
            if self.source_name is not None
            else source_label(self.source, self.split)
        )

    def files(self) -> list[Path] | None:
        """The files the source streams from (None: it is read whole)."""
        from prefdata.io.readers import stream_files

        return stream_files(self.source, self.split)

    def estimate(self) -> tuple[int, int]:
        """(rows, decoded bytes) of the input, from footers and file sizes where it can."""
        files = self.files()
        if files and files[0].name.lower().endswith(".parquet"):
            from prefdata.io.readers import naming

            metas = []
            for p in files:
                with naming(p):
                    metas.append(pq.ParquetFile(p).metadata)
            rows = sum(m.num_rows for m in metas)
            size = sum(
                m.row_group(g).total_byte_size for m in metas for g in range(m.num_row_groups)
            )
            return rows, size
        if files and files[0].name.endswith(".arrow"):  # datasets' Arrow IPC: as decoded
            size = sum(p.stat().st_size for p in files)
            return size // 200 + 1, size
        if files:  # JSON text: about as large decoded; gzip about 4x smaller
            size = sum(p.stat().st_size * (4 if p.name.endswith(".gz") else 1) for p in files)
            return size // 200 + 1, size
        if isinstance(self.source, pa.Table):
            return self.source.num_rows, self.source.nbytes
        return 0, 0  # read whole anyway: one partition unless the table is large

    def digest(self) -> str:
        """Content digest of the source, layout and options (what the ingest depends on)."""
        h = hashlib.sha256(f"prefdata-ingest/{FORMAT}".encode())
        h.update(
            json.dumps(
                [self.layout, self.options.to_dict(), self.split, self.name()], sort_keys=True
            ).encode()
        )
        files = self.files()
        if files is not None:
            h.update(source_digest(files, 0).encode())
        elif isinstance(self.source, pa.Table):
            h.update(source_digest(self.source, 0).encode())
        elif isinstance(self.source, str | os.PathLike) and Path(self.source).exists():
            path = Path(self.source)
            found = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            h.update(source_digest(found, 0).encode())
        else:  # an object read whole (a DataFrame, a dataset's view): its rows, read once
            from prefdata.io.readers import read_records

            raw, rejects = read_records(self.source, split=self.split)
            h.update(source_digest(raw, 0).encode())
            h.update(source_digest(rejects, 0).encode())
        return h.hexdigest()[:32]


@dataclass
class IngestResult:
    """Ingested pools: one Arrow IPC shard per partition, every reject, the funnel, and
    the ingest's digest (:meth:`Ingest.digest`: the pools are a function of it)."""

    pool_paths: list[Path]
    rejects_paths: list[Path]
    funnel: Funnel
    digest: str


def partitions(size: int, partition_bytes: int = PARTITION_BYTES) -> int:
    """How many partitions (pool shards) an input of ``size`` decoded bytes gets: one when
    it fits ``partition_bytes`` (what one partition holds in memory while it is built),
    else a multiple of 4 with at most ``partition_bytes`` each, so up to 4 threads share
    the build evenly; never a function of the machine, so the output is the same on any.

    >>> partitions(9_000), partitions(150 << 20), partitions(1 << 30)
    (1, 4, 16)
    """
    if size <= partition_bytes:
        return 1
    return 4 * math.ceil(size / (4 * partition_bytes))


_HEX = np.zeros(256, np.uint32)
_HEX[np.frombuffer(b"0123456789abcdef", np.uint8)] = np.arange(16, dtype=np.uint32)


def partition_of(prompt_ids: pa.Array, n: int, digests: bool = False) -> np.ndarray:
    """The partition of each prompt id: the first 8 hex digits of the MD5 of the id, mod
    ``n`` (the same on every platform and in every process); each distinct id is hashed
    once. ``digests``: the ids are prefdata's own (``p-`` and 16 hex digits of an MD5):
    their first 8 hex digits are used as they are.

    >>> import hashlib
    >>> partition_of(pa.array(["p-1", "p-2", "p-1"]), 7).tolist()
    [0, 5, 0]
    >>> int(hashlib.md5(b"p-2").hexdigest()[:8], 16) % 7
    5
    """
    if n == 1 or not len(prompt_ids):
        return np.zeros(len(prompt_ids), np.int64)
    from prefdata.ids import md5_hex

    if digests:
        hexes, width, codes = prompt_ids.cast(pa.string()), 18, None
    else:
        enc = pc.dictionary_encode(prompt_ids)
        hexes, width, codes = md5_hex(enc.dictionary, "p-"), 18, enc.indices.to_numpy()
    start = int(np.frombuffer(hexes.buffers()[1], np.int32)[hexes.offset])
    data = np.frombuffer(hexes.buffers()[2], np.uint8)[start : start + width * len(hexes)]
    nibbles = _HEX[data.reshape(len(hexes), width)[:, 2:10]]
    value = np.zeros(len(hexes), np.uint32)
    for k in range(8):
        value = (value << np.uint32(4)) | nibbles[:, k]
    part = (value % np.uint32(n)).astype(np.int64)
    return part if codes is None else part[codes]


class _Plan:
    """The ingest manifest: the plan and the batches and partitions done."""

    def __init__(self, root: Path) -> None:
        self.root = root
        path = root / MANIFEST
        try:
            self.data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        except (OSError, ValueError):
            self.data = {}  # unreadable: start over

    def matches(self, digest: str, parts: int) -> bool:
        return (
            self.data.get("format") == FORMAT
            and self.data.get("digest") == digest
            and (self.data.get("partitions") == parts)
        )

    def wrote(self, root: Path, *paths: Path) -> None:
        """Keep the size of files just written (before the record that names them)."""
        files = self.data.setdefault("files", {})
        for path in paths:
            files[path.relative_to(root).as_posix()] = file_size(path)

    def files_intact(self, root: Path) -> bool:
        """Every recorded file (spill files until the pools are built, pool shards,
        rejects) is there, of the size recorded: the work directory's files are not synced
        to disk, so a machine's crash may have cut one short (the ingest starts over)."""
        return all(
            file_size(root / name) == size for name, size in self.data.get("files", {}).items()
        )

    def reset(self, digest: str, parts: int, layout: str) -> None:
        for sub in ("spill", "pools", "rejects"):
            shutil.rmtree(self.root / sub, ignore_errors=True)
        self.data = {
            "format": FORMAT,
            "digest": digest,
            "layout": layout,
            "partitions": parts,
            "batches": {},
            "read_done": None,
            "built": {},
        }
        self.save()

    def save(self) -> None:
        write_json_atomic(self.root / MANIFEST, self.data)


def _spill(root: Path, batch: int) -> Path:
    return root / "spill" / f"batch-{batch:05d}.arrow"


def _write_spill(table: pa.Table, counts: np.ndarray, path: Path) -> None:
    """A batch's entries, sorted by partition, as one Arrow IPC file with one record batch
    per partition (empty ones included), so a partition is read without the others. Spill
    files are scratch: renamed into place, not synced to disk."""
    tmp = path.with_name(f".{path.name}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    with ipc.new_file(tmp, table.schema) as writer:
        start = 0
        for c in counts.tolist():
            part = table.slice(start, c)
            writer.write_batch(
                pa.RecordBatch.from_arrays(
                    [col.combine_chunks() for col in part.columns], schema=table.schema
                )
            )
            start += c
    os.replace(tmp, path)


def _read_spills(paths: list[Path], part: int) -> list[pa.Table]:
    """Partition ``part`` of every spill file as one table, copied off the memory maps once
    (none for no file)."""
    with ExitStack() as maps:
        tables = [
            pa.Table.from_batches(
                [ipc.open_file(maps.enter_context(pa.memory_map(str(p)))).get_batch(part)]
            )
            for p in paths
        ]
        if not tables:
            return []
        return [pa.concat_tables(tables, promote_options="permissive").combine_chunks()]


def run_ingest(ingest: Ingest, root: str | os.PathLike) -> IngestResult:
    """Convert ``ingest`` into pool shards under ``root`` (module docstring), resuming an
    earlier run's work; returns the shards, rejects and funnel."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with workdir_lock(root):
        clean_temp_files(root)
        parts = partitions(ingest.estimate()[1], ingest.partition_bytes)
        digest = ingest.digest()
        plan = _Plan(root)
        if not plan.matches(digest, parts) or not plan.files_intact(root):
            plan.reset(digest, parts, ingest.layout)
        if parts == 1:
            _in_memory(ingest, root, plan)
        else:
            _read_pass(ingest, root, plan, parts)
            _build_pass(ingest, root, plan, parts)
        return _result(ingest, root, plan)


def _batches(ingest: Ingest) -> Iterator[tuple[int, RawBatch, int]]:
    """The input batches in order: (index, batch, input row of its first row)."""
    offset = 0
    for b, batch in enumerate(read_batches(ingest.source, split=ingest.split)):
        yield b, batch, offset
        offset += batch.rows_in


def _convert(ingest: Ingest, batch: RawBatch, offset: int) -> tuple[Entries, pa.Table]:
    """A batch's entries and its rejects (read and layout)."""
    out = read_entries(
        batch.table, ingest.layout, ingest.options, row_offset=offset, rows=batch.rows
    )
    return out.entries, pa.concat_tables([batch.rejects, out.rejects])


def _record_batch(plan: _Plan, b: int, rows_in: int, rows_read: int, rejects: pa.Table) -> None:
    read_rejected = rows_in - rows_read
    plan.data["batches"][f"{b:05d}"] = {
        "rows_in": rows_in,
        "rows_read": rows_read,
        "read_rejected": read_rejected,
        "layout_rejected": rejects.num_rows - read_rejected,
    }


def _in_memory(ingest: Ingest, root: Path, plan: _Plan) -> None:
    if plan.data["built"].get("00000"):
        return
    entries, rejects = [], []
    jobs = (
        ((b, batch), lambda batch=batch, offset=offset: _convert(ingest, batch, offset))
        for b, batch, offset in _batches(ingest)
    )
    for (b, batch), (e, rej) in ordered(jobs, workers(), "prefdata-ingest"):
        entries.append(e.to_table())
        rejects.append(rej)
        _record_batch(plan, b, batch.rows_in, batch.table.num_rows, rej)
    plan.wrote(root, write_shard(_concat_rejects(rejects), _read_rejects(root, 0)))
    _record_build(plan, root, 0, _build(ingest, root, 0, entries))
    plan.data["read_done"] = len(rejects)
    plan.save()


def _concat_rejects(tables: list[pa.Table]) -> pa.Table:
    return pa.concat_tables(tables) if tables else empty_rejects()


def _spill_batch(ingest: Ingest, root: Path, b: int, batch: RawBatch, offset: int, parts: int):
    """Convert batch ``b`` and write its spill file and rejects; its rejects table."""
    entries, rejects = _convert(ingest, batch, offset)
    table = _first_prompts_only(entries.to_table())
    part = partition_of(entries.prompt_ids(), parts, entries.given_id is None)
    table = table.take(pa.array(np.argsort(part, kind="stable")))
    _write_spill(table, np.bincount(part, minlength=parts), _spill(root, b))
    write_shard(rejects, _read_rejects(root, b))
    return rejects


def _read_rejects(root: Path, b: int) -> Path:
    return root / "rejects" / f"read-{b:05d}.arrow"


def _build_rejects(root: Path, p: int) -> Path:
    return root / "rejects" / f"build-{p:05d}.arrow"


def _record_build(plan: _Plan, root: Path, p: int, record: dict[str, int]) -> None:
    plan.wrote(root, root / "pools" / shard_name(p), _build_rejects(root, p))
    plan.data["built"][f"{p:05d}"] = record


def _read_pass(ingest: Ingest, root: Path, plan: _Plan, parts: int) -> None:
    if plan.data["read_done"] is not None:
        return
    done = plan.data["batches"]
    batches = 0

    def jobs():
        nonlocal batches
        for b, batch, offset in _batches(ingest):
            batches = b + 1
            if f"{b:05d}" not in done:  # a resumed run converts only what is not recorded
                yield (
                    (b, batch.rows_in, batch.table.num_rows),
                    (
                        lambda b=b, batch=batch, offset=offset: _spill_batch(
                            ingest, root, b, batch, offset, parts
                        )
                    ),
                )

    for (b, rows_in, rows_read), rejects in ordered(jobs(), workers(), "prefdata-ingest"):
        plan.wrote(root, _read_rejects(root, b), _spill(root, b))
        _record_batch(plan, b, rows_in, rows_read, rejects)
        plan.save()
    plan.data["read_done"] = batches
    plan.save()


def _first_prompts_only(table: pa.Table) -> pa.Table:
    """Entries with the prompt kept only on each prompt's first entry in the batch: a
    pool's prompt is its first entry's, and that entry is first in its batch too."""
    key = pc.dictionary_encode(table["key"].combine_chunks()).indices.to_numpy()
    first = np.zeros(len(key), bool)
    if len(key):
        first[np.flatnonzero(key > np.maximum.accumulate(np.r_[-1, key[:-1]]))] = True
    if first.all():
        return table
    idx = pa.array(np.arange(len(key)), mask=~first)
    prompt = table["prompt"].combine_chunks().take(idx)
    return table.set_column(table.schema.get_field_index("prompt"), "prompt", prompt)


def _build_pass(ingest: Ingest, root: Path, plan: _Plan, parts: int) -> None:
    batches = plan.data["read_done"]
    jobs = (
        (
            p,
            lambda p=p: _build(
                ingest, root, p, _read_spills([_spill(root, b) for b in range(batches)], p)
            ),
        )
        for p in range(parts)
        if not plan.data["built"].get(f"{p:05d}")
    )
    for p, record in ordered(jobs, workers(), "prefdata-ingest"):
        _record_build(plan, root, p, record)
        plan.save()
    files = plan.data.get("files", {})
    plan.data["files"] = {k: v for k, v in files.items() if not k.startswith("spill/")}
    plan.save()  # first forget the spill files, then delete them
    shutil.rmtree(root / "spill", ignore_errors=True)


def _build(ingest: Ingest, root: Path, p: int, tables: list[pa.Table]) -> dict[str, int]:
    """Partition ``p``'s entries into its pool shard and build rejects; its record."""
    from prefdata.io.layouts import score_names_of

    if tables:
        entries = Entries.from_table(pa.concat_tables(tables, promote_options="permissive"))
    else:
        entries = Entries.empty(score_names_of(ingest.layout, ingest.options))
    out = build_pools(entries, ingest.layout, ingest.options, source_name=ingest.name())
    write_shard(out.table, root / "pools" / shard_name(p))
    write_shard(out.rejects, _build_rejects(root, p))
    return {
        "pools": out.table.num_rows,
        "rows": entries.num_rows() - out.rejects.num_rows,
        "rejected": out.rejects.num_rows,
    }


def _result(ingest: Ingest, root: Path, plan: _Plan) -> IngestResult:
    parts = sorted(plan.data["built"])
    built = [plan.data["built"][p] for p in parts]
    funnel = ingest_funnel(plan.data)
    layout = funnel.entries[1]
    if sum(b["rows"] for b in built) != layout.rows_out:
        raise AssertionError(f"ingest of {root}: the rows in pools do not add up")
    return IngestResult(
        [root / "pools" / shard_name(int(p)) for p in parts],
        ingest_rejects(root),
        funnel,
        plan.data["digest"],
    )


def ingest_funnel(plan: dict[str, Any]) -> Funnel:
    """The funnel an ingest manifest records so far: ``read`` and ``layout:<name>``,
    counted in input rows."""
    batches = plan["batches"].values()
    built = plan["built"].values()
    rows_in = sum(b["rows_in"] for b in batches)
    rows_read = sum(b["rows_read"] for b in batches)
    read_rejected = sum(b["read_rejected"] for b in batches)
    layout_rejected = sum(b["layout_rejected"] for b in batches) + sum(b["rejected"] for b in built)
    funnel = Funnel()
    funnel.add("read", rows_in, rows_read, read_rejected)
    layout = plan.get("layout", "layout")
    funnel.add(f"layout:{layout}", rows_read, rows_read - layout_rejected, layout_rejected)
    return funnel


def ingest_rejects(root: Path) -> list[Path]:
    """The rejects files of an ingest: every batch's, then every partition's."""
    return sorted((root / "rejects").glob("read-*.arrow")) + sorted(
        (root / "rejects").glob("build-*.arrow")
    )


def is_ingest(path: Path) -> bool:
    """Whether ``path`` holds an ingest (its manifest plans partitions)."""
    try:
        return "partitions" in json.loads((Path(path) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False


__all__ = [
    "Ingest",
    "IngestResult",
    "ingest_funnel",
    "ingest_rejects",
    "is_ingest",
    "partition_of",
    "partitions",
    "run_ingest",
]
