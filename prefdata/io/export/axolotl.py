"""Axolotl DPO data for ``type: chat_template.default``: ``messages`` (the prompt) and one
``chosen`` / ``rejected`` message each.

Rules from ``src/axolotl/prompt_strategies/dpo/chat_template.py`` (axolotl-ai-cloud/axolotl):
roles go through the ``roles`` map (default user/assistant/system/tool); the prompt is the
template applied to ``messages`` with a generation prompt; each response is rendered after
a dummy user turn and cut at ``rendered.find(content)``, so an empty response would cut at
0 and train on the dummy turn: blank responses are rejected here. Written as JSON Lines,
with an ``axolotl.yaml`` dataset snippet beside it (:data:`YAML_SNIPPET`).

>>> to_axolotl({"prompt": [{"role": "user", "content": "Q"}], "chosen": "A",
...             "rejected": "B"})["chosen"]
{'role': 'assistant', 'content': 'A'}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from prefdata.io.atomic import atomic_path
from prefdata.io.export._arrow import (
    Converted,
    Messages,
    check_text,
    finish,
    keep_columns,
)
from prefdata.io.export.trl import pair_parts, pair_reasons

YAML_SNIPPET = """\
# Axolotl dataset config for this prefdata export (paths relative to this folder).
rl: dpo
datasets:
  - path: {file}
    ds_type: json
    split: train
    type: chat_template.default
    field_messages: messages
    field_chosen: chosen
    field_rejected: rejected
    message_property_mappings:
      role: role
      content: content
    roles:
      system: [system]
      user: [user]
      assistant: [assistant]
      tool: [tool]
"""


def to_axolotl(pair: Mapping[str, Any]) -> dict[str, Any]:
    """A canonical pair as an Axolotl ``chat_template.default`` record."""
    prompt, chosen, rejected = pair_parts(pair)
    for key, text in (("chosen", chosen), ("rejected", rejected)):
        if not text.strip():
            raise ValueError(f"{key} is empty (Axolotl cuts responses at str.find(content))")
    return {
        "messages": prompt,
        "chosen": {"role": "assistant", "content": chosen},
        "rejected": {"role": "assistant", "content": rejected},
    }


def axolotl_table(pairs: pa.Table, *, keep: Sequence[str] | str = ()) -> Converted:
    """Vectorised :func:`to_axolotl`."""
    msgs = Messages.of(pairs["prompt"])
    reasons = pair_reasons(pairs, msgs)
    check_text(reasons, pairs, "chosen", nonblank=True)
    check_text(reasons, pairs, "rejected", nonblank=True)

    def build(kept: pa.Table, idx: np.ndarray) -> pa.Table:
        out = {
            "messages": msgs.take_rows(idx).to_array(),
            "chosen": Messages.single("assistant", kept["chosen"]).to_struct(),
            "rejected": Messages.single("assistant", kept["rejected"]).to_struct(),
        }
        return pa.table(keep_columns(kept, out, keep, {"prompt", "chosen", "rejected"}))

    return finish(pairs, reasons, "export:axolotl", build)


def write_axolotl_yaml(out_dir: Path, data_file: Path) -> Path:
    """Write ``axolotl.yaml`` (the dataset block to paste into an Axolotl config)."""
    text = YAML_SNIPPET.format(file=data_file.name)
    return atomic_path(out_dir / "axolotl.yaml", lambda p: p.write_text(text, encoding="utf-8"))
