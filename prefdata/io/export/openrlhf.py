"""OpenRLHF reward-model and DPO data: ``chosen``/``rejected`` full message lists plus ``margin``.

Read by ``openrlhf/datasets/reward_dataset.py`` (OpenRLHF/OpenRLHF) with
``--data.apply_chat_template`` and no prompt key: the prompt is the chat template applied to
``chosen[:-1]`` with a generation prompt, and each response is the rest of its rendered
conversation, so ``chosen`` and ``rejected`` must share every message but the last (they
do here by construction). ``margin`` is read by the reward model with
``--model.margin_loss_enable`` (null reads as 0); DPO ignores it. Written as JSON Lines.

Train with e.g. ``--data.chosen_key chosen --data.rejected_key rejected``
``--data.apply_chat_template``.

>>> to_openrlhf({"prompt": [{"role": "user", "content": "Hi"}], "chosen": "Hello",
...              "rejected": "No", "margin": 0.5})["rejected"]
[{'role': 'user', 'content': 'Hi'}, {'role': 'assistant', 'content': 'No'}]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from prefdata.io.export._arrow import (
    Converted,
    Messages,
    check_finite,
    column,
    finish,
    keep_columns,
)
from prefdata.io.export.trl import assistant, pair_parts, pair_reasons


def to_openrlhf(pair: Mapping[str, Any]) -> dict[str, Any]:
    """A canonical pair as an OpenRLHF record (full conversations, margin kept).

    >>> r = to_openrlhf({"prompt": [{"role": "user", "content": "Hi"}], "chosen": "Hello",
    ...                  "rejected": "No"})
    >>> r["chosen"][:-1] == r["rejected"][:-1], r["margin"]
    (True, None)
    """
    prompt, chosen, rejected = pair_parts(pair)
    margin = pair.get("margin")
    if margin is not None and not math.isfinite(margin):
        raise ValueError("margin is NaN or infinite")
    return {
        "chosen": prompt + assistant(chosen),
        "rejected": prompt + assistant(rejected),
        "margin": None if margin is None else float(margin),
    }


def openrlhf_table(pairs: pa.Table, *, keep: Sequence[str] | str = ()) -> Converted:
    """Vectorised :func:`to_openrlhf`."""
    msgs = Messages.of(pairs["prompt"])
    reasons = pair_reasons(pairs, msgs)
    check_finite(reasons, pairs, "margin")  # JSON has no NaN: a bad margin costs its row only

    def build(kept: pa.Table, idx: np.ndarray) -> pa.Table:
        prompt = msgs.take_rows(idx)
        margin = (
            column(kept, "margin").cast(pa.float64())
            if "margin" in kept.column_names
            else pa.nulls(kept.num_rows, pa.float64())
        )
        out = {
            "chosen": prompt.append("assistant", kept["chosen"]).to_array(),
            "rejected": prompt.append("assistant", kept["rejected"]).to_array(),
            "margin": margin,
        }
        return pa.table(keep_columns(kept, out, keep, {"prompt", "chosen", "rejected", "margin"}))

    return finish(pairs, reasons, "export:openrlhf", build)
