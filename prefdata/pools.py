"""Fluent chaining over a table of pools.

>>> import pyarrow as pa
>>> from prefdata.schema import pool_schema
>>> t = pa.Table.from_pylist(
...     [{"prompt_id": "p-1", "prompt": [{"role": "user", "content": "Hi"}],
...       "candidates": [{"candidate_id": "c-1", "response": "Hello", "scores": {"rm": 1.0}}]}],
...     schema=pool_schema(["rm"]))
>>> pools = Pools(t).sql("SELECT * FROM pools WHERE len(candidates) > 1")
>>> len(pools), pools.funnel.summary()
(0, 'Sql: 1 in -> 0 out, 1 rejected')
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from prefdata.pipeline import Funnel, Pipeline, Stage
from prefdata.schema import empty_rejects


class Pools:
    """A table of pools with its rejects and funnel; each method returns a new ``Pools``."""

    def __init__(
        self, table: pa.Table, rejects: pa.Table | None = None, funnel: Funnel | None = None
    ) -> None:
        self.table = table
        self.rejects = rejects if rejects is not None else empty_rejects()
        self.funnel = funnel if funnel is not None else Funnel()

    @classmethod
    def read(cls, source: Any, layout: str = "pool", **options: Any) -> Pools:
        """Read any supported source into pools (see :func:`prefdata.io.readers.read_pools`)."""
        from prefdata.io.readers import read_pools

        table, rejects, funnel = read_pools(source, layout, **options)
        return cls(table, rejects, funnel)

    def pipe(self, *stages: Stage, progress: bool | None = None) -> Pools:
        """Run stages in memory, keeping rejects and adding to the funnel (a bar over the
        stages on a terminal, unless ``progress`` says)."""
        result = Pipeline(list(stages)).run(self.table, progress=progress)
        funnel = self.funnel.then(result.funnel)
        return type(self)(result.table, pa.concat_tables([self.rejects, result.rejects]), funnel)

    def sql(self, query: str) -> Pools:
        """Filter or derive columns with DuckDB (``FROM pools``); see :class:`prefdata.sql.Sql`."""
        from prefdata.sql import Sql

        return self.pipe(Sql(query))

    def pairs(self, strategy: str = "best-worst", score: str | None = None, **config: Any) -> Pools:
        """Construct pairs (see :class:`prefdata.construct.Pairs`); ``strategy="recorded"``
        keeps the preferences an imported pairwise dataset holds. The result holds pairs.
        """
        from prefdata.construct import Pairs
        from prefdata.construct.recorded import RecordedPairs

        stage = (
            RecordedPairs(**config)
            if strategy == "recorded"
            else Pairs(strategy, score=score, **config)
        )
        return self.pipe(stage)

    def export(self, format: str, out_dir: str | Path, **options: Any):
        """Write the pairs (lists, unpaired) in a trainer's format; see
        :func:`prefdata.io.export.export`. Returns the paths, with ``.rejects``."""
        from prefdata.io.export import export

        return export(self.table, format, out_dir, funnel=self.funnel, **options)

    def run(self, stages: Sequence[Stage], workdir: str | Path, **options: Any) -> Pools:
        """Run stages through the checkpointed local executor under ``workdir``."""
        from prefdata.execute import LocalExecutor

        result = LocalExecutor(workdir, **options).run(list(stages), self.table)
        funnel = self.funnel.then(result.funnel)
        return type(self)(result.read(), pa.concat_tables([self.rejects, result.rejects()]), funnel)

    def write_parquet(self, path: str | Path) -> Path:
        from prefdata.io.parquet import write_parquet

        return write_parquet(self.table, path)

    def to_arrow(self) -> pa.Table:
        return self.table

    def to_polars(self):
        import polars as pl

        return pl.from_arrow(self.table)

    def __len__(self) -> int:
        return self.table.num_rows

    def __repr__(self) -> str:
        return f"Pools({self.table.num_rows} pools, {self.rejects.num_rows} rejects)"
