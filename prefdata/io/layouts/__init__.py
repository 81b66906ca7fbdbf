"""Input layouts: turn a raw table (one row per record of the source) into pools.

=================  ===========================================================================
``pool``           already nested pools (missing ids, sources, flags and scores are filled in)
``long``           one row per response: prompt, response, optional generator, scores, id
``pairs``          chosen / rejected (strings or message lists), optional prompt and margin
``hh``             Anthropic HH-RLHF ``"\\n\\nHuman: ...\\n\\nAssistant: ..."`` transcripts
``ultrafeedback``  openbmb/UltraFeedback rows: an instruction and rated ``completions``
=================  ===========================================================================

:func:`to_pools` returns a :class:`~prefdata.pipeline.StageOutput`: the pools, and one
rejects entry per input row it could not use (stage ``layout:<name>``, ``row`` = input row
index, ``field`` = the offending column, an explicit reason). Every input row is either
part of a pool or rejected, so ``input rows = accepted rows + rejects``; the number of pools
is ``table.num_rows``.

Shared rules: a plain-string prompt becomes one user message; ``prompt_id`` is
:func:`prefdata.ids.prompt_id` of the messages unless ``id_col`` gives one (a given id that
names two different prompts rejects the later rows, naming the first row); rows with the same
prompt form one pool, in order of first appearance; ``sample_index`` is the position among
the pool's candidates from the same generator; ``candidate_id`` is
:func:`prefdata.ids.candidate_id`. Scores are float64, null stays null, NaN or infinity
rejects the row. Everything is computed column-wise (ids in bulk, :mod:`prefdata.ids`).

A conversion runs in two steps, so that the executor can stream it:
:func:`read_entries` turns a batch of input rows into candidate entries and rejects (row by
row: any batch, any order), and :func:`build_pools` groups the entries of whole prompts into
pools. :func:`to_pools` runs both on one table; the executor's ingest
(:mod:`prefdata.execute.ingest`) runs the first per input batch and the second per
partition of prompts.

Pairs and HH keep the recorded preference as the score ``preference`` (chosen 1.0, rejected
0.0); a score recorded per side (``chosen_score_col`` / ``rejected_score_col``, e.g.
``score_chosen`` / ``score_rejected``) goes to each candidate as ``scores[score_name]``.
A pool built from one pair records its margin (``margin_col``) as metadata
``{"margin": m}``. When several pairs share a prompt they are merged into one pool (a pool
holds one prompt), and the metadata lists the recorded pairs by candidate id:
``{"pairs": [{"chosen": id, "rejected": id, "margin": m}, ...]}``.

>>> import pyarrow as pa
>>> raw = pa.table({"prompt": ["Hi", "Hi", "Bye"], "response": ["a", "b", "c"],
...                 "rm": [0.5, None, 1.0]})
>>> out = to_pools(raw, "long", score_cols=["rm"])
>>> out.table.num_rows, out.rejects.num_rows
(2, 0)
>>> [[c["scores"]["rm"] for c in cands] for cands in out.table["candidates"].to_pylist()]
[[0.5, None], [1.0]]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prefdata.io.layouts.columns import Rejects
from prefdata.io.layouts.entries import Entries, assemble
from prefdata.io.layouts.long import long_entries
from prefdata.io.layouts.options import LAYOUTS, PREFERENCE, LayoutOptions
from prefdata.io.layouts.pairs import (
    hh_entries,
    pair_metadata,
    pairs_entries,
    reject_contradictions,
)
from prefdata.io.layouts.pool import pool_table
from prefdata.io.layouts.ultrafeedback import ULTRAFEEDBACK_SCORES, ultrafeedback_entries
from prefdata.pipeline import StageOutput, rejects_from, shift_reject_rows
from prefdata.schema import conform, conform_types

READERS = {
    "long": long_entries,
    "pairs": pairs_entries,
    "hh": hh_entries,
    "ultrafeedback": ultrafeedback_entries,
}


@dataclass
class ReadBatch:
    """What :func:`read_entries` makes of a batch of input rows: the entries of the rows
    it keeps (with their prompt keys) and the rejects of the others."""

    entries: Entries
    rejects: pa.Table


def score_names_of(layout: str, options: LayoutOptions) -> tuple[str, ...]:
    """The scores every candidate of ``layout`` gets (ultrafeedback: those asked for)."""
    if layout in ("pairs", "hh"):
        return options.pair_score_names()
    return tuple(options.score_cols)


def read_entries(
    raw: pa.Table,
    layout: str,
    options: LayoutOptions,
    *,
    row_offset: int = 0,
    rows: np.ndarray | None = None,
) -> ReadBatch:
    """The entries of one batch of input rows, numbered as input rows so reject rows count
    over the whole input: ``rows`` gives the input row of each raw row (a JSON line
    number, with bad lines skipped), else ``row_offset`` is that of the first row.

    >>> out = read_entries(pa.table({"prompt": ["Q", ""], "response": ["a", "b"]}), "long",
    ...                    LayoutOptions())
    >>> len(out.entries), out.rejects["reason"].to_pylist(), out.rejects["row"].to_pylist()
    (1, ['empty prompt'], [1])
    """
    raw = conform_types(raw)
    rej = Rejects()
    if raw.num_rows:
        entries = READERS[layout](raw, rej, options)
    else:
        entries = Entries.empty(score_names_of(layout, options))
    entries = entries.without(rej).with_keys()
    if options.id_col and len(entries):  # a clash found later rejects the row as read here
        records = rejects_from(raw, "", "")["record"].combine_chunks()
        entries.record = records.take(pa.array(entries.row))
    rejects = rej.table(raw, f"layout:{layout}")
    if rows is not None:
        entries.row = np.asarray(rows, np.int64)[entries.row]
        return ReadBatch(entries, input_rows(rejects, rows))
    entries.row = entries.row + row_offset
    return ReadBatch(entries, shift_reject_rows(rejects, row_offset))


def input_rows(rejects: pa.Table, rows: np.ndarray) -> pa.Table:
    """Rejects of a raw table renumbered as input rows: ``row`` k becomes ``rows[k]``.

    >>> r = rejects_from(pa.table({"prompt_id": ["p"]}), "demo", "bad", rows=[1])
    >>> input_rows(r, np.array([0, 2, 5]))["row"].to_pylist()
    [2]
    """
    rejects = shift_reject_rows(rejects, 0)
    if not rejects.num_rows:
        return rejects
    at = np.asarray(rows, np.int64)[rejects["row"].to_numpy()]
    i = rejects.schema.get_field_index("row")
    return rejects.set_column(i, "row", pa.array(at, pa.int64()))


def build_pools(
    entries: Entries,
    layout: str,
    options: LayoutOptions,
    *,
    source_name: str | None = None,
) -> StageOutput:
    """The pools of entries that hold whole prompts (every entry of each prompt), in input
    order; the rows rejected here (a given prompt id naming two prompts) carry the
    records the entries keep (:attr:`Entries.record`)."""
    rej = Rejects()
    entries = entries.sorted()
    if layout in ("pairs", "hh"):
        reject_contradictions(entries, rej, options.chosen_col)
    table, info = assemble(entries, rej, source=source_name, id_field=options.id_col)
    if layout in ("pairs", "hh"):
        table = pair_metadata(table, info)
    return StageOutput(conform(table), rej.table(None, f"layout:{layout}"), table.num_rows)


def to_pools(
    raw: pa.Table,
    layout: str,
    *,
    source_name: str | None = None,
    rows: np.ndarray | None = None,
    **options: Any,
) -> StageOutput:
    """Pools from a raw table in ``layout`` (one of :data:`LAYOUTS`); see the module doc.

    Options by layout (:class:`LayoutOptions`): ``long`` uses prompt_col (default
    ``prompt``, then ``instruction``), response_col (``response``, ``output``,
    ``completion``), generator_col, score_cols and id_col; ``pairs`` uses chosen_col,
    rejected_col, prompt_col (default ``prompt`` if present), margin_col, id_col,
    chosen_score_col / rejected_score_col / score_name; ``hh`` uses chosen_col,
    rejected_col, margin_col, id_col and the per-side scores; ``ultrafeedback`` uses
    prompt_col (``instruction``, ``prompt``), response_col and generator_col for
    completion fields (``response``, ``model``), and score_cols to pick scores (default:
    overall_score, fine_grained_score and the four aspect ratings present; another name
    reads that numeric field of each completion); ``pool`` uses id_col. Missing columns
    named by an option raise :class:`KeyError`; bad rows are rejected. ``rows``: the input
    row of each raw row (the reader's numbering, such as JSON lines), for the rejects.

    Per-side scores (``pairs`` and ``hh``; e.g. ultrafeedback_binarized's ``score_chosen``
    and ``score_rejected``): with ``chosen_score_col`` and ``rejected_score_col`` (both or
    neither) the chosen candidate gets ``scores[score_name]`` from the first column and the
    rejected one from the second, beside ``preference`` (which stays the first score).

    >>> import pyarrow as pa
    >>> out = to_pools(pa.table({"prompt": ["Q"], "chosen": ["A"], "rejected": ["B"]}), "pairs")
    >>> [(c["response"], c["scores"]["preference"]) for c in out.table["candidates"][0].as_py()]
    [('A', 1.0), ('B', 0.0)]
    >>> raw = pa.table({"prompt": ["Q"], "chosen": ["A"], "rejected": ["B"],
    ...                 "score_chosen": [8.5], "score_rejected": [None]})
    >>> out = to_pools(raw, "pairs", chosen_score_col="score_chosen",
    ...                rejected_score_col="score_rejected")
    >>> [c["scores"] for c in out.table["candidates"][0].as_py()]
    [{'preference': 1.0, 'score': 8.5}, {'preference': 0.0, 'score': None}]
    """
    o = LayoutOptions(**options).check(layout)
    stage = f"layout:{layout}"
    raw = conform_types(raw)
    if layout == "pool":
        rej = Rejects()
        table, rejects = pool_table(raw, rej, o, source_name), rej.table(raw, stage)
        return StageOutput(table, rejects if rows is None else input_rows(rejects, rows))
    # the two steps the executor's ingest streams, on the whole table at once
    read = read_entries(raw, layout, o, rows=rows)
    built = build_pools(read.entries, layout, o, source_name=source_name)
    rejects = pa.concat_tables([read.rejects, built.rejects])
    rejects = rejects.take(pc.sort_indices(rejects["row"]))
    accepted = read.entries.num_rows() - built.rejects.num_rows
    if accepted + rejects.num_rows != raw.num_rows:  # every row: in a pool or rejected
        raise AssertionError(
            f"{stage}: {raw.num_rows} rows in, {accepted} accepted, {rejects.num_rows} rejected"
        )
    return StageOutput(built.table, rejects)


__all__ = [
    "LAYOUTS",
    "PREFERENCE",
    "ULTRAFEEDBACK_SCORES",
    "Entries",
    "LayoutOptions",
    "ReadBatch",
    "build_pools",
    "input_rows",
    "read_entries",
    "score_names_of",
    "to_pools",
]
