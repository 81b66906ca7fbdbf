"""Scorers: stages that add named float scores to every candidate of a pool.

>>> from prefdata.score import Constraints
>>> Constraints(max_words=50).score_fields()
('constraints',)
"""

from prefdata.score.base import Scorer, candidates_view, pools_from_texts, with_scores
from prefdata.score.reward_model import RewardModel, VLLMRewardModel

__all__ = [
    "RewardModel",
    "Scorer",
    "VLLMRewardModel",
    "candidates_view",
    "pools_from_texts",
    "with_scores",
]
