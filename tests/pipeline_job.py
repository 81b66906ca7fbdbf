"""Test stages, a pool generator, and a job script the executor tests run as a subprocess.

    python tests/pipeline_job.py --input pools.parquet --workdir W --shard-rows 5 \
        [--sleep 0.02] [--hold-from-row 150] [--log calls.tsv]

The stages are deterministic and cheap. ``sleep_s``, ``hold_from_row``, ``fail_on`` and
``log`` are marked ``fingerprint=False``: they change how a run behaves (slow, blocked,
failing, logging its calls) but not what it computes, so a resumed run reuses the killed
run's shards.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from prefdata.pipeline import Stage, split
from prefdata.schema import pool_schema

RUNTIME = {"fingerprint": False}


def row_index(table: pa.Table) -> pa.Array:
    """The number in prompt ids ``p00042`` (as made by :func:`make_pools`)."""
    return pc.cast(pc.utf8_slice_codeunits(table["prompt_id"], 1), pa.int64())


def _log(path: str | None, stage: str, table: pa.Table) -> None:
    """One line per call: stage, first prompt id, rows (tests map it to a shard)."""
    if path:
        first = table["prompt_id"][0].as_py() if table.num_rows else "-"
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(f"{stage}\t{first}\t{table.num_rows}\n")


@dataclass(frozen=True)
class CountCandidates(Stage):
    """Adds ``n_candidates`` (int32)."""

    provides = ("n_candidates",)
    log: str | None = field(default=None, metadata=RUNTIME)

    def process(self, table: pa.Table) -> pa.Table:
        _log(self.log, self.name, table)
        return table.append_column("n_candidates", pc.list_value_length(table["candidates"]))


@dataclass(frozen=True)
class CostlyCount(CountCandidates):
    """CountCandidates marked costly: checkpoint="auto" keeps its output shards."""

    checkpoint = True


@dataclass(frozen=True)
class Slow(Stage):
    """Appends ``suffix`` to ``source``; sleeps per call, can block or fail on purpose."""

    suffix: str = "!"
    sleep_s: float = field(default=0.0, metadata=RUNTIME)
    hold_from_row: int | None = field(default=None, metadata=RUNTIME)
    fail_on: str | None = field(default=None, metadata=RUNTIME)
    log: str | None = field(default=None, metadata=RUNTIME)

    def process(self, table: pa.Table) -> pa.Table:
        _log(self.log, self.name, table)
        if self.fail_on is not None and self.fail_on in table["prompt_id"].to_pylist():
            raise RuntimeError(f"planned failure on {self.fail_on}")
        time.sleep(self.sleep_s)
        if self.hold_from_row is not None and table.num_rows:
            if pc.max(row_index(table)).as_py() >= self.hold_from_row:
                while True:  # blocked until the test kills the process
                    time.sleep(0.05)
        i = table.schema.get_field_index("source")
        return table.set_column(
            i, "source", pc.binary_join_element_wise(table["source"], self.suffix, "")
        )


@dataclass(frozen=True)
class DropEvery(Stage):
    """Rejects pools whose index is a multiple of ``every``."""

    requires = ("prompt_id", "n_candidates")
    every: int = 3
    log: str | None = field(default=None, metadata=RUNTIME)

    def process(self, table):
        _log(self.log, self.name, table)
        keep = pc.not_equal(pc.remainder(row_index(table), self.every), 0)
        return split(
            table,
            keep.to_numpy(zero_copy_only=False),
            self.name,
            f"index divisible by {self.every}",
            field="prompt_id",
        )


def stages(
    *,
    suffix: str = "!",
    sleep_s: float = 0.0,
    hold_from_row: int | None = None,
    fail_on: str | None = None,
    log: str | None = None,
) -> list[Stage]:
    return [
        CountCandidates(log=log),
        Slow(suffix=suffix, sleep_s=sleep_s, hold_from_row=hold_from_row, fail_on=fail_on, log=log),
        DropEvery(log=log),
    ]


def make_pools(n: int, start: int = 0) -> pa.Table:
    """``n`` deterministic pools (ids ``p00000``...) with 1-3 scored candidates each."""
    rows = []
    for i in range(start, start + n):
        pid = f"p{i:05d}"
        rows.append(
            {
                "prompt_id": pid,
                "prompt": [{"role": "user", "content": f"Question number {i}?"}],
                "source": "synthetic",
                "metadata": json.dumps({"i": i}),
                "candidates": [
                    {
                        "candidate_id": f"c-{i}-{j}",
                        "response": f"answer {j} to {i}",
                        "generator": f"gen{j}",
                        "sample_index": j,
                        "seed": i * 10 + j,
                        "finish_reason": "stop",
                        "num_tokens": 3 + j,
                        "scores": {"rm": (i * 7 + j * 3) % 11 / 10.0},
                        "flags": [],
                    }
                    for j in range(1 + i % 3)
                ],
            }
        )
    return pa.Table.from_pylist(rows, schema=pool_schema(["rm"]))


def main(argv: list[str] | None = None) -> int:
    from prefdata.execute import LocalExecutor

    p = argparse.ArgumentParser()
    p.add_argument("--input", required=True)
    p.add_argument("--workdir", required=True)
    p.add_argument("--shard-rows", type=int, default=5)
    p.add_argument("--sleep", type=float, default=0.0)
    p.add_argument("--hold-from-row", type=int)
    p.add_argument("--log")
    p.add_argument("--checkpoint", default="auto")
    args = p.parse_args(argv)
    job = stages(sleep_s=args.sleep, hold_from_row=args.hold_from_row, log=args.log)
    executor = LocalExecutor(args.workdir, shard_rows=args.shard_rows, checkpoint=args.checkpoint)
    result = executor.run(job, args.input)
    print(result.funnel.summary())
    return 0


if __name__ == "__main__":
    # import this file under its module name, so the stages' fingerprints (which include
    # the module) match those of the tests that import it
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import pipeline_job

    sys.exit(pipeline_job.main())
