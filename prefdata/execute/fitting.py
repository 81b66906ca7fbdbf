"""Fit passes for any executor: a pipeline with two-pass stages runs as segments.

:func:`split_at_fits` cuts the stages before every stage whose :meth:`~prefdata.pipeline.Stage.fit`
is not None. :func:`run_with_fits` runs the first segment, fits the next segment's first
stage over that segment's output shards (one shard in memory at a time), replaces it by the
fitted stage and runs that segment on the output, and so on. ``run_segment(stages, source,
workdir)`` is the executor's own run, so the local and the Ray executor share this::

    workdir/segments/00/    the stages before the first fitting stage (a work directory)
    workdir/segments/01/    the first fitting stage, fitted, and the stages up to the next
    workdir/fits/<stage fingerprint>-<input identity>.fit      a finished fit (its dumps())

A fit is identified by the unfitted stage's fingerprint and its input's content digest
(:func:`source_identity`; a segment's outputs carry theirs, its stage keys and input
digest, so they are not hashed again). A rerun loads the fit instead of refitting; a
changed stage or input gives another file.

>>> from prefdata.annotate import Normalise
>>> stages = [Normalise("rank"), Normalise(), Normalise("rank"), Normalise()]
>>> [[s.method for s in seg] for seg in split_at_fits(stages)]
[['rank'], ['zscore', 'rank'], ['zscore']]
>>> from prefdata.execute import LocalExecutor
>>> run = lambda stages, source, workdir: LocalExecutor(workdir).run(stages, source)
>>> result = run_with_fits(run, stages, "pools.parquet", Path("runs/z"))  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from prefdata.execute.inputs import KnownFiles, resolve_source, source_digest
from prefdata.execute.threads import ordered, workers
from prefdata.fit import Fit, loads
from prefdata.ids import digest
from prefdata.io.atomic import atomic_path
from prefdata.io.parquet import from_parquet_layout
from prefdata.io.shards import TableFile
from prefdata.pipeline import Funnel, Pipeline, Stage

if TYPE_CHECKING:
    from prefdata.execute.local import ExecutionResult

SEGMENTS_DIR = "segments"
FITS_DIR = "fits"

RunSegment = Callable[[list[Stage], Any, Path], "ExecutionResult"]


def split_at_fits(stages: Sequence[Stage] | Pipeline) -> list[list[Stage]]:
    """Segments of ``stages``: the first holds the stages before the first fitting stage
    (possibly none), every other one starts with a fitting stage.

    >>> from prefdata.filter import DropFlagged, FlagDegenerate
    >>> [[s.name for s in seg] for seg in split_at_fits([FlagDegenerate(), DropFlagged()])]
    [[], ['FlagDegenerate', 'DropFlagged']]
    >>> split_at_fits([DropFlagged()]) == [[DropFlagged()]]
    True
    """
    stages = stages.stages if isinstance(stages, Pipeline) else stages
    segments: list[list[Stage]] = [[]]
    for stage in stages:
        if stage.fit() is not None:
            segments.append([])
        segments[-1].append(stage)
    return segments


def run_with_fits(
    run_segment: RunSegment,
    stages: Sequence[Stage] | Pipeline,
    source: Any,
    workdir: Path,
) -> ExecutionResult:
    """Run ``stages`` over ``source`` with ``run_segment``, fitting every two-pass stage
    over its whole input first (module docstring); ``run_segment(stages, source, workdir)``
    itself when no stage needs a fit.

    The result has the last segment's outputs (and ``info``), the rejects of every segment
    in order, and one funnel over all stages (entries added as one run adds them, so it
    equals the funnel of the same stages, fitted, run at once).
    """
    segments = split_at_fits(stages)
    if len(segments) == 1:
        return run_segment(segments[0], source, workdir)
    workdir = Path(workdir)
    results: list[ExecutionResult] = []
    first, *rest = segments
    if first:
        results.append(run_segment(first, source, workdir / SEGMENTS_DIR / "00"))
    for k, (stage, *others) in enumerate(rest, 1):
        if results:  # the previous segment's output (its identity known: not hashed again)
            source = results[-1].output_paths
        tables = input_tables(source, fit_columns(stage))
        fitted = fit_checkpointed(stage, tables, workdir / FITS_DIR, source_identity(source))
        results.append(run_segment([fitted, *others], source, workdir / SEGMENTS_DIR / f"{k:02d}"))
    funnel = Funnel()
    for r in results:
        funnel.merge(r.funnel)
    rejects = [p for r in results for p in r.rejects_paths]
    return dataclasses.replace(results[-1], workdir=workdir, rejects_paths=rejects, funnel=funnel)


def run_all(
    run_segment: Callable[..., ExecutionResult],
    stages: Sequence[Stage] | Pipeline,
    source: Any,
    workdir: Path,
    shard_rows: int | None = None,
    sink: Callable[[int, pa.Table], object] | None = None,
) -> ExecutionResult:
    """What an executor's ``run`` does: convert an :class:`~prefdata.execute.ingest.Ingest`
    source into pool shards first (``workdir/ingest``; the stages then run in
    ``workdir/pipeline``), run the stages with their fits (:func:`run_with_fits`), and hand
    ``sink`` to the last segment only. ``run_segment(stages, source, workdir, sink)``.

    The result's funnel and rejects start with the ingest's (``read``, ``layout:<name>``).
    """
    from prefdata.execute.ingest import Ingest, run_ingest

    workdir = Path(workdir)
    pipeline = stages if isinstance(stages, Pipeline) else Pipeline(list(stages))
    ingested = None
    if isinstance(source, Ingest):
        ingested = run_ingest(source, workdir / "ingest")
        # the pools' identity is the ingest's: nothing hashes their bytes again
        source = KnownFiles(ingested.pool_paths, digest=ingested.digest)
        workdir = workdir / "pipeline"
    segments = split_at_fits(pipeline)
    runs = 1 if len(segments) == 1 else len(segments) - (0 if segments[0] else 1)
    calls = iter(range(runs))

    def run(seg: list[Stage], src: Any, where: Path) -> ExecutionResult:
        last = next(calls) == runs - 1
        return run_segment(seg, src, where, sink if last else None)

    result = run_with_fits(run, pipeline, source, workdir)
    if ingested is None:
        return result
    funnel = Funnel()
    for e in [*ingested.funnel.entries, *result.funnel.entries]:
        funnel.add(e.stage, e.rows_in, e.rows_out, e.rows_rejected)
    return dataclasses.replace(
        result,
        rejects_paths=[*ingested.rejects_paths, *result.rejects_paths],
        funnel=funnel,
    )


def fit_checkpointed(
    stage: Stage, tables: Iterable[pa.Table], fits_dir: Path, identity: str | None
) -> Stage:
    """``stage`` fitted over ``tables`` (read only when needed; a fit whose updates are
    independent, ``fit.parallel``, is one fit per table on a few threads, merged in table
    order: the same numbers as one fit updated in order); the fit is loaded from,
    or saved to, ``fits_dir/<fingerprint>-<identity>.fit`` (atomically). ``identity`` None
    (an input without a digest) fits every time and saves nothing. A file that does not
    load (another format) is fitted again and replaced."""
    fit = stage.fit()
    if fit is None:
        return stage
    path = fits_dir / f"{stage.fingerprint}-{identity}.fit" if identity else None
    loaded: Fit | None = None
    if path is not None and path.exists():
        try:
            loaded = loads(stage, path.read_bytes())
        except ValueError:
            loaded = None
    if loaded is None:
        if getattr(fit, "parallel", False):
            jobs = ((None, lambda t=t: stage.fit().update(t)) for t in tables)
            for _, part in ordered(jobs, workers(), "prefdata-fit"):
                fit.merge(part)
        else:
            for table in tables:
                fit.update(table)
        if path is not None:
            data = fit.dumps()
            atomic_path(path, lambda p: p.write_bytes(data), durable=False)
    fitted = (loaded or fit).finalize()
    if fitted.fit() is not None:
        raise ValueError(f"stage {stage.name} is still unfitted after its fit (an empty input?)")
    return fitted


def fit_columns(stage: Stage) -> list[str] | None:
    """The input fields a stage's fit reads (dotted, list levels left out, such as
    ``candidates.scores``), or None for every column."""
    fit = stage.fit()
    columns = getattr(fit, "columns", None)
    return columns() if callable(columns) else None


def input_tables(source: Any, columns: Sequence[str] | None = None) -> Iterator[pa.Table]:
    """The tables of a source, one in memory at a time: a table as is; Parquet files (a
    path, a folder or a list) row group by row group, conformed (only ``columns``, as
    :func:`fit_columns` names them, when given)."""
    src = resolve_source(source)
    if isinstance(src, pa.Table):
        yield src
        return
    yield from read_shards(src, columns)


def source_identity(source: Any) -> str:
    """Digest of a source's content (files byte by byte, a table by its IPC bytes; a
    finished segment's or an ingest's outputs by their producer's digest, ``KnownFiles``)."""
    content = source_digest(resolve_source(source), 0)
    assert content is not None
    return digest("source", content)


def read_shards(paths: Sequence[Path], columns: Sequence[str] | None = None) -> Iterator[pa.Table]:
    """Table files (Parquet or Arrow IPC) one group at a time
    (:func:`~prefdata.io.parquet.read_parquet`'s layout), only the fields under ``columns``
    when given (for IPC files, the top-level columns holding them)."""
    for path in paths:
        file = TableFile(path)
        leaves = file.columns_under(columns) if columns is not None else None
        for group in range(file.num_groups):
            yield from_parquet_layout(file.read_group(group, columns=leaves))


__all__ = [
    "fit_checkpointed",
    "fit_columns",
    "run_all",
    "input_tables",
    "read_shards",
    "run_with_fits",
    "source_identity",
    "split_at_fits",
]
