"""CRM-style peer filtering: an offline form of Collaborative Reward Modeling.

Two scorers A and B each give a pair a Bradley-Terry loss ``-log sigmoid(margin)`` (margin
= score(chosen) - score(rejected) under that scorer). Each scorer selects its ``(1 - tau)``
lowest-loss pairs: the ``n - floor(tau * n)`` smallest losses over the *whole dataset* of
``n`` pairs scored by both, ties broken by the pair key (prompt_id, chosen id, rejected
id) so the selection is deterministic. In CRM each model trains on the pairs its *peer*
selected; offline, ``select=`` says which selections a kept pair needs:

- ``"both"`` (default): selected by A and by B (clean under both views);
- ``"either"``: selected by at least one;
- ``"a"`` / ``"b"``: selected by that scorer (the set its peer would be trained on).

``tau`` is the noise rate: give ``tau`` directly, or estimate it with
:func:`estimate_noise_rate` (the share of pairs on which A and B disagree with the label's
direction, averaged; [open] in the paper, so configurable). ``require_sign_agreement``
also drops pairs whose two margins have different signs (zero counts as its own sign).

The curriculum (easy to hard): kept pairs ordered by the peers' mean margin, largest
first (ties by key), written as ``curriculum_rank`` (0 = easiest); sort with
:func:`peer_order`. Also written: ``peer_loss_a`` and ``peer_loss_b``.

Dataset-level, two-pass: :class:`PeerFit` collects (key, margin A, margin B) per batch or
shard (mergeable: lists of arrays), ``finalize()`` ranks the whole set once and returns a
:class:`PeerSelection` (an Arrow table keyed by pair key); ``PeerFilter(selection=...)``
applies it row-locally (``PeerFilter(...).fit()`` is the fit bound to the stage:
:mod:`prefdata.fit`). ``PeerFilter`` without a selection fits on the table it is given
(whole-table mode: only dataset-level when that table is the whole dataset).

Reject reasons: ``"peer: high loss under A"``, ``"... under B"``, ``"... under A and B"``,
``"peer: sign disagreement"``, ``"peer: not scored by A and B"``.

>>> import pyarrow as pa
>>> ma, mb = [2.0, 1.0, -1.0, 0.5, -3.0], [1.0, -2.0, 0.5, 2.0, -1.0]
>>> pairs = pa.table({"prompt_id": list("vwxyz"), "chosen": ["c"] * 5, "rejected": ["r"] * 5,
...     "chosen_scores": [{"a": a, "b": b} for a, b in zip(ma, mb)],
...     "rejected_scores": [{"a": 0.0, "b": 0.0}] * 5})
>>> out = PeerFilter(scorer_a="a", scorer_b="b", tau=0.2)(pairs)
>>> out.table["prompt_id"].to_pylist(), out.table["curriculum_rank"].to_pylist()
(['v', 'x', 'y'], [0, 2, 1])
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prefdata.annotate.columns import CHOSEN_SCORES, REJECTED_SCORES, pair_differences, pair_keys
from prefdata.arrow import float_array
from prefdata.arrow import set_column as _set
from prefdata.fit import StageFit, table_dumps, table_loads
from prefdata.ids import digest
from prefdata.pipeline import Stage, StageOutput, split

Select = Literal["both", "either", "a", "b"]


def bt_loss(margin: np.ndarray) -> np.ndarray:
    """Bradley-Terry loss ``-log sigmoid(m) = log(1 + exp(-m))``, computed stably.

    >>> bt_loss(np.array([0.0])).round(6).tolist()
    [0.693147]
    """
    with np.errstate(invalid="ignore"):  # NaN (unscored) stays NaN
        return np.logaddexp(0.0, -np.asarray(margin, dtype=np.float64))


def _margin(pairs: pa.Table, scorer: str) -> np.ndarray:
    return pair_differences(pairs, [scorer])[:, 0]


def estimate_noise_rate(margin_a: np.ndarray, margin_b: np.ndarray) -> float:
    """Mean over the two scorers of the share of pairs each scores against the label.

    >>> estimate_noise_rate(np.array([1.0, -1.0, 2.0, 3.0]), np.array([1.0, 1.0, -1.0, -2.0]))
    0.375
    """
    ok = ~(np.isnan(margin_a) | np.isnan(margin_b))
    if not ok.any():
        return 0.0
    return float(((margin_a[ok] < 0).mean() + (margin_b[ok] < 0).mean()) / 2)


def _lowest(loss: np.ndarray, keys: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of the ``k`` smallest losses, ties broken by key."""
    order = np.lexsort((keys, loss))
    mask = np.zeros(len(loss), dtype=bool)
    mask[order[:k]] = True
    return mask


@dataclass(frozen=True)
class PeerSelection:
    """The dataset-level decision per pair key: ``table`` has columns key, keep, reason,
    peer_loss_a, peer_loss_b, curriculum_rank; ``fingerprint`` digests it."""

    table: pa.Table
    tau: float
    fingerprint: str


@dataclass
class PeerFit:
    """First pass: collect each pair's key and its margins under A and B."""

    scorer_a: str
    scorer_b: str
    keys: list[pa.Array] = field(default_factory=list)
    margins_a: list[np.ndarray] = field(default_factory=list)
    margins_b: list[np.ndarray] = field(default_factory=list)

    def update(self, pairs: pa.Table) -> PeerFit:
        self.keys.append(pair_keys(pairs).cast(pa.string()))
        self.margins_a.append(_margin(pairs, self.scorer_a))
        self.margins_b.append(_margin(pairs, self.scorer_b))
        return self

    def merge(self, other: PeerFit) -> PeerFit:
        self.keys += other.keys
        self.margins_a += other.margins_a
        self.margins_b += other.margins_b
        return self

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        keys = (
            pa.concat_arrays(self.keys).to_numpy(zero_copy_only=False).astype(str)
            if self.keys
            else np.array([], dtype=str)
        )
        cat = lambda xs: np.concatenate(xs) if xs else np.array([])  # noqa: E731
        return keys, cat(self.margins_a), cat(self.margins_b)

    def finalize(
        self,
        tau: float | None = None,
        *,
        select: Select = "both",
        require_sign_agreement: bool = False,
    ) -> PeerSelection:
        """Rank the whole set once. ``tau=None`` estimates it (:func:`estimate_noise_rate`)."""
        keys, ma, mb = self.arrays()
        _, first = np.unique(keys, return_index=True)
        if len(first) != len(keys):
            # the same pair twice gets one decision: that of its first occurrence
            first.sort()
            keys, ma, mb = keys[first], ma[first], mb[first]
        if tau is None:
            tau = estimate_noise_rate(ma, mb)
        if not 0.0 <= tau < 1.0:
            raise ValueError(f"tau must be in [0, 1), not {tau}")
        n_all = len(keys)
        scored = ~(np.isnan(ma) | np.isnan(mb))
        idx = np.flatnonzero(scored)
        n = len(idx)
        k = n - int(np.floor(tau * n + 1e-9))
        la, lb = bt_loss(ma), bt_loss(mb)
        sel_a = np.zeros(n_all, dtype=bool)
        sel_b = np.zeros(n_all, dtype=bool)
        sel_a[idx] = _lowest(la[idx], keys[idx], k)
        sel_b[idx] = _lowest(lb[idx], keys[idx], k)
        keep = {
            "both": sel_a & sel_b,
            "either": sel_a | sel_b,
            "a": sel_a,
            "b": sel_b,
        }[select]
        keep &= scored
        sign_ok = np.sign(np.nan_to_num(ma)) == np.sign(np.nan_to_num(mb))
        if require_sign_agreement:
            keep &= sign_ok
        reason = np.full(n_all, "", dtype=object)
        high_a, high_b = scored & ~sel_a, scored & ~sel_b
        reason[high_a] = "peer: high loss under A"
        reason[high_b] = "peer: high loss under B"
        reason[high_a & high_b] = "peer: high loss under A and B"
        if require_sign_agreement:
            reason[scored & ~sign_ok & (reason == "")] = "peer: sign disagreement"
        reason[~scored] = "peer: not scored by A and B"
        reason[keep] = ""
        # curriculum: easy (large mean margin) to hard, ties by key
        mean = (ma + mb) / 2
        kept = np.flatnonzero(keep)
        order = kept[np.lexsort((keys[kept], -mean[kept]))]
        rank = np.full(n_all, -1, dtype=np.int64)
        rank[order] = np.arange(len(order))
        table = pa.table(
            {
                "key": pa.array(keys, type=pa.string()),
                "keep": pa.array(keep),
                "reason": pa.array(reason.astype(str), type=pa.string()),
                "peer_loss_a": float_array(la),
                "peer_loss_b": float_array(lb),
                "curriculum_rank": pa.array(rank, mask=rank < 0, type=pa.int64()),
            }
        )
        h = hashlib.blake2b(digest_size=8)
        by_key = np.argsort(keys, kind="stable")  # the same for fits merged in any order
        for part in (
            "\x1e".join(keys[by_key].tolist()).encode(),
            ma[by_key].tobytes(),
            mb[by_key].tobytes(),
        ):
            h.update(part)
        fp = digest(
            self.scorer_a, self.scorer_b, float(tau), select, require_sign_agreement, h.hexdigest()
        )
        return PeerSelection(table, float(tau), fp)

    def fitted(self, stage: PeerFilter) -> PeerFilter:
        """``stage`` with the selection of this fit under its ``tau`` and ``select``."""
        selection = self.finalize(
            stage.tau, select=stage.select, require_sign_agreement=stage.require_sign_agreement
        )
        return replace(stage, selection=selection)

    def _config(self) -> dict[str, str]:
        return {"scorer_a": self.scorer_a, "scorer_b": self.scorer_b}

    def dumps(self) -> bytes:
        """Arrow IPC: key, margin_a, margin_b of every pair gathered, in order."""
        keys, ma, mb = self.arrays()
        table = pa.table(
            {
                "key": pa.array(keys, pa.string()),
                "margin_a": pa.array(ma, pa.float64()),
                "margin_b": pa.array(mb, pa.float64()),
            }
        )
        return table_dumps(table, {"config": self._config()})

    def load(self, data: bytes) -> PeerFit:
        """Add the pairs :meth:`dumps` wrote (after the ones this fit holds).

        >>> t = pa.table({"prompt_id": ["p"], "chosen": ["C"], "rejected": ["R"],
        ...     "chosen_scores": [{"a": 1.0, "b": 2.0}], "rejected_scores": [{"a": 0.0, "b": 0.0}]})
        >>> fit = PeerFit("a", "b").update(t)
        >>> PeerFit("a", "b").load(fit.dumps()).finalize(0.0) == fit.finalize(0.0)
        True
        """
        table, _ = table_loads(data, self._config())
        self.keys.append(table["key"].combine_chunks())
        self.margins_a.append(table["margin_a"].to_numpy())
        self.margins_b.append(table["margin_b"].to_numpy())
        return self


@dataclass(frozen=True)
class PeerFilter(Stage):
    """Apply a :class:`PeerSelection` (or fit one on this table when none is given)."""

    scorer_a: str = ""
    scorer_b: str = ""
    tau: float | None = None
    select: Select = "both"
    require_sign_agreement: bool = False
    selection: PeerSelection | None = field(default=None, metadata={"fingerprint": False})
    requires: ClassVar[tuple[str, ...]] = ("prompt_id", CHOSEN_SCORES, REJECTED_SCORES)
    provides: ClassVar[tuple[str, ...]] = ("peer_loss_a", "peer_loss_b", "curriculum_rank")

    def fits_on_input(self) -> str | None:
        if self.selection is None:
            return (
                "the peer selection (fit it first: prefdata.fit.fit_stage(stage, shards), or "
                "pass selection=PeerFit(...).update(...).finalize(tau))"
            )
        return None

    def fit(self) -> StageFit | None:
        """The :class:`PeerFit` of this stage's scorers, bound to it (None with a selection)."""
        if self.selection is not None:
            return None
        if not (self.scorer_a and self.scorer_b):
            raise ValueError("PeerFilter needs scorer_a and scorer_b (or a selection)")
        return StageFit(self, PeerFit(self.scorer_a, self.scorer_b))

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        if self.selection is not None:
            cfg["selection"] = self.selection.fingerprint
        return cfg

    def process(self, table: pa.Table) -> StageOutput:
        sel = self.selection
        if (fit := self.fit()) is not None:  # whole-table mode
            sel = fit.update(table).finalize().selection
        keys = pair_keys(table)
        idx = pc.index_in(keys, value_set=sel.table["key"])
        if idx.null_count:
            row = int(np.flatnonzero(idx.is_null().to_numpy(zero_copy_only=False))[0])
            raise ValueError(
                f"pair row {row} (prompt_id {table['prompt_id'][row].as_py()!r}) is not in the "
                "peer selection: fit it on the same pairs"
            )
        picked = sel.table.take(idx)
        for col in ("peer_loss_a", "peer_loss_b", "curriculum_rank"):
            table = _set(table, col, picked[col].combine_chunks())
        keep = picked["keep"].to_numpy()
        reasons = picked["reason"].to_pylist()
        return split(table, keep, self.name, reasons, field=CHOSEN_SCORES)


def peer_order(pairs: pa.Table) -> pa.Table:
    """Pairs sorted easy to hard by ``curriculum_rank`` (from :class:`PeerFilter`)."""
    return pairs.sort_by([("curriculum_rank", "ascending")])


__all__ = [
    "PeerFilter",
    "PeerFit",
    "PeerSelection",
    "bt_loss",
    "peer_order",
    "estimate_noise_rate",
]
