"""Small data files that ship with prefdata, found wherever it is installed (all written
by the project for its examples and tests).

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
    return data_path("sample_long.jsonl")


def math_path() -> Path:
    """``math_solutions.jsonl``: 36 arithmetic word problems in the pool layout, each with
    its gold ``answer`` and four worked solutions (two right, one with an arithmetic slip,
    one with the wrong operation), each ending in ``\\boxed{...}``."""
    return data_path("math_solutions.jsonl")


def instructions_path() -> Path:
    """``instructions.jsonl``: 12 instruction prompts in the pool layout, each with its
    ``constraints`` (a JSON object for :class:`~prefdata.score.Constraints`: word,
    sentence and bullet counts, required and forbidden words, JSON) and two responses,
    one that meets them and one that breaks them."""
    return data_path("instructions.jsonl")


def data_path(name: str) -> Path:
    """A bundled file by name."""
    return Path(str(resources.files("prefdata.data").joinpath(name)))


__all__ = ["SAMPLE_OPTIONS", "data_path", "instructions_path", "math_path", "sample_path"]
