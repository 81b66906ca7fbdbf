"""Small data files that ship with prefdata, found wherever it is installed.

:func:`sample_path` is the scored sample the README and ``binarize.py --sample`` use:
12 prompts in the long layout (one row per response), 41 responses from several
generators, two reward scores, an empty answer and a judge-injection attempt planted in
it. :data:`SAMPLE_OPTIONS` are the layout options that read it.

>>> from prefdata.io.readers import read_pools
>>> pools = read_pools(sample_path(), **SAMPLE_OPTIONS).table
>>> pools.num_rows, sum(len(c) for c in pools["candidates"].to_pylist())
(12, 41)
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

SAMPLE_OPTIONS: dict[str, Any] = {
    "layout": "long",
    "prompt_col": "prompt",
    "response_col": "response",
    "generator_col": "generator",
    "score_cols": ["rm_quality", "rm_helpful"],
}


def sample_path() -> Path:
    """The bundled sample (``sample_long.jsonl``), from the installed package."""
    return Path(str(resources.files("prefdata.data").joinpath("sample_long.jsonl")))


__all__ = ["SAMPLE_OPTIONS", "sample_path"]
