"""Annotations: score normalisation, ensembles of scorers, per-scorer margins, ensemble
strength, soft labels.

Pair tables carry per-scorer scores in ``chosen_scores`` / ``rejected_scores`` (structs of
float64, one field per scorer); :func:`attach_scores` fills them from the pools.
"""

from prefdata.annotate.ensemble import Ensemble, ensemble_scores
from prefdata.annotate.margins import MARGINS, Margins, margin_matrix
from prefdata.annotate.normalise import Normalise, ScoreStats, ScoreStatsFit, fit_score_stats
from prefdata.annotate.pair_scores import attach_scores
from prefdata.annotate.strength import (
    FLIPPED,
    Strength,
    ensemble_strength,
    strength_quantile,
    swap_pairs,
)

__all__ = [
    "FLIPPED",
    "Ensemble",
    "MARGINS",
    "Margins",
    "Normalise",
    "ScoreStats",
    "ScoreStatsFit",
    "Strength",
    "attach_scores",
    "ensemble_scores",
    "ensemble_strength",
    "fit_score_stats",
    "margin_matrix",
    "strength_quantile",
    "swap_pairs",
]
