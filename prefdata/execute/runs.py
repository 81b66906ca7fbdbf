"""A run's folder seen whole: the work directories an executor (or a recipe running
several) left under it, in the order they ran, as one funnel, one output and one list of
rejects.

A run with ingest and fits leaves ``ingest/`` and ``pipeline/segments/NN/`` under its work
directory; ``recipes/binarize.py`` runs two such (``work/pools``, ``work/pairs``).
:func:`open_run` finds them all, so ``prefdata inspect OUT/work`` and ``prefdata sql``
show the whole path from the input rows to the last output.

>>> run = open_run("out/sample/work")  # doctest: +SKIP
>>> [e.stage for e in run.funnel.entries][:3]  # doctest: +SKIP
['read', 'layout:long', 'FlagDegenerate']
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from prefdata.execute.ingest import ingest_funnel, ingest_rejects, is_ingest
from prefdata.execute.manifest import MANIFEST
from prefdata.execute.workdir import WorkdirInfo, open_workdir
from prefdata.io.shards import read_files
from prefdata.pipeline import Funnel
from prefdata.schema import empty_rejects


@dataclass
class RunInfo:
    """The work directories of a run (in run order), its funnel, last output and rejects."""

    path: Path
    workdirs: list[Path]
    funnel: Funnel
    outputs: list[Path]
    rejects: list[Path]
    stages: list[dict] = field(default_factory=list)

    def read(self) -> pa.Table | None:
        """The last work directory's output (None when it has none yet)."""
        return read_files(list(self.outputs)) if self.outputs else None

    def read_rejects(self) -> pa.Table:
        return read_files(list(self.rejects)) if self.rejects else empty_rejects()


def work_directories(path: str | os.PathLike) -> list[Path]:
    """Every folder at or under ``path`` holding a manifest, in the order the runs saved
    them (a run saves each manifest as it goes, ingest before stages)."""
    found = [p.parent for p in Path(path).rglob(MANIFEST) if p.is_file()]
    return sorted(found, key=lambda d: ((d / MANIFEST).stat().st_mtime_ns, str(d)))


def open_run(path: str | os.PathLike) -> RunInfo:
    """The run under ``path`` (a work directory, or a folder of several); raises
    FileNotFoundError when there is none."""
    dirs = work_directories(path)
    if not dirs:
        raise FileNotFoundError(f"{path}: no {MANIFEST} at or under it; not a prefdata run")
    funnel, rejects, outputs, stages = Funnel(), [], [], []
    for d in dirs:
        if is_ingest(d):
            plan = json.loads((d / MANIFEST).read_text(encoding="utf-8"))
            part = ingest_funnel(plan)
            rejects += ingest_rejects(d)
        else:
            info: WorkdirInfo = open_workdir(d)
            part = info.funnel
            rejects += list(info.rejects)
            stages += info.stages
            if info.outputs:
                outputs = list(info.outputs)
        funnel = funnel.then(part)
    return RunInfo(Path(path), dirs, funnel, outputs, rejects, stages)


__all__ = ["RunInfo", "open_run", "work_directories"]
