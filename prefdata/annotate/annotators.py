"""Agreement between annotators on recorded preferences (PAL, LoRe and the personalised
preference line of work keep who said what; so does prefdata: the pair layouts'
``annotator_col`` and the pairs' ``annotator_id``).

An *item* is a prompt and an unordered pair of responses; each annotator who recorded it
gives a direction (which of the two is better). :func:`annotator_agreement` reports, for
every two annotators, the share of the items they both labelled on which they agree, and
Krippendorff's alpha over every item labelled at least twice (nominal data: 1 = perfect
agreement, 0 = what chance gives, below 0 = systematic disagreement).

>>> import pyarrow as pa
>>> pairs = pa.table({"prompt_id": ["p", "p", "p", "q", "q"],
...                   "chosen": ["A", "A", "B", "x", "x"], "rejected": ["B", "B", "A", "y", "y"],
...                   "annotator_id": ["ann1", "ann2", "ann3", "ann1", "ann2"]})
>>> out = annotator_agreement(pairs)
>>> out["pairwise"][("ann1", "ann2")], out["pairwise"][("ann1", "ann3")]
({'items': 2, 'agreement': 1.0}, {'items': 1, 'agreement': 0.0})
>>> out["items"], round(out["alpha"], 3)
(2, 0.0)
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np
import pyarrow as pa


def _text(x: Any) -> str:
    """A response as text (TRL-style message lists: the last message's content)."""
    if isinstance(x, list):
        return str(x[-1]["content"]) if x else ""
    return "" if x is None else str(x)


def annotator_agreement(pairs: pa.Table, annotator: str = "annotator_id") -> dict[str, Any]:
    """Pairwise agreement and Krippendorff's alpha of the annotators of ``pairs`` (module
    docstring); pairs without an annotator are left out."""
    if annotator not in pairs.column_names:
        raise KeyError(f"the pairs have no {annotator!r} column (read with annotator_col=)")
    labels: dict[tuple, dict[str, int]] = {}
    rows = pairs.select(["prompt_id", "chosen", "rejected", annotator]).to_pylist()
    for r in rows:
        who = r[annotator]
        if who is None:
            continue
        a, b = _text(r["chosen"]), _text(r["rejected"])
        item = (r["prompt_id"], *sorted((a, b)))
        labels.setdefault(item, {})[who] = int(a == item[1])  # 1: the first text won
    names = sorted({w for v in labels.values() for w in v})
    pairwise = {}
    for x, y in combinations(names, 2):
        both = [v for v in labels.values() if x in v and y in v]
        if both:
            pairwise[(x, y)] = {
                "items": len(both),
                "agreement": float(np.mean([v[x] == v[y] for v in both])),
            }
    multi = [list(v.values()) for v in labels.values() if len(v) >= 2]
    return {"annotators": names, "pairwise": pairwise, "items": len(multi), "alpha": _alpha(multi)}


def _alpha(units: list[list[int]]) -> float:
    """Krippendorff's alpha for nominal labels: ``1 - D_o / D_e`` from the coincidence
    matrix (each unit's ordered label pairs weighted ``1 / (m_u - 1)``); NaN without
    pairable labels, 1.0 when every label is the same."""
    values = sorted({x for u in units for x in u})
    if not units or not values:
        return float("nan")
    index = {v: i for i, v in enumerate(values)}
    o = np.zeros((len(values), len(values)))
    for u in units:
        m = len(u)
        for i, j in combinations(range(m), 2):
            a, b = index[u[i]], index[u[j]]
            o[a, b] += 1 / (m - 1)
            o[b, a] += 1 / (m - 1)
    n_c = o.sum(axis=1)
    n = n_c.sum()
    observed = (n - np.trace(o)) / n
    expected = (n * n - (n_c**2).sum()) / (n * (n - 1))
    return 1.0 if expected == 0 else float(1 - observed / expected)


__all__ = ["annotator_agreement"]
