"""What every reader gives: a raw table, its rejects (stage ``read``) and how input rows
map to table rows, shared by :mod:`prefdata.io.readers` and :mod:`prefdata.io.csv_files`."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from prefdata.schema import REJECTS_SCHEMA, conform_types

STAGE = "read"


class NameNotUTF8(ValueError):
    """A column name that is not valid UTF-8 (Arrow keeps a CSV header's bytes as they
    are; reading the name back fails)."""


class ReadRejects(list):
    """Read rejects: (row, field, reason, record text); ``kept``: the input row of each
    row read, in table order, where a reader numbers rows itself (JSON: lines or items),
    else None (rows are the input rows not rejected)."""

    kept: list[int] | None = None

    def keep(self, rows: Iterable[int]) -> None:
        self.kept = [*(self.kept or []), *rows]

    def rows(self, n: int) -> np.ndarray:
        """The input row of each of the ``n`` rows read."""
        if self.kept is not None:
            return np.asarray(self.kept, np.int64)
        rows = np.arange(n + len(self), dtype=np.int64)
        if len(self):
            rows = np.delete(rows, [x[0] for x in self])
        return rows

    def table(self) -> pa.Table:
        """The rejects as a ``REJECTS_SCHEMA`` table, by row.

        >>> rejects = ReadRejects([(2, "rm", "bad", "{}"), (0, None, "worse", "{}")])
        >>> rejects.table()["row"].to_pylist()
        [0, 2]
        """
        items = sorted(self, key=lambda x: x[0])
        return pa.table(
            {
                "stage": [STAGE] * len(items),
                "reason": [x[2] for x in items],
                "row": [x[0] for x in items],
                "prompt_id": [None] * len(items),
                "field": [x[1] for x in items],
                "record": [x[3] for x in items],
            },
            schema=REJECTS_SCHEMA,
        )


def record_text(record: Any) -> str:
    """A rejected row as the JSON text of its ``record`` field.

    >>> record_text({"prompt": "café", "rm": None})
    '{"prompt": "café", "rm": null}'
    """
    return json.dumps(record, ensure_ascii=False, default=str)


def plain_table(table: pa.Table) -> pa.Table:
    """Plain Arrow types (string, not large_string or views; dictionaries decoded), no
    schema metadata."""
    try:
        names = table.column_names
    except UnicodeDecodeError as e:
        raise NameNotUTF8(f"a column name is not valid UTF-8: {e.object!r}") from None
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(
            f"column {twice[0]!r} appears {names.count(twice[0])} times in the input; "
            "rename or drop the copies"
        )
    for i, f in enumerate(table.schema):
        if pa.types.is_dictionary(f.type):
            table = table.set_column(i, f.name, table[f.name].cast(f.type.value_type))
    return conform_types(table.replace_schema_metadata(None))


@dataclass
class RawBatch:
    """A batch of input rows: the raw table, the rows of the batch that could not be read
    (stage ``read``; ``row`` counts lines or rows over the whole input), how many input
    rows the batch covers (``table.num_rows + rejects.num_rows``), and the input row of
    each table row (None: the rows follow on from the previous batch's, one by one), so
    the layout's rejects number rows as the read's do."""

    table: pa.Table
    rejects: pa.Table
    rows_in: int
    rows: np.ndarray | None = None
