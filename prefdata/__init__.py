"""prefdata: curate and construct preference datasets on Arrow.

One row per prompt (a *pool* of candidate responses), row-local stages, a funnel that never
loses rows, checkpointed execution. See README.md.
"""

from prefdata.pipeline import Funnel, Pipeline, Stage, StageOutput
from prefdata.pools import Pools
from prefdata.schema import LIST_SCHEMA, PAIR_SCHEMA, POOL_SCHEMA, UNPAIRED_SCHEMA


def validate(table):  # noqa: ANN001, ANN201 - thin alias, typed in prefdata.validate
    """Row-level errors of a pool table: a list of ``ValidationError(row, field, reason)``."""
    from prefdata.validate import validate as _validate

    return _validate(table)


def read_pools(source, layout: str = "pool", **options):  # noqa: ANN001, ANN201
    """Read a dataset in any layout into pools; see :func:`prefdata.io.readers.read_pools`."""
    from prefdata.io.readers import read_pools as _read_pools

    return _read_pools(source, layout, **options)


__all__ = [
    "LIST_SCHEMA",
    "PAIR_SCHEMA",
    "POOL_SCHEMA",
    "UNPAIRED_SCHEMA",
    "Funnel",
    "Pipeline",
    "Pools",
    "Stage",
    "StageOutput",
    "read_pools",
    "validate",
]
__version__ = "0.1.0"
