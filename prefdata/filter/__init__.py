"""Noise filters: multi-RM voting, CRM-style peer filtering, prompt dedup,
decontamination, degenerate-output flags and length-bias control.

Every filter sends what it drops to the rejects table with a reason of the form
``"<kind>: <detail>"``; candidate-level removals are recorded in the pool column
``dropped_candidates``. Dataset-level filters are two-pass: a ``*Fit`` object collects
mergeable state per batch or shard, ``finalize()`` returns an index, and the stage applies
it row-locally; without an index a stage fits on the table it is given (whole-table mode).
"""

from prefdata.filter.active import ActivePairs, ActivePrompts
from prefdata.filter.air import AirPairs, StablePrompts
from prefdata.filter.decontam import Decontaminate, read_benchmark
from prefdata.filter.dedup import (
    CollapseIdenticalCandidates,
    DedupFit,
    DedupIndex,
    DedupPrompts,
)
from prefdata.filter.degenerate import (
    DEFAULT_DROP,
    JUDGE_INJECTION_PATTERNS,
    DropFlagged,
    FlagDegenerate,
    RepeatedResponses,
    RepeatedResponsesFit,
)
from prefdata.filter.length import LengthControl, length_bias_report
from prefdata.filter.peer import PeerFilter, PeerFit, PeerSelection, peer_order
from prefdata.filter.voting import PoolVote, Vote

__all__ = [
    "DEFAULT_DROP",
    "ActivePairs",
    "ActivePrompts",
    "AirPairs",
    "JUDGE_INJECTION_PATTERNS",
    "CollapseIdenticalCandidates",
    "Decontaminate",
    "DedupFit",
    "DedupIndex",
    "DedupPrompts",
    "DropFlagged",
    "FlagDegenerate",
    "LengthControl",
    "PeerFilter",
    "PeerFit",
    "PeerSelection",
    "PoolVote",
    "StablePrompts",
    "RepeatedResponses",
    "RepeatedResponsesFit",
    "Vote",
    "peer_order",
    "length_bias_report",
    "read_benchmark",
]
