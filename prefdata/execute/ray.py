"""The Ray executor: the local executor's stages, work directory and output, on Ray Data.

The input is planned into shards exactly as the local executor plans it (the same
manifest: row-group pieces of Parquet sources, shard files for tables). Then the stages run
one after the other, each as a Ray Data ``map_batches(batch_format="pyarrow",
batch_size=1)`` over a dataset with one row (one block) per shard to do: the row names the
shard's input (a file, or the source's row-group pieces) and where to write its output. A
worker reads the input, runs the stage, and writes the kept rows and the rejects
atomically with :func:`~prefdata.io.shards.write_shard`; only counts come back to the
driver, which alone writes the manifest (one writer, under the work directory lock) as
results stream in. Every stage's output is kept (the local executor's
``checkpoint="all"``): the next wave reads it. A work directory a local
``checkpoint="auto"`` run left resumes here from each shard's last kept output.

Why whole shards, stage by stage:

- *Same bytes as the local executor.* A stage sees exactly the table the local executor
  gives it (its input read back from the very same Parquet file), and the reject ``row``
  offsets are known before a stage starts (from the row counts of its input files), so a
  worker writes the final rejects file itself. Outputs, rejects and the manifest are
  byte-identical to a local run's, and a rerun resumes the (stage, shard) pairs not recorded.
- *Model stages one at a time.* A stage's actor pool is gone before the next stage's starts,
  so a sampler and a reward model never need the GPU at the same time (a streamed chain
  with ``num_gpus=1`` on both would wait forever on a one-GPU machine).
- *Nothing big through the object store*: tables go worker -> Arrow IPC file -> worker. The work
  directory must therefore be on a filesystem every Ray node sees (a shared or network
  disk on a cluster; any folder on one machine).

Workers: a stage whose class overrides :meth:`~prefdata.pipeline.Stage.setup` (models,
DuckDB connections) runs in an actor pool, built once per actor with ``setup()`` called
once per actor; a stage without one runs as plain Ray tasks. A stage asks for a GPU with
``uses_gpu`` (see :func:`stage_uses_gpu`); its actors then reserve
``num_gpus_per_model_stage`` GPUs each.

When a stage fails on a shard, the other shards of that stage still finish and are recorded
(no task outlives the run), later stages do not start, and :class:`StageError` names the
lowest failing shard, with the worker's exception chained and its traceback as a note.

>>> from prefdata.execute.ray import RayExecutor
>>> executor = RayExecutor("runs/demo", shard_rows=5000)
>>> result = executor.run(stages, "pools.parquet")  # doctest: +SKIP
>>> result.funnel.summary()  # doctest: +SKIP
'Tag: 20000 in -> 20000 out, 0 rejected; Filter: 20000 in -> 13333 out, 6667 rejected'
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from prefdata.execute.fitting import run_all
from prefdata.execute.inputs import InputReader, RowGroupCache, read_pieces
from prefdata.execute.local import ExecutionResult, StageError, as_read_back
from prefdata.execute.manifest import Manifest, Source
from prefdata.execute.workdir import begin_run, open_workdir
from prefdata.io.shards import TableFile, read_files, write_shard
from prefdata.pipeline import Pipeline, Stage, shift_reject_rows
from prefdata.progress import progress_bar

# One row per shard to do: what a worker reads, writes, and the row offset of its rejects.
TASK_SCHEMA = pa.schema(
    [
        ("shard", pa.int64()),
        ("src", pa.string()),
        ("pieces", pa.string()),  # JSON {"sources", "pieces"} when src is the source itself
        ("out", pa.string()),
        ("rejects", pa.string()),
        ("offset", pa.int64()),
    ]
)
# One row per shard done (or failed): the counts, or the pickled exception and traceback.
RESULT_SCHEMA = pa.schema(
    [
        ("shard", pa.int64()),
        ("rows_in", pa.int64()),
        ("rows_out", pa.int64()),
        ("rows_rejected", pa.int64()),
        ("phase", pa.string()),
        ("error", pa.binary()),
        ("trace", pa.string()),
    ]
)


def stage_uses_gpu(stage: Stage) -> bool:
    """Whether ``stage`` wants a GPU under the Ray executor.

    A stage says so with a ``uses_gpu`` attribute (a ``ClassVar[bool]``, a config field or
    a property). Without one, a stage with a ``device`` config field counts as a model
    stage unless that field says ``"cpu"`` (the reward-model and log-prob scorers pick
    CUDA when ``device`` is None and a GPU is visible).

    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Scorer(Stage):
    ...     device: str | None = None
    >>> stage_uses_gpu(Scorer()), stage_uses_gpu(Scorer(device="cpu")), stage_uses_gpu(Stage())
    (True, False, False)
    """
    declared = getattr(stage, "uses_gpu", None)
    if declared is not None:
        return bool(declared)
    if dataclasses.is_dataclass(stage) and any(
        f.name == "device" for f in dataclasses.fields(stage)
    ):
        device = getattr(stage, "device", None)
        return device is None or not str(device).startswith("cpu")
    return False


def stage_has_setup(stage: Stage) -> bool:
    """Whether ``stage`` overrides :meth:`Stage.setup` (so it runs in an actor pool).

    >>> from prefdata.sql import Sql
    >>> stage_has_setup(Sql("SELECT * FROM pools")), stage_has_setup(Stage())
    (True, False)
    """
    return stage.overrides_setup


# --------------------------------------------------------------------------- worker side


# A worker keeps the last row group it decoded: the next shard of the same row group that
# lands on this worker slices it instead of decoding it again.
_ROW_GROUPS = RowGroupCache()


def _run_shard(stage: Stage, task: dict[str, Any]) -> dict[str, Any]:
    """Run ``stage`` on one shard and write both files; the counts for the manifest."""
    if task["pieces"] is not None:
        spec = json.loads(task["pieces"])
        table = read_pieces(spec["sources"], spec["pieces"], _ROW_GROUPS)
    else:
        table = read_files(task["src"])
    table = as_read_back(table)  # as the local executor gives it to the stage
    out = stage(table)
    rows_out = out.kept  # pools that yielded output, for pools-in, pairs-out stages
    write_shard(out.table, task["out"])
    write_shard(shift_reject_rows(out.rejects, task["offset"]), task["rejects"])
    return {
        "shard": task["shard"],
        "rows_in": table.num_rows,
        "rows_out": rows_out,
        "rows_rejected": out.rejects.num_rows,
    }


def _failure(shard: int, phase: str, exc: BaseException) -> dict[str, Any]:
    """An error row: the exception pickled (or, when it cannot be, a RuntimeError with its
    text) and the worker-side traceback."""
    from ray import cloudpickle

    trace = "".join(traceback.format_exception(exc))
    try:
        payload = cloudpickle.dumps(exc)
    except Exception:
        payload = cloudpickle.dumps(RuntimeError(f"{type(exc).__name__}: {exc}"))
    return {"shard": shard, "phase": phase, "error": payload, "trace": trace}


def _run_batch(stage: Stage, batch: pa.Table, setup_error: BaseException | None = None) -> pa.Table:
    rows = []
    for task in batch.to_pylist():
        if setup_error is not None:
            rows.append(_failure(task["shard"], "setup", setup_error))
            continue
        try:
            rows.append(_run_shard(stage, task))
        except Exception as e:
            rows.append(_failure(task["shard"], "process", e))
    return pa.Table.from_pylist(rows, schema=RESULT_SCHEMA)


def _task_fn(batch: pa.Table, stage: Stage) -> pa.Table:
    """A Ray task: a stage without setup() of its own."""
    return _run_batch(stage, batch)


class _StageActor:
    """One actor of a stage's pool: the stage is built and set up once, then serves shards.

    A failing setup() is kept and reported for every shard the actor is given, so the
    driver raises :class:`StageError` with ``phase="setup"`` instead of Ray retrying it.
    """

    def __init__(self, stage: Stage) -> None:
        self.stage = stage
        self.setup_error: BaseException | None = None
        try:
            stage.ensure_setup()
        except Exception as e:
            self.setup_error = e

    def __call__(self, batch: pa.Table) -> pa.Table:
        return _run_batch(self.stage, batch, self.setup_error)


# --------------------------------------------------------------------------- driver side


def _code_search_path() -> list[str]:
    """Folders on the driver's ``sys.path`` outside the interpreter's own (the script's
    folder, a tests folder, ``PYTHONPATH``): a Ray we start lets workers import from them,
    so stages defined there unpickle on workers."""
    prefixes = {os.path.realpath(p) for p in {sys.prefix, sys.base_prefix, sys.exec_prefix}}
    paths = []
    for p in sys.path:
        real = os.path.realpath(p or os.getcwd())
        if os.path.isdir(real) and not any(
            real == pre or real.startswith(pre + os.sep) for pre in prefixes
        ):
            paths.append(real)
    return list(dict.fromkeys(paths))


@dataclass
class _Wave:
    """One stage's run over its unfinished shards."""

    stage: Stage
    index: int
    key: str
    tasks: list[dict[str, Any]]
    src: dict[int, Path | str]  # every shard's input (a file, or the source's row groups)
    rows: dict[int, int]  # every shard's input rows


class RayExecutor:
    """Run a pipeline on Ray Data over Arrow IPC shards under ``workdir``, resumably; the
    work directory, manifest and output are those of
    :class:`~prefdata.execute.LocalExecutor` (``open_workdir``, ``prefdata inspect`` and
    ``prefdata sql`` read it, and either executor resumes the other's run).

    ``shard_rows``: rows per shard (the checkpoint unit and one worker call); None picks it
    as the local executor does (:func:`~prefdata.execute.inputs.choose_shard_rows`).
    ``num_cpus``: CPUs for a Ray this executor starts itself (ignored when Ray is already
    initialised; the caller's Ray is never shut down, ours is shut down after the run).
    ``num_gpus_per_model_stage``: GPUs each actor of a stage with ``uses_gpu`` reserves
    (:func:`stage_uses_gpu`; 0 runs them on CPU; fractions share a GPU).
    ``concurrency``: at most this many tasks or actors per stage (default: tasks as Ray
    schedules them; actors one per CPU, or per ``num_gpus_per_model_stage`` GPUs, and never
    more than the shards to do).
    ``progress``: a tqdm bar per stage on stderr; None shows it only on a terminal.

    Stage classes must be importable on the workers (an installed package; for a Ray this
    executor starts, also any folder on the driver's ``sys.path``).

    >>> executor = RayExecutor("runs/demo", shard_rows=5000, num_gpus_per_model_stage=1)
    >>> stages = [RewardModel("models/rm"), Sql("SELECT * FROM pools")]  # doctest: +SKIP
    >>> result = executor.run(stages, "pools/")  # doctest: +SKIP
    """

    def __init__(
        self,
        workdir: str | os.PathLike,
        *,
        shard_rows: int | None = None,
        num_cpus: int | None = None,
        num_gpus_per_model_stage: float = 0,
        concurrency: int | None = None,
        progress: bool | None = None,
    ) -> None:
        if shard_rows is not None and shard_rows < 1:
            raise ValueError(f"shard_rows must be >= 1, got {shard_rows}")
        if num_gpus_per_model_stage < 0:
            raise ValueError(
                f"num_gpus_per_model_stage must be >= 0, got {num_gpus_per_model_stage}"
            )
        if concurrency is not None and concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.workdir = Path(workdir)
        self.shard_rows = shard_rows
        self.num_cpus = num_cpus
        self.num_gpus_per_model_stage = num_gpus_per_model_stage
        self.concurrency = concurrency
        self.progress = progress

    def run(self, stages: Pipeline | Sequence[Stage], source: Source) -> ExecutionResult:
        """Run ``stages`` over ``source`` (a Parquet file, a folder of them, a list of
        paths, a table of pools, or an :class:`~prefdata.execute.ingest.Ingest`, converted
        first into the same pool shards as the local executor's); resume whatever an
        earlier run left unfinished. Two-pass stages are fitted over their whole input
        first (:func:`~prefdata.execute.fitting.run_all`).

        Ray starts only when there is work to do. Raises
        :class:`~prefdata.pipeline.MissingColumnsError` before any work when a stage lacks
        a column, ValueError when a model stage needs more GPUs than the cluster has, and
        :class:`~prefdata.execute.StageError` (cause chained) when a stage fails.
        """
        return run_all(self._run_segment, stages, source, self.workdir, self.shard_rows)

    def _run_segment(
        self, stages: Sequence[Stage], source: Source, workdir: Path, sink: None = None
    ) -> ExecutionResult:
        """One run of stages that need no fit over a source of pools, in ``workdir``."""
        pipeline = stages if isinstance(stages, Pipeline) else Pipeline(list(stages))
        with begin_run(workdir, pipeline, source, self.shard_rows) as (
            manifest,
            keys,
            shard_counts,
        ):
            starts = [manifest.resume_point(keys, s) for s in range(len(shard_counts))]
            if any(start < len(keys) for start in starts):
                with _ray_session(self.num_cpus):
                    self._check_gpus(pipeline.stages)
                    self._process(pipeline.stages, keys, manifest, starts)
        return ExecutionResult.from_info(open_workdir(workdir))

    # ----------------------------------------------------------------- the plan

    def _wave(
        self, stages: list[Stage], keys: list[str], i: int, manifest: Manifest, starts: list[int]
    ) -> _Wave:
        """The shards stage ``i`` runs on (those whose resume point is at or before it),
        with the reject row offsets: the rows of the stage's input in the shards before
        (from the manifest, the input plan, or the input file's footer)."""
        key, tasks, src, rows, offset = keys[i], [], {}, {}, 0
        reader = InputReader(manifest)
        for s, start in enumerate(starts):
            if i == 0:
                pieces, path = reader.pieces(s), reader.describe(s)
            else:
                pieces, path = None, manifest.output_path(keys[i - 1], s)
            src[s] = path
            if start > i:
                rows[s] = manifest.done(key, s)["rows_in"]
                offset += rows[s]
                continue
            if i == 0:
                rows[s] = manifest.input["shards"][s]
            else:
                rows[s] = TableFile(path).num_rows
            spec = {"sources": manifest.input["sources"], "pieces": pieces}
            tasks.append(
                {
                    "shard": s,
                    "src": os.path.abspath(path)
                    if pieces is None
                    else None,  # workers may run elsewhere
                    "pieces": None if pieces is None else json.dumps(spec),
                    "out": os.path.abspath(manifest.output_path(key, s)),
                    "rejects": os.path.abspath(manifest.rejects_path(key, s)),
                    "offset": offset,
                }
            )
            offset += rows[s]
        return _Wave(stages[i], i, key, tasks, src, rows)

    def _check_gpus(self, stages: list[Stage]) -> None:
        import ray

        need = self.num_gpus_per_model_stage
        gpu_stages = [s.name for s in stages if stage_uses_gpu(s)]
        have = ray.cluster_resources().get("GPU", 0)
        if need and gpu_stages and have < need:
            raise ValueError(
                f"stages {gpu_stages} ask for {need} GPU(s) per actor "
                f"(num_gpus_per_model_stage) but the Ray cluster has {have}; "
                "pass num_gpus_per_model_stage=0 to run them on CPU"
            )

    def _map(self, wave: _Wave) -> Any:
        """The Ray Data plan of a wave: one block per shard, one call per shard."""
        import ray
        import ray.data

        ds = ray.data.from_arrow(
            pa.Table.from_pylist(wave.tasks, schema=TASK_SCHEMA),
            override_num_blocks=len(wave.tasks),
        )
        stage, common = wave.stage, {"batch_format": "pyarrow", "batch_size": 1}
        if stage_has_setup(stage):
            gpus = self.num_gpus_per_model_stage if stage_uses_gpu(stage) else 0
            resources = ray.cluster_resources()
            slots = int(resources.get("GPU", 0) // gpus) if gpus else int(resources.get("CPU", 1))
            size = max(1, min(len(wave.tasks), slots, self.concurrency or slots))
            ds = ds.map_batches(
                _StageActor,
                fn_constructor_kwargs={"stage": stage},
                compute=ray.data.ActorPoolStrategy(size=size),
                num_gpus=gpus or None,
                **common,
            )
        else:
            ds = ds.map_batches(
                _task_fn,
                fn_kwargs={"stage": stage},
                compute=ray.data.TaskPoolStrategy(size=self.concurrency),
                **common,
            )
        # our bar shows progress in rows per stage; Ray's own bars would repeat it
        ds.context.enable_progress_bars = False
        return ds

    # ----------------------------------------------------------------- running

    def _process(
        self, stages: list[Stage], keys: list[str], manifest: Manifest, starts: list[int]
    ) -> None:
        from ray import cloudpickle

        for i in range(len(stages)):
            wave = self._wave(stages, keys, i, manifest, starts)
            if not wave.tasks:
                continue
            total = sum(wave.rows.values())
            initial = total - sum(wave.rows[t["shard"]] for t in wave.tasks)
            failures: list[dict[str, Any]] = []
            with progress_bar(
                total,
                desc=f"prefdata {i + 1}/{len(stages)} {wave.stage.name}",
                initial=initial,
                enabled=self.progress,
            ) as bar:
                # iterating to the end: every task has finished when the loop exits
                for batch in self._map(wave).iter_batches(batch_size=None, batch_format="pyarrow"):
                    for row in batch.to_pylist():
                        if row["error"] is not None:
                            failures.append(row)
                            continue
                        manifest.record(
                            wave.key,
                            row["shard"],
                            row["rows_in"],
                            row["rows_out"],
                            row["rows_rejected"],
                        )
                        _sort_shards(manifest, wave.key)
                        manifest.save()
                        bar.update(row["rows_in"])
            if failures:
                first = min(failures, key=lambda r: r["shard"])
                try:
                    exc = cloudpickle.loads(first["error"])
                except Exception:  # its class does not import on the driver
                    exc = RuntimeError(first["trace"].strip().splitlines()[-1])
                exc.add_note(f"worker traceback:\n{first['trace']}")
                if len(failures) > 1:
                    others = sorted(r["shard"] for r in failures if r is not first)
                    exc.add_note(f"shards {others} of this stage failed too")
                raise StageError(
                    wave.stage.name, i, first["shard"], wave.src[first["shard"]], first["phase"]
                ) from exc


def _sort_shards(manifest: Manifest, key: str) -> None:
    """Keep a stage's shard records in shard order, whatever order results arrive in, so
    the manifest matches the local executor's byte for byte."""
    rec = manifest.stage(key)
    rec["shards"] = dict(sorted(rec["shards"].items()))


class _ray_session:
    """Use the running Ray, or start a local one for the run and shut it down after."""

    def __init__(self, num_cpus: int | None) -> None:
        self.num_cpus = num_cpus
        self.started = False

    def __enter__(self) -> _ray_session:
        import ray
        from ray.job_config import JobConfig

        if not ray.is_initialized():
            ray.init(
                num_cpus=self.num_cpus,
                include_dashboard=False,
                log_to_driver=False,  # worker errors come back as StageError notes
                job_config=JobConfig(code_search_path=_code_search_path()),
            )
            self.started = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self.started:
            import ray

            ray.shutdown()


__all__ = ["RayExecutor", "stage_has_setup", "stage_uses_gpu"]
