"""Construction: pools into pairs, ranked lists and unpaired (KTO) examples, plus pair
augmentation (RRM, reward-conditioned twins).

Stages (row-local over pools; the funnel counts pools: every pool yields output or is
rejected with a reason): :class:`Pairs`, :class:`Lists`, :class:`Unpaired`. Functions over
a pairs table: :func:`unpair`, :func:`rrm` (dataset-level), :func:`reward_conditioned`,
:func:`curriculum_order`. The functional forms below build the stage and run it.

>>> import pyarrow as pa
>>> from prefdata.schema import pool_schema
>>> cands = [{"candidate_id": c, "response": c, "generator": "g", "scores": {"rm": s},
...           "flags": []} for c, s in [("a", 0.1), ("b", 0.7), ("c", 0.4)]]
>>> pools = pa.Table.from_pylist([{"prompt_id": "p", "prompt": [{"role": "user", "content": "Q"}],
...     "source": None, "metadata": None, "candidates": cands}], schema=pool_schema(["rm"]))
>>> pairs(pools, strategy="sweet-spot", score="rm").table["rejected"].to_pylist()
['a']
>>> [r["rank"] for r in lists(pools, score="rm", top_k=2).table["responses"][0].as_py()]
[1, 2]
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from prefdata.construct.augment import REWARD_CONDITIONED_TEMPLATE, reward_conditioned, rrm
from prefdata.construct.candidates import ConstructStage
from prefdata.construct.lists import Lists
from prefdata.construct.pairs import STRATEGIES, Pairs, curriculum_order, pair_schema
from prefdata.construct.unpaired import Unpaired, unpair
from prefdata.pipeline import StageOutput


def pairs(
    pools: pa.Table, strategy: str = "best-worst", score: str | None = None, **config: Any
) -> StageOutput:
    """Run :class:`Pairs` on ``pools``. With ``quantile=...`` the stage is first fitted on
    the same table (both passes over ``pools``)."""
    stage = Pairs(strategy, score, **config)
    if stage.quantile is not None and stage.fitted_min_margin is None:
        stage = stage.fit(pools)
    return stage(pools)


def lists(pools: pa.Table, score: str, **config: Any) -> StageOutput:
    """Run :class:`Lists` on ``pools``."""
    return Lists(score=score, **config)(pools)


def unpaired(pools: pa.Table, score: str, threshold: float, **config: Any) -> StageOutput:
    """Run :class:`Unpaired` on ``pools``: label = ``score >= threshold``."""
    return Unpaired(score=score, threshold=threshold, **config)(pools)


__all__ = [
    "REWARD_CONDITIONED_TEMPLATE",
    "STRATEGIES",
    "ConstructStage",
    "Lists",
    "Pairs",
    "Unpaired",
    "curriculum_order",
    "lists",
    "pair_schema",
    "pairs",
    "reward_conditioned",
    "rrm",
    "unpair",
    "unpaired",
]
