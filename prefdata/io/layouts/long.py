"""The ``long`` layout: one row per response (prompt, response, optional generator,
scores and prompt id); rows with the same prompt form one pool.

>>> import pyarrow as pa
>>> from prefdata.io.layouts.columns import Rejects
>>> from prefdata.io.layouts.options import LayoutOptions
>>> e = long_entries(pa.table({"prompt": ["Q", "Q"], "response": ["a", None]}), Rejects(),
...                  LayoutOptions())
>>> len(e), e.response.to_pylist()
(2, ['a', None])
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prefdata.io.layouts.columns import (
    Rejects,
    column,
    given_ids,
    is_string_type,
    messages,
    optional_strings,
    pick,
    scores,
    strings,
    user_messages,
)
from prefdata.io.layouts.entries import Entries
from prefdata.io.layouts.options import LayoutOptions


def long_entries(raw: pa.Table, rej: Rejects, o: LayoutOptions) -> Entries:
    """One entry per row."""
    pcol = pick(raw, o.prompt_col, ("prompt", "instruction"), "prompt", "long")
    rcol = pick(raw, o.response_col, ("response", "output", "completion"), "response", "long")
    n = raw.num_rows
    prompt_col = column(raw, pcol, "prompt", "long")
    prompt = messages(prompt_col, pcol, rej)
    key = None
    if is_string_type(prompt_col.type):
        # a prompt repeats once per response: digest each distinct text once
        from prefdata import ids

        enc = pc.dictionary_encode(prompt_col.cast(pa.string()))
        key = ids.prompt_ids(user_messages(enc.dictionary), distinct=True).take(enc.indices)
    gcol = o.generator_col
    generator = (
        optional_strings(column(raw, gcol, "generator", "long"))
        if gcol
        else pa.nulls(n, pa.string())
    )
    return Entries(
        np.arange(n, dtype=np.int64),
        np.zeros(n, np.int32),
        prompt,
        strings(column(raw, rcol, "response", "long"), rcol, rej),
        generator,
        {s: scores(column(raw, s, "score", "long"), s, rej) for s in o.score_cols},
        np.ones(n, bool),
        given_ids(column(raw, o.id_col, "id", "long"), o.id_col, rej) if o.id_col else None,
        key=key,
    )
