"""The local executor: pools streamed shard by shard through the stages, checkpointed.

The input is planned once as shards of ``shard_rows`` rows (by default 10,000 when a stage
is costly, up to 65,536 when none is; see
:mod:`prefdata.execute.workdir` for the layout and the manifest): a Parquet source is read
in place, row group by row group, and only a table is copied into shard files. Each shard
then runs through every stage in order. Every stage's rejects are written for every shard;
its kept rows are written when the stage is worth keeping:

- ``checkpoint="auto"`` (the default) keeps the output of costly stages (samplers, reward
  models, judges, verifiers: :attr:`Stage.costly <prefdata.pipeline.Stage.costly>`) and of
  the last stage. The cheap row-local stages between them are recomputed from the last
  kept output when a rerun needs them, which costs less than writing and reading them.
- ``checkpoint="all"`` keeps every stage's output (to inspect each step, or to change a
  cheap stage's config often on a large input).

A shard is recorded in the manifest only after its files are in place; a cheap stage's
record is written together with the next kept output of its shard (one manifest write per
shard). A rerun starts each shard at its first stage not recorded, from the last kept
output before it, so a run killed at any instant (even SIGKILL mid-write) finishes with
exactly the rows of an uninterrupted run. Memory holds a few shards (those computing, the
next one read ahead, the reader's row group and the tables waiting to be written), never
the whole input.

When every stage is cheap and may run concurrently (:func:`shard_lanes`), several shards
run through the stages at once, one per core (at most 4), on threads; their outputs are
written and recorded in shard order, as one shard at a time would write them, and a stage
that fails on a shard still has the stages before it written for that shard.

Within a shard, each stage takes the table the stage before produced in memory, conformed
and in one chunk exactly as :func:`~prefdata.io.shards.read_files` of its file gives it
(an Arrow IPC round trip keeps every value and type), so a stage resumed from the file and one
fed from memory see the very same table and write byte-identical outputs (the Ray executor,
which always reads the files, is tested against this). Files are written by one background
thread while the next stage computes (pyarrow releases the GIL while it encodes), in
submission order; the tables waiting to be written or exported hold at most about three
input shards' bytes, or 64 MiB if more (so a small rejects file never waits behind a large
checkpoint).
The next shard to start from the input is decoded on a thread of its own while this one
runs through the stages (on the cores the stages leave; the first shard on all of them).
``run(..., sink=...)`` hands every output shard to an exporter as it is computed, on a
thread of its own (in shard order), so exports overlap the checkpoint writes and the work
on the next shard.

The ``row`` of a reject counts rows of that stage's input across all shards (not within
the shard), so rejects match an in-memory :meth:`Pipeline.run <prefdata.pipeline.Pipeline.run>`.

>>> import pyarrow as pa
>>> from prefdata.schema import empty_pools
>>> result = LocalExecutor("/tmp/prefdata-doctest-empty").run([], empty_pools())  # doctest: +SKIP
>>> result.read().num_rows, result.funnel.summary()  # doctest: +SKIP
(0, '')
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pyarrow as pa

from prefdata.execute.fitting import run_all
from prefdata.execute.inputs import InputReader, KnownFiles
from prefdata.execute.manifest import Manifest, Source
from prefdata.execute.threads import ordered, workers
from prefdata.execute.workdir import WorkdirInfo, begin_run, open_workdir
from prefdata.io.parquet import from_parquet_layout
from prefdata.io.shards import read_files, write_shard
from prefdata.pipeline import Funnel, Pipeline, Stage, StageOutput, shift_reject_rows
from prefdata.progress import progress_bar
from prefdata.schema import empty_rejects

CHECKPOINT_MODES = ("auto", "all")


class StageError(RuntimeError):
    """A stage failed on a shard; finished shards stay recorded, so a rerun resumes.

    ``stage`` (name), ``index`` (position), ``shard`` and ``path`` (its input file) say where.
    """

    def __init__(
        self, stage: str, index: int, shard: int, path: Path | str, phase: str = "process"
    ):
        self.stage, self.index, self.shard, self.path = stage, index, shard, path
        where = "setup" if phase == "setup" else f"shard {shard} (input {path})"
        super().__init__(f"stage {index} {stage} failed in {where}")


@dataclass
class ExecutionResult:
    """A finished run: the last stage's output shards (in shard order), every stage's
    rejects, and the funnel summed over shards (one entry per stage).

    >>> result.read().num_rows == result.funnel.entries[-1].rows_out  # doctest: +SKIP
    True
    """

    workdir: Path
    output_paths: list[Path]
    rejects_paths: list[Path]
    funnel: Funnel
    info: WorkdirInfo

    @classmethod
    def from_info(cls, info: WorkdirInfo) -> ExecutionResult:
        # a finished run's outputs carry its identity: a run over them hashes nothing
        outputs = (
            list(info.outputs) if info.identity is None else KnownFiles(info.outputs, info.identity)
        )
        return cls(info.path, outputs, list(info.rejects), info.funnel, info)

    def read(self) -> pa.Table:
        """The output, concatenated and conformed (pool tables get the canonical layout)."""
        return read_files(list(self.output_paths))

    def rejects(self) -> pa.Table:
        """All rejected rows: stage by stage, shard by shard (``REJECTS_SCHEMA``)."""
        return read_files(list(self.rejects_paths)) if self.rejects_paths else empty_rejects()


class LocalExecutor:
    """Run a pipeline over Arrow IPC shards under ``workdir``, resumably.

    ``shard_rows``: rows per shard (the checkpoint unit and the memory bound); None picks
    it (:func:`~prefdata.execute.inputs.choose_shard_rows`): the work directory's own,
    else 10,000 when a stage is costly, else about 64 MiB of input, at most 65,536 rows.
    ``checkpoint``: ``"auto"`` keeps the outputs of costly stages and the last stage,
    ``"all"`` of every stage (module docstring). Rejects are always kept.
    ``progress``: a tqdm bar on stderr (rows/s, ETA); None shows it only on a terminal.

    >>> from prefdata.execute import LocalExecutor
    >>> executor = LocalExecutor("runs/demo", shard_rows=5000)
    >>> result = executor.run(stages, "pools.parquet")  # doctest: +SKIP
    >>> result.funnel.summary()  # doctest: +SKIP
    'Tag: 20000 in -> 20000 out, 0 rejected; Filter: 20000 in -> 13333 out, 6667 rejected'
    """

    def __init__(
        self,
        workdir: str | os.PathLike,
        *,
        shard_rows: int | None = None,
        checkpoint: str = "auto",
        progress: bool | None = None,
    ) -> None:
        if shard_rows is not None and shard_rows < 1:
            raise ValueError(f"shard_rows must be >= 1, got {shard_rows}")
        if checkpoint not in CHECKPOINT_MODES:
            raise ValueError(f"checkpoint must be one of {CHECKPOINT_MODES}, got {checkpoint!r}")
        self.workdir = Path(workdir)
        self.shard_rows = shard_rows
        self.checkpoint = checkpoint
        self.progress = progress

    def run(
        self,
        stages: Pipeline | Sequence[Stage],
        source: Source,
        *,
        sink: Callable[[int, pa.Table], object] | None = None,
    ) -> ExecutionResult:
        """Run ``stages`` over ``source`` (a Parquet file, a folder of them, a list of
        paths, a table of pools, or an :class:`~prefdata.execute.ingest.Ingest`: a raw
        source in any layout, converted first, see :func:`run_all`); resume whatever an
        earlier run left unfinished. Two-pass stages (:meth:`Stage.fit
        <prefdata.pipeline.Stage.fit>` not None) are fitted over their whole input first
        (:mod:`prefdata.execute.fitting`).

        ``sink(shard, table)`` is called with every output shard, in shard order, as it is
        computed (shards an earlier run finished are read back), so an exporter such as
        :class:`~prefdata.io.export.ShardedExport` streams the output without a second
        pass. A shard computed again after a crash is handed over again, identical. It runs
        on a thread of its own, one call at a time; an exception it raises ends the run.

        Raises :class:`~prefdata.pipeline.MissingColumnsError` before any work when a stage
        lacks a column, and :class:`StageError` (with the cause chained) when a stage fails.
        """
        return run_all(self._run_segment, stages, source, self.workdir, self.shard_rows, sink)

    def _run_segment(
        self,
        stages: Sequence[Stage],
        source: Source,
        workdir: Path,
        sink: Callable[[int, pa.Table], object] | None = None,
    ) -> ExecutionResult:
        """One run of stages that need no fit over a source of pools, in ``workdir``."""
        pipeline = stages if isinstance(stages, Pipeline) else Pipeline(list(stages))
        with begin_run(workdir, pipeline, source, self.shard_rows) as (
            manifest,
            keys,
            shard_counts,
        ):
            self._process(pipeline.stages, keys, manifest, shard_counts, sink)
        return ExecutionResult.from_info(open_workdir(workdir))

    def _process(
        self,
        stages: list[Stage],
        keys: list[str],
        manifest: Manifest,
        shard_counts: list[int],
        sink: Callable[[int, pa.Table], object] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._unrecorded: dict[int, list[tuple]] = {}
        reader = InputReader(manifest)
        last = len(stages) - 1
        keep = [self.checkpoint == "all" or i == last or s.costly for i, s in enumerate(stages)]
        shards = range(len(shard_counts))
        starts = [manifest.resume_point(keys, s) for s in shards]
        offsets = [0] * len(stages)  # rows of each stage's input in the shards before
        # checkpoint writes and exports in submission order, with the bytes each holds
        pending: deque[tuple[Future, int]] = deque()
        held, budget = 0, MIN_WRITE_BUDGET
        lanes = shard_lanes(stages, self.checkpoint)
        with (
            progress_bar(
                sum(shard_counts),
                desc="prefdata",
                initial=sum(n for n, i in zip(shard_counts, starts, strict=True) if i == len(keys)),
                enabled=self.progress,
            ) as bar,
            ThreadPoolExecutor(1, thread_name_prefix="prefdata-write") as writer,
            ThreadPoolExecutor(1, thread_name_prefix="prefdata-sink") as exporter,
            ThreadPoolExecutor(1, thread_name_prefix="prefdata-read") as reading,
        ):
            fresh = [s for s in shards if starts[s] == 0 < len(stages)]

            def read_fresh(shard: int) -> pa.Table:
                # decoded while other shards compute, on the cores the stages leave; the
                # first, which nothing overlaps, on them all
                threads = None if shard == fresh[0] else _spare_cores()
                return as_read_back(reader.read(shard, threads))

            def read_done(shard: int, stage: int) -> pa.Table:
                if stage < 0:  # no stage: the output is the input
                    return as_read_back(reader.read(shard))
                return as_read_back(read_files(manifest.output_path(keys[stage], shard)))

            def jobs() -> Iterator[tuple[int, Callable[[], _Computed]]]:
                for shard, start in zip(shards, starts, strict=True):
                    load: Callable[[], pa.Table] | None = None
                    where = ""
                    if start == len(stages):  # done: read back only for the sink
                        load = partial(read_done, shard, start - 1) if sink is not None else None
                    elif start == 0:  # input reads queue on one thread, in shard order
                        load = reading.submit(read_fresh, shard).result
                        where = reader.describe(shard)
                    else:
                        load = partial(read_done, shard, start - 1)
                        where = str(manifest.output_path(keys[start - 1], shard))
                    yield (
                        shard,
                        partial(
                            self._chain,
                            stages,
                            keep,
                            shard,
                            start,
                            load,
                            bar,
                            where,
                            sink is not None,
                        ),
                    )

            def submit(fn: Callable, *args, size: int, on: ThreadPoolExecutor = writer) -> None:
                # Bound the bytes waiting to be written (about three input shards), not the
                # number of writes: a small rejects file need not wait for a checkpoint.
                nonlocal held
                while pending and held + size > budget:
                    done, weight = pending.popleft()
                    done.result()
                    held -= weight
                pending.append((on.submit(fn, *args), size))
                held += size

            def account(shard: int) -> None:
                with self._lock:  # the rows the stages done before had as input
                    for i in range(starts[shard]):
                        offsets[i] += manifest.done(keys[i], shard)["rows_in"]

            def write(shard: int, i: int, rows_in: int, out: StageOutput, nbytes: int) -> None:
                nonlocal budget
                budget = max(budget, 3 * nbytes)
                size = out.rejects.nbytes + out.table.nbytes
                args = (manifest, keys[i], shard, rows_in, out, offsets[i], keep[i])
                submit(self._write, *args, size=size)
                offsets[i] += rows_in

            def finish(shard: int, result: _Computed) -> None:
                nonlocal budget
                budget = max(budget, 3 * result.nbytes)  # a finished shard read for the sink
                if result.error is not None:  # after the stages before it are written
                    raise result.error
                if sink is not None:  # the table its file reads back as
                    submit(sink, shard, result.table, size=result.table.nbytes, on=exporter)
                if starts[shard] < len(stages):
                    bar.update(shard_counts[shard])

            try:
                if lanes > 1:  # outputs come back in shard order and are written then
                    for shard, result in ordered(jobs(), lanes, "prefdata-stage"):
                        account(shard)
                        for item in result.outputs:
                            write(shard, *item)
                        finish(shard, result)
                else:  # on this thread, each stage's output written as it is computed
                    for shard, job in one_ahead(jobs()):
                        account(shard)
                        finish(shard, job(emit=partial(write, shard)))
                while pending:
                    pending.popleft()[0].result()
            except BaseException:
                # what finished before the failure is written and recorded, as if in order
                for f, _ in pending:
                    f.exception()
                raise

    def _chain(
        self,
        stages: list[Stage],
        keep: list[bool],
        shard: int,
        start: int,
        load: Callable[[], pa.Table] | None,
        bar,
        where: str,
        to_sink: bool,
        emit: Callable[[int, int, StageOutput, int], None] | None = None,
    ) -> _Computed:
        """Run one shard through its stages from ``start``; each stage's (index, input
        rows, output, input bytes) goes to ``emit`` as it is computed (its table only where
        kept), or into the result's ``outputs``; the last table is kept for the sink."""
        table = load() if load is not None else None
        nbytes = table.nbytes if table is not None else 0
        last = len(stages) - 1
        collected: list[tuple[int, int, StageOutput, int]] = []
        emit = emit or (lambda *item: collected.append(item))
        for i in range(start, len(stages)):
            bar.set_postfix_str(f"shard {shard} {stages[i].name}", refresh=False)
            try:
                out = self._run_stage(stages[i], i, shard, where, table)
            except StageError as e:  # the stages before it are written, then it is raised
                return _Computed(collected, None, nbytes, e)
            # a write that does not store the table must not hold it either
            emit(i, table.num_rows, out if keep[i] else _without_table(out), nbytes)
            where = f"the output of stage {i} {stages[i].name}"
            table = as_read_back(out.table) if i < last or to_sink else None
        return _Computed(collected, table if to_sink else None, nbytes)

    def _run_stage(
        self, stage: Stage, index: int, shard: int, src_path: Path | str, table: pa.Table
    ) -> StageOutput:
        """Run one stage on one shard's input table."""
        try:
            stage.ensure_setup()
        except Exception as e:
            raise StageError(stage.name, index, shard, src_path, "setup") from e
        try:
            return stage(table)
        except Exception as e:
            raise StageError(stage.name, index, shard, src_path) from e

    def _write(
        self,
        manifest: Manifest,
        key: str,
        shard: int,
        rows_in: int,
        out: StageOutput,
        row_offset: int,
        store: bool,
    ) -> None:
        """Write a stage's shard files, then record it (the writer thread runs this).

        A stage whose output is not stored is recorded together with the next stored
        output of its shard, in one manifest write: until that output exists, resuming
        would recompute the stage anyway."""
        # the files in place before the record: a file without a record is redone
        if store:
            write_shard(out.table, manifest.output_path(key, shard))
        write_shard(shift_reject_rows(out.rejects, row_offset), manifest.rejects_path(key, shard))
        with self._lock:
            waiting = self._unrecorded.setdefault(shard, [])
            waiting.append((key, shard, rows_in, out.kept, out.rejects.num_rows, store))
            if store:
                for record in self._unrecorded.pop(shard):
                    manifest.record(*record)
                manifest.save()


# The least the tables waiting to be written may hold, so tiny shards still overlap.
MIN_WRITE_BUDGET = 64 << 20


@dataclass
class _Computed:
    """One shard run through its stages: each stage's (index, input rows, output, input
    bytes) not yet written, the last table (for the sink), the input's bytes, and the
    error of a stage that failed (the outputs are those of the stages before it)."""

    outputs: list[tuple[int, int, StageOutput, int]]
    table: pa.Table | None
    nbytes: int
    error: StageError | None = None


def shard_lanes(stages: Sequence[Stage], checkpoint: str = "auto") -> int:
    """How many shards run through the stages at once: one per core (at most 4) when every
    stage is cheap and may run concurrently (:attr:`Stage.concurrent
    <prefdata.pipeline.Stage.concurrent>`: their Arrow, polars and numpy kernels release
    the GIL), else 1 (models, connections: one shard at a time, on the calling thread).
    ``checkpoint="all"`` keeps every stage's table, which a lane would hold until its
    shard's turn to be written: 1 lane, each output written as it is computed.

    >>> from prefdata.filter import FlagDegenerate
    >>> shard_lanes([]) >= 1, shard_lanes([FlagDegenerate(repeated_min_prompts=None)]) >= 1
    (True, True)
    """
    if checkpoint == "auto" and all(not s.costly and s.runs_concurrently for s in stages):
        return workers()
    return 1


def one_ahead(jobs: Iterator[tuple[int, Callable]]) -> Iterator[tuple[int, Callable]]:
    """The jobs, each yielded after the next one is created (its input read queued), so
    that read overlaps this shard's stages."""
    it = iter(jobs)
    nxt = next(it, None)
    while nxt is not None:
        cur, nxt = nxt, next(it, None)
        yield cur


def _without_table(out: StageOutput) -> StageOutput:
    """``out`` with an empty table (its kept count preserved): what a write that records
    but does not store the output needs."""
    return StageOutput(out.table.schema.empty_table(), out.rejects, out.kept)


def _spare_cores() -> int:
    """Cores a read-ahead may decode on: those the stages' one thread leaves (at least 1,
    at most 4, as for any row group read)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(4, (cores or 1) - 1))


def as_read_back(table: pa.Table) -> pa.Table:
    """A stage's input as reading its shard file back gives it: conformed (pool tables
    in the canonical layout, plain types) and in one chunk, so a stage fed from memory and
    one resumed from the file compute on identical tables."""
    return from_parquet_layout(table).combine_chunks()


__all__ = ["ExecutionResult", "LocalExecutor", "StageError"]
