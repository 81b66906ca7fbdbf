"""Per-scorer scores on pair tables.

A pair table carries every scorer's score of its two responses in two extra columns:

- ``chosen_scores``: ``struct<name: float64, ...>``, the chosen candidate's ``scores``;
- ``rejected_scores``: the same for the rejected candidate.

The struct has the pool's candidate ``scores`` fields (normalised fields such as ``rm.z``
included), so margins, strength, votes and peer filtering read any scorer by name.
:func:`attach_scores` fills them from the pools by joining on ``(prompt_id, chosen_id)`` and
``(prompt_id, rejected_id)``; construction may also emit them directly.

>>> import pyarrow as pa
>>> from prefdata.schema import pool_schema
>>> pools = pa.Table.from_pylist(
...     [{"prompt_id": "p", "prompt": [{"role": "user", "content": "q"}],
...       "candidates": [{"candidate_id": "a", "response": "A", "scores": {"rm": 2.0}},
...                      {"candidate_id": "b", "response": "B", "scores": {"rm": 0.5}}]}],
...     schema=pool_schema(["rm"]))
>>> pairs = pa.table({"prompt_id": ["p"], "chosen": ["A"], "rejected": ["B"],
...                   "chosen_id": ["a"], "rejected_id": ["b"]})
>>> out = attach_scores(pairs, pools)
>>> out["chosen_scores"].to_pylist(), out["rejected_scores"].to_pylist()
([{'rm': 2.0}], [{'rm': 0.5}])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prefdata.annotate.columns import CHOSEN_SCORES, REJECTED_SCORES
from prefdata.arrow import flatten_candidates, set_column


def candidate_keys(pools: pa.Table) -> tuple[pa.Array, pa.StructArray]:
    """``prompt_id \\x1f candidate_id`` per candidate, and the candidates' ``scores``."""
    flat = flatten_candidates(pools)
    pids = pools["prompt_id"].take(pa.array(flat.parents, type=pa.int64()))
    keys = pc.binary_join_element_wise(pids, pc.struct_field(flat.values, "candidate_id"), "\x1f")
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks()
    return keys, pc.struct_field(flat.values, "scores")


def attach_scores(
    pairs: pa.Table,
    pools: pa.Table,
    scorers: Sequence[str] = (),
    missing: Literal["error", "null"] = "error",
) -> pa.Table:
    """Add (or replace) ``chosen_scores`` and ``rejected_scores`` from the pools.

    ``scorers`` restricts the struct to some score fields. A pair whose candidate is not in
    the pools raises a ``ValueError`` naming the row and the field (``missing="error"``) or
    gets null scores (``missing="null"``).
    """
    keys, scores = candidate_keys(pools)
    if scorers:
        names = [f.name for f in scores.type]
        absent = [n for n in scorers if n not in names]
        if absent:
            raise KeyError(f"scorers {absent} not in the pools' scores (has {names})")
        scores = pa.StructArray.from_arrays(
            [pc.struct_field(scores, n) for n in scorers], names=list(scorers)
        )
    for side, out in (("chosen", CHOSEN_SCORES), ("rejected", REJECTED_SCORES)):
        id_col = f"{side}_id"
        if id_col not in pairs.column_names:
            raise KeyError(f"pair table lacks column {id_col!r} needed to attach scores")
        want = pc.binary_join_element_wise(pairs["prompt_id"], pairs[id_col], "\x1f")
        idx = pc.index_in(want, value_set=keys)
        if isinstance(idx, pa.ChunkedArray):
            idx = idx.combine_chunks()
        if missing == "error" and idx.null_count:
            row = int(np.flatnonzero(idx.is_null().to_numpy(zero_copy_only=False))[0])
            raise ValueError(
                f"pair row {row}: field {id_col!r} = {pairs[id_col][row].as_py()!r} "
                f"(prompt_id {pairs['prompt_id'][row].as_py()!r}) is not a candidate in the pools"
            )
        pairs = set_column(pairs, out, scores.take(idx))
    return pairs


__all__ = ["attach_scores", "candidate_keys"]
