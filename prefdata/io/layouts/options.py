"""Which input columns a layout reads: :class:`LayoutOptions`, one typed definition for
:func:`~prefdata.io.layouts.to_pools`, the readers, the executor's ingest, the CLI and
the recipes."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

LAYOUTS = ("pool", "long", "pairs", "hh", "ultrafeedback")
PREFERENCE = "preference"


@dataclass(frozen=True)
class LayoutOptions:
    """Which input columns a layout reads (see :func:`~prefdata.io.layouts.to_pools` for
    which layout uses which); an unknown option is a ``TypeError`` naming it.

    >>> LayoutOptions(score_cols=["rm"]).score_cols
    ('rm',)
    """

    prompt_col: str | None = None
    response_col: str | None = None
    generator_col: str | None = None
    score_cols: Sequence[str] = ()
    id_col: str | None = None
    chosen_col: str = "chosen"
    rejected_col: str = "rejected"
    margin_col: str | None = None
    chosen_score_col: str | None = None
    rejected_score_col: str | None = None
    score_name: str = "score"
    annotator_col: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "score_cols", tuple(self.score_cols))

    def check(self, layout: str) -> LayoutOptions:
        """Raise ``ValueError`` for an unknown layout or inconsistent options."""
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
        _check_side_scores(layout, self.chosen_score_col, self.rejected_score_col, self.score_name)
        if self.annotator_col is not None and layout not in ("pairs", "hh"):
            raise ValueError(
                f"annotator_col applies to the recorded preferences of the pairs and hh "
                f"layouts, not {layout!r}"
            )
        return self

    def pair_score_names(self) -> tuple[str, ...]:
        """The scores a pairwise layout gives each candidate."""
        return (PREFERENCE, self.score_name) if self.chosen_score_col else (PREFERENCE,)

    def to_dict(self) -> dict[str, Any]:
        """The options as JSON-friendly values (for fingerprints and manifests); options
        added later are left out while unset, so earlier ingests keep their digest."""
        return {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(self).items()
            if not (k in _LATER and v is None)
        }


_LATER = ("annotator_col",)


def _check_side_scores(
    layout: str, chosen_score_col: str | None, rejected_score_col: str | None, score_name: str
) -> None:
    """Options of the per-side scores: both columns or neither, pairwise layouts, a name
    that is not ``preference``."""
    if chosen_score_col is None and rejected_score_col is None:
        return
    if chosen_score_col is None or rejected_score_col is None:
        given, missing = (
            ("chosen_score_col", "rejected_score_col")
            if chosen_score_col is not None
            else ("rejected_score_col", "chosen_score_col")
        )
        raise ValueError(
            f"{given} needs {missing}: the per-side scores come in pairs (pass both or neither)"
        )
    if layout not in ("pairs", "hh"):
        raise ValueError(
            f"chosen_score_col / rejected_score_col apply to the pairs and hh layouts, "
            f"not {layout!r}; use score_cols for per-response scores"
        )
    if not isinstance(score_name, str) or not score_name.strip():
        raise ValueError(f"score_name must be a non-empty string, got {score_name!r}")
    if score_name == PREFERENCE:
        raise ValueError(
            f"score_name {PREFERENCE!r} is the recorded preference (1.0 chosen, 0.0 rejected); "
            "name the per-side score something else"
        )
