"""Executors: run a pipeline over Arrow IPC shards, checkpointed in a work directory.

>>> from prefdata.execute import LocalExecutor, open_workdir
>>> result = LocalExecutor("runs/demo").run(stages, "pools.parquet")  # doctest: +SKIP
>>> open_workdir("runs/demo").funnel.summary() == result.funnel.summary()  # doctest: +SKIP
True
"""

from prefdata.execute.ingest import Ingest
from prefdata.execute.local import ExecutionResult, LocalExecutor, StageError
from prefdata.execute.ray import RayExecutor  # imports ray only when it runs
from prefdata.execute.workdir import WorkdirInfo, open_workdir

__all__ = [
    "ExecutionResult",
    "Ingest",
    "LocalExecutor",
    "RayExecutor",
    "StageError",
    "WorkdirInfo",
    "open_workdir",
]
