"""Scorers: stages that add named float scores to every candidate of a pool.

Each scorer adds one float64 field per candidate to ``candidates.scores`` (several for
multi-objective scorers, ``<name>.<objective>``) and records its provenance
(:meth:`Scorer.provenance`) for the dataset card.

>>> from prefdata.score import Constraints
>>> Constraints(max_words=50).score_fields()
('constraints',)
"""

from prefdata.score.base import Scorer, candidates_view, pools_from_texts, with_scores
from prefdata.score.column import FromColumn
from prefdata.score.embedding import EmbeddingRelevance
from prefdata.score.judge import JudgePairwise, JudgePointwise
from prefdata.score.logprob import DensityRatio, LogProb
from prefdata.score.rank import RankPairwise
from prefdata.score.reward_model import RewardModel, VLLMRewardModel
from prefdata.score.sandbox import CodeTests, SandboxLimits, run_sandboxed
from prefdata.score.verify import Constraints, MathVerify

__all__ = [
    "CodeTests",
    "Constraints",
    "DensityRatio",
    "EmbeddingRelevance",
    "FromColumn",
    "JudgePairwise",
    "RankPairwise",
    "JudgePointwise",
    "LogProb",
    "MathVerify",
    "RewardModel",
    "SandboxLimits",
    "Scorer",
    "VLLMRewardModel",
    "candidates_view",
    "pools_from_texts",
    "run_sandboxed",
    "with_scores",
]
