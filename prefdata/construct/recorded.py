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

from prefdata.arrow import list_offsets, np_bool
from prefdata.construct.candidates import ConstructStage, dumps, provenance_prefix
from prefdata.construct.pairs import pair_schema
from prefdata.pipeline import rejects_from
from prefdata.schema import empty_rejects


def pl_json_field(texts: pa.Array, name: str) -> pa.Array:
    """Field ``name`` of JSON objects (one per string) as its JSON text; null where the
    text is null or has no such field.

    >>> pl_json_field(pa.array(['{"margin": 2.5}', None, "{}"]), "margin").to_pylist()
    ['2.5', None, None]
    """
    import polars as pl

    out = pl.Series(texts).str.json_path_match(f"$.{name}").to_arrow()
    return out.cast(pa.string())


@dataclass(frozen=True)
class RecordedPairs(ConstructStage):
    """Emit the pairs recorded in each pool (see the module docstring).

    A pool from one pair yields it (chosen = the candidate scored 1.0 under ``preference``,
    rejected = 0.0); a merged pool yields every pair in ``metadata.pairs``, with its recorded
    margin. A pool without an unambiguous recorded pair, or whose recorded ids are not among
    its candidates, goes to rejects with the reason. ``annotators=True`` adds the optional
    ``annotator_id`` column: who recorded each pair (the layouts' ``annotator_col``), null
    where the source does not say.
    """

    preference: str = "preference"
    annotators: bool = False
    strategy: ClassVar[str] = "recorded"

    def required_columns(self) -> tuple[str, ...]:
        return ("prompt_id", "prompt", "candidates", "metadata")

    def provided_columns(self) -> tuple[str, ...]:
        extra = ("annotator_id",) if self.annotators else ()
        return (*pair_schema().names, "chosen_scores", "rejected_scores", *extra)

    def construct(self, table: pa.Table) -> tuple[pa.Table, np.ndarray, pa.Table]:
        lists = table["candidates"].combine_chunks()
        flat = pc.list_flatten(lists)
        offsets = list_offsets(lists)
        n = table.num_rows
        meta = table["metadata"].combine_chunks().cast(pa.string())
        # Pools from one pair (the common case) are read column-wise; pools that list
        # their pairs, or hold metadata that is not a plain object, one at a time.
        listed = np_bool(pc.match_substring(meta, '"pairs"')) | (
            np_bool(meta.is_valid()) & ~np_bool(pc.match_substring_regex(meta, r"^\s*\{"))
        )
        c_one, r_one, ok = self._single_pairs(flat, offsets, n)
        ok &= ~listed
        quick = np.flatnonzero(ok)
        margins = (
            pc.cast(
                pl_json_field(meta.take(pa.array(quick)), "margin"),
                pa.float64(),
            )
            if len(quick)
            else pa.array([], pa.float64())
        )
        annot_quick = (
            pl_json_field(meta.take(pa.array(quick)), "annotator")
            if len(quick)
            else pa.array([], pa.string())
        )
        slow = np.flatnonzero(~ok)
        c_s, r_s, src_s, m_s, a_s, bad_rows, bad_reasons = self._by_row(
            table, flat, offsets, slow, meta.take(pa.array(slow)).to_pylist()
        )
        src = np.concatenate([quick, np.asarray(src_s, np.int64)])
        order = np.argsort(src, kind="stable")
        ci = np.concatenate([c_one[quick], np.asarray(c_s, np.int64)])[order]
        ri = np.concatenate([r_one[quick], np.asarray(r_s, np.int64)])[order]
        margin = pa.concat_arrays([margins, pa.array(m_s, pa.float64())]).take(pa.array(order))
        out = self._assemble(table, flat, ci, ri, src[order], margin)
        if self.annotators:
            who = pa.concat_arrays([annot_quick.cast(pa.string()), pa.array(a_s, pa.string())])
            out = out.append_column("annotator_id", who.take(pa.array(order)))
        rejects = (
            rejects_from(
                table.take(bad_rows), self.name, bad_reasons, field="metadata", rows=bad_rows
            )
            if bad_rows
            else empty_rejects()
        )
        return out, src[order], rejects

    def _single_pairs(
        self, flat: pa.Array, offsets: np.ndarray, n: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per pool: the one candidate scored 1.0 and the one scored 0.0, and whether
        there is exactly one of each."""
        c_at, r_at = np.full(n, -1, np.int64), np.full(n, -1, np.int64)
        if flat.type.field("scores").type.get_field_index(self.preference) < 0 or not len(flat):
            return c_at, r_at, np.zeros(n, bool)
        pref = pc.struct_field(flat, ["scores", self.preference])
        parents = np.repeat(np.arange(n), np.diff(offsets))
        counts = []
        for value, at in ((1.0, c_at), (0.0, r_at)):
            hit = np.flatnonzero(np_bool(pc.equal(pref, value)))
            at[parents[hit]] = hit
            counts.append(np.bincount(parents[hit], minlength=n))
        return c_at, r_at, (counts[0] == 1) & (counts[1] == 1)

    def _by_row(self, table, flat, offsets, rows, metas) -> tuple:
        """The pools read one at a time: (chosen, rejected, row, margin) per pair, and
        the rows rejected with their reasons."""
        # the candidates of these rows, read into Python once
        sizes = (offsets[rows + 1] - offsets[rows]).astype(np.int64)
        at = np.repeat(offsets[rows] - np.cumsum(sizes) + sizes, sizes) + np.arange(sizes.sum())
        take = pa.array(at, pa.int64())
        ids = pc.struct_field(flat, "candidate_id").take(take).to_pylist()
        has_pref = flat.type.field("scores").type.get_field_index(self.preference) >= 0
        prefs = (
            pc.struct_field(flat, ["scores", self.preference]).take(take).to_pylist()
            if has_pref
            else [None] * len(at)
        )
        c_idx, r_idx, src, margins, annotators = [], [], [], [], []
        bad_rows, bad_reasons = [], []
        start = 0
        for row, meta_text, size in zip(rows.tolist(), metas, sizes.tolist(), strict=True):
            lo = int(offsets[row])
            row_ids, pref = ids[start : start + size], prefs[start : start + size]
            start += size
            where = {cid: lo + k for k, cid in enumerate(row_ids)}
            meta = json.loads(meta_text) if meta_text else {}
            if isinstance(meta, dict) and isinstance(meta.get("pairs"), list):
                recorded = [
                    (p.get("chosen"), p.get("rejected"), p.get("margin"), p.get("annotator"))
                    for p in meta["pairs"]
                ]
            else:
                ones = [c for c, v in zip(row_ids, pref, strict=True) if v == 1.0]
                zeros = [c for c, v in zip(row_ids, pref, strict=True) if v == 0.0]
                info = meta if isinstance(meta, dict) else {}
                recorded = (
                    [(ones[0], zeros[0], info.get("margin"), info.get("annotator"))]
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
            for chosen, rejected, margin, annotator in recorded:
                c_idx.append(where[chosen])
                r_idx.append(where[rejected])
                src.append(row)
                margins.append(margin)
                annotators.append(None if annotator is None else str(annotator))
        return c_idx, r_idx, src, margins, annotators, bad_rows, bad_reasons

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
            "margin": margins,
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
