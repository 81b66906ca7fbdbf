"""NeMo-RL DPO / reward-model data: ``context`` plus two ranked ``completions``.

``nemo_rl/data/processors.py`` (NVIDIA-NeMo/RL, ``preference_preprocessor``) asserts exactly
two completions, takes the lower ``rank`` as chosen and raises on equal ranks ("Ties are not
supported yet"). A pair whose margin is exactly 0 is a tie in disguise: it is rejected here
rather than written with made-up ranks. Written as JSON Lines (``PreferenceDataset`` in
``nemo_rl/data/datasets/preference_datasets/preference_dataset.py`` reads them with
``load_dataset("json")``).

>>> r = to_nemo_rl({"prompt": [{"role": "user", "content": "2+2?"}], "chosen": "4",
...                 "rejected": "5"})
>>> [(c["rank"], c["completion"][0]["content"]) for c in r["completions"]]
[(0, '4'), (1, '5')]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prefdata.io.export._arrow import Converted, Messages, column, finish, keep_columns
from prefdata.io.export.trl import assistant, pair_parts, pair_reasons
from prefdata.schema import MESSAGES_TYPE

COMPLETION_TYPE = pa.struct([pa.field("rank", pa.int32()), pa.field("completion", MESSAGES_TYPE)])


def to_nemo_rl(pair: Mapping[str, Any]) -> dict[str, Any]:
    """A canonical pair as a NeMo-RL rank-format record (rank 0 = chosen).

    >>> to_nemo_rl({"prompt": [{"role": "user", "content": "Q"}], "chosen": "A",
    ...             "rejected": "B", "margin": 0.0})
    Traceback (most recent call last):
    ...
    ValueError: margin is 0: a tie, which NeMo-RL does not support
    """
    prompt, chosen, rejected = pair_parts(pair)
    if pair.get("margin") == 0:
        raise ValueError("margin is 0: a tie, which NeMo-RL does not support")
    return {
        "context": prompt,
        "completions": [
            {"rank": 0, "completion": assistant(chosen)},
            {"rank": 1, "completion": assistant(rejected)},
        ],
    }


def nemo_rl_table(pairs: pa.Table, *, keep: Sequence[str] | str = ()) -> Converted:
    """Vectorised :func:`to_nemo_rl`."""
    msgs = Messages.of(pairs["prompt"])
    reasons = pair_reasons(pairs, msgs)
    if "margin" in pairs.column_names:
        tie = pc.fill_null(pc.equal(column(pairs, "margin"), 0.0), False)
        reasons.add(
            tie.to_numpy(zero_copy_only=False),
            "margin is 0: a tie, which NeMo-RL does not support",
            "margin",
        )

    def build(kept: pa.Table, idx: np.ndarray) -> pa.Table:
        n = kept.num_rows
        # completions: row i holds [chosen_i (rank 0), rejected_i (rank 1)].
        both = Messages.single(
            "assistant", pa.concat_arrays([column(kept, "chosen"), column(kept, "rejected")])
        ).to_array()
        order = np.stack([np.arange(n), n + np.arange(n)], axis=1).reshape(-1)
        ranks = np.tile(np.array([0, 1], dtype=np.int32), n)
        values = pa.StructArray.from_arrays(
            [pa.array(ranks, pa.int32()), both.take(pa.array(order))],
            fields=list(COMPLETION_TYPE),
        )
        offsets = pa.array(np.arange(0, 2 * n + 1, 2, dtype=np.int32))
        out = {
            "context": msgs.take_rows(idx).to_array(),
            "completions": pa.ListArray.from_arrays(offsets, values),
        }
        return pa.table(keep_columns(kept, out, keep, {"prompt", "chosen", "rejected"}))

    return finish(pairs, reasons, "export:nemo-rl", build)
