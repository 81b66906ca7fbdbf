"""Recorded pairs: the preferences an imported pairwise dataset already holds.

The ``pairs`` and ``hh`` layouts turn each (chosen, rejected) row into candidates scored
``preference`` 1.0 and 0.0; rows that share a prompt merge into one pool whose metadata
lists the recorded pairs by candidate id (``{"pairs": [{"chosen": id, "rejected": id,
"margin": m}, ...]}``). :class:`RecordedPairs` emits exactly those pairs, so binarizing such
a dataset neither loses nor invents a preference.

>>> import pyarrow as pa
>>> from prefdata.schema import pool_schema
>>> c = lambda i, s: {"candidate_id": i, "response": i.upper(), "scores": {"preference": s},
...                   "flags": []}
>>> merged = '{"pairs": [{"chosen": "a", "rejected": "b"}, {"chosen": "c", "rejected": "a"}]}'
>>> q = [{"role": "user", "content": "Q"}]
>>> pools = pa.Table.from_pylist([
...     {"prompt_id": "p", "prompt": q, "metadata": merged,
...      "candidates": [c("a", 1.0), c("b", 0.0), c("c", 1.0), c("a2", 0.0)]},
...     {"prompt_id": "q", "prompt": q, "metadata": '{"margin": 2.5}',
...      "candidates": [c("x", 0.0), c("y", 1.0)]}], schema=pool_schema(["preference"]))
>>> out = RecordedPairs()(pools).table
>>> for row in out.select(["prompt_id", "chosen", "rejected", "margin"]).to_pylist():
...     print(row)
{'prompt_id': 'p', 'chosen': 'A', 'rejected': 'B', 'margin': None}
{'prompt_id': 'p', 'chosen': 'C', 'rejected': 'A', 'margin': None}
{'prompt_id': 'q', 'chosen': 'Y', 'rejected': 'X', 'margin': 2.5}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prefdata.arrow import list_offsets
from prefdata.construct.candidates import ConstructStage, dumps, provenance_prefix
from prefdata.construct.pairs import pair_schema
from prefdata.pipeline import rejects_from
from prefdata.schema import empty_rejects


@dataclass(frozen=True)
class RecordedPairs(ConstructStage):
    """Emit the pairs recorded in each pool (see the module docstring).

    A pool from one pair yields it (chosen = the candidate scored 1.0 under ``preference``,
    rejected = 0.0); a merged pool yields every pair in ``metadata.pairs``, with its recorded
    margin. A pool without an unambiguous recorded pair, or whose recorded ids are not among
    its candidates, goes to rejects with the reason.
    """

    preference: str = "preference"
    strategy: ClassVar[str] = "recorded"

    def required_columns(self) -> tuple[str, ...]:
        return ("prompt_id", "prompt", "candidates", "metadata")

    def provided_columns(self) -> tuple[str, ...]:
        return (*pair_schema().names, "chosen_scores", "rejected_scores")

    def construct(self, table: pa.Table) -> tuple[pa.Table, np.ndarray, pa.Table]:
        lists = table["candidates"].combine_chunks()
        flat = pc.list_flatten(lists)
        offsets = list_offsets(lists)
        ids = pc.struct_field(flat, "candidate_id").to_pylist()
        has_pref = flat.type.field("scores").type.get_field_index(self.preference) >= 0
        pref = (
            pc.struct_field(flat, ["scores", self.preference]).to_pylist()
            if has_pref
            else [None] * len(flat)
        )
        c_idx, r_idx, src, margins = [], [], [], []
        bad_rows, bad_reasons = [], []
        for row, meta_text in enumerate(table["metadata"].to_pylist()):
            lo, hi = int(offsets[row]), int(offsets[row + 1])
            where = {ids[k]: k for k in range(lo, hi)}
            meta = json.loads(meta_text) if meta_text else {}
            if isinstance(meta, dict) and isinstance(meta.get("pairs"), list):
                recorded = [
                    (p.get("chosen"), p.get("rejected"), p.get("margin")) for p in meta["pairs"]
                ]
            else:
                ones = [ids[k] for k in range(lo, hi) if pref[k] == 1.0]
                zeros = [ids[k] for k in range(lo, hi) if pref[k] == 0.0]
                recorded = (
                    [(ones[0], zeros[0], (meta or {}).get("margin"))]
                    if (len(ones) == 1 and len(zeros) == 1)
                    else []
                )
            missing = [x for p in recorded for x in p[:2] if x not in where]
            if not recorded or missing:
                bad_rows.append(row)
                bad_reasons.append(
                    f"recorded pair ids {missing} not among the candidates"
                    if missing
                    else f"no recorded pair: needs metadata.pairs or one candidate scored 1.0 and "
                    f"one 0.0 under {self.preference!r}"
                )
                continue
            for chosen, rejected, margin in recorded:
                c_idx.append(where[chosen])
                r_idx.append(where[rejected])
                src.append(row)
                margins.append(margin)
        src_arr = np.asarray(src, dtype=np.int64)
        out = self._assemble(
            table, flat, np.asarray(c_idx, np.int64), np.asarray(r_idx, np.int64), src_arr, margins
        )
        rejects = (
            rejects_from(
                table.take(bad_rows), self.name, bad_reasons, field="metadata", rows=bad_rows
            )
            if bad_rows
            else empty_rejects()
        )
        return out, src_arr, rejects

    def _assemble(self, table, flat, ci, ri, src, margins) -> pa.Table:
        n = len(src)
        take = lambda name, idx: pc.struct_field(flat, name).take(pa.array(idx))  # noqa: E731
        null_f = pa.nulls(n, pa.float64())
        scores = pc.struct_field(flat, "scores")
        has_pref = scores.type.get_field_index(self.preference) >= 0
        pref = pc.struct_field(scores, self.preference) if has_pref else None
        prov = dumps(provenance_prefix(self, strategy="recorded", preference=self.preference))
        cols = {
            "prompt_id": table["prompt_id"].take(pa.array(src)),
            "prompt": table["prompt"].take(pa.array(src)),
            "chosen": take("response", ci),
            "rejected": take("response", ri),
            "chosen_id": take("candidate_id", ci),
            "rejected_id": take("candidate_id", ri),
            "chosen_generator": take("generator", ci),
            "rejected_generator": take("generator", ri),
            "margin": pa.array(margins, pa.float64()),
            "strength_mean": null_f,
            "strength_std": null_f,
            "p_chosen": null_f,
            "votes": pa.nulls(n, pa.int32()),
            "rationale": pa.nulls(n, pa.string()),
            "strategy": pa.repeat(pa.scalar("recorded"), n),
            "provenance": pa.repeat(pa.scalar(prov), n),
            "chosen_score": pref.take(pa.array(ci)) if has_pref else null_f,
            "rejected_score": pref.take(pa.array(ri)) if has_pref else null_f,
        }
        schema = pair_schema()
        out = pa.table(
            [
                c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c
                for c in (cols[f.name] for f in schema)
            ],
            schema=schema,
        )
        if scores.type.num_fields:
            out = out.append_column("chosen_scores", scores.take(pa.array(ci)))
            out = out.append_column("rejected_scores", scores.take(pa.array(ri)))
        return out


__all__ = ["RecordedPairs"]
