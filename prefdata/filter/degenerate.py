"""Degenerate outputs, flagged per candidate; :class:`DropFlagged` decides what to drop.

Flags (appended to each candidate's ``flags`` list, never removed by this stage):

- ``"empty"``: the response is empty or whitespace only.
- ``"truncated"``: ``finish_reason == "length"`` (generation hit the token limit).
- ``"repeated_across_prompts"``: the same response text (lower-cased and trimmed,
  at least ``repeated_min_chars`` characters, so "Yes" is not flagged) appears in at least
  ``repeated_min_prompts`` different pools. Dataset-level, two-pass:
  :class:`RepeatedResponsesFit` collects (text hash, prompt_id) pairs per batch or shard
  (mergeable), ``finalize()`` gives the hashes to flag, and ``FlagDegenerate(repeated=...)``
  flags row-locally (``FlagDegenerate().fit()`` is that fit bound to the stage:
  :mod:`prefdata.fit`). Without ``repeated`` the stage counts within the table it is given.
- ``"judge_injection"``: the response addresses or instructs a judge. A set of RE2 regexes
  (``JUDGE_INJECTION_PATTERNS``, case-insensitive): "ignore the above/previous
  instructions", judge-template headers ("## Model Outputs", "## Instruction",
  ``"model_identifier":``), addressing a judge/evaluator/grader/reward model, asking to
  rate/score/prefer this response, and pairwise verdict tokens such as ``[[A]]``.
- ``"language_mismatch"`` (off by default): the dominant Unicode script of the response's
  letters (first 500 characters, Unicode code-point ranges decoded in NumPy) differs
  from the prompt's (Latin, Greek, Cyrillic, Hebrew, Arabic, Devanagari, Thai, Hangul,
  Han/Kana). Cheap and script-level only: French vs English is not caught,
  and "translate into Japanese" is a false positive; texts with fewer than
  ``language_min_letters`` letters are not judged.

``DropFlagged(flags=DEFAULT_DROP)`` removes flagged candidates (recorded in the pool's
``dropped_candidates`` column with the flag as reason); a pool left with fewer than
``min_candidates`` (that had at least that many before) is rejected:
``"flagged: fewer than <k> candidates left"``.

>>> import pyarrow as pa
>>> from prefdata.schema import pool_schema
>>> t = pa.Table.from_pylist(
...     [{"prompt_id": "p", "prompt": [{"role": "user", "content": "Hi"}],
...       "candidates": [{"candidate_id": "a", "response": " ", "flags": []},
...                      {"candidate_id": "b", "response": "Hello", "finish_reason": "length",
...                       "flags": []}]}], schema=pool_schema())
>>> out = FlagDegenerate(repeated_min_prompts=None)(t).table
>>> [c["flags"] for c in out["candidates"][0].as_py()]
[['empty'], ['truncated']]
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from prefdata.arrow import flatten_candidates, rebuild_candidates
from prefdata.filter.candidates import add_flags, candidate_flags, ensure_dropped, record_dropped
from prefdata.filter.text import (
    SCRIPT_NAMES,
    prompt_text,
    script_counts,
    text_hash,
)
from prefdata.fit import StageFit, table_dumps, table_loads
from prefdata.pipeline import Stage, StageOutput, rejects_from, split

JUDGE_INJECTION_PATTERNS: tuple[str, ...] = (
    # overriding the evaluation prompt
    r"\bignore\s+(all\s+|any\s+)?(of\s+)?(the\s+|your\s+)?(above|previous|prior|preceding|earlier)"
    r"(\s+(instructions?|outputs?|text|prompts?|responses?|context))?\b",
    r"\b(disregard|forget)\s+(all\s+)?(the\s+|your\s+)?(above|previous|prior)\s+"
    r"(instructions?|outputs?|prompts?)\b",
    # imitating the judge's template
    r"(^|\n)\s*#{1,4}\s*(model\s+outputs?|instruction|evaluation|preferred\s+output|"
    r"output\s*\(?[ab]\)?|verdict)\s*(\n|$)",
    r"[\"']?model_identifier[\"']?\s*:",
    # addressing the judge
    r"\b(dear|attention|note\s+(to|for))\s+(the\s+)?(ai\s+judge|llm\s+judge|evaluator|grader|"
    r"rater|annotator|reward\s+model)s?\b",
    r"\b(judge|evaluator|grader|rater|annotator|reward\s+model)s?\s*[:,]\s*(you\s+)?"
    r"(must|should|please|always)\b",
    r"\b(as\s+(the|an?)\s+)?(judge|evaluator|grader|rater)\s*,?\s+(you\s+)?(must|should)\s+"
    r"(prefer|choose|select|pick|rate|score)\b",
    # asking for a verdict
    r"\b(rate|score|grade|rank)\s+(this|my|the\s+following|the\s+above)\s+"
    r"(response|answer|output|completion)\s+(as\s+)?(a\s+)?(10|ten|5|five|100|the\s+(best|highest))",
    r"\b(prefer|choose|select|pick)\s+(this|my)\s+(response|answer|output|completion)\b",
    r"\bthis\s+(response|answer|output)\s+(is|should\s+be)\s+(rated|scored|judged|preferred)\b",
    r"\[\[\s*([ab]|tie)\s*\]\]",
)

DEFAULT_DROP = ("empty", "truncated", "repeated_across_prompts", "judge_injection")


def _hash_digest(parts: list[bytes]) -> str:
    h = hashlib.blake2b(digest_size=8)
    for p in parts:
        h.update(p)
    return h.hexdigest()


@dataclass(frozen=True)
class RepeatedResponses:
    """Hashes of responses seen in at least ``min_prompts`` different pools."""

    hashes: np.ndarray
    min_prompts: int
    min_chars: int
    fingerprint: str


@dataclass
class RepeatedResponsesFit:
    """First pass for ``"repeated_across_prompts"``: distinct (text hash, prompt_id) per
    batch or shard, mergeable in any order."""

    min_prompts: int = 5
    min_chars: int = 20
    parts: list[pl.DataFrame] = field(default_factory=list)
    _distinct: pl.DataFrame | None = field(default=None, repr=False, compare=False)
    columns: ClassVar[tuple[str, ...]] = ("prompt_id", "candidates.response")  # what it reads
    parallel: ClassVar[bool] = True  # merge() appends parts: per-table fits merge exactly

    def update(self, table: pa.Table, _hashes: Any = None) -> RepeatedResponsesFit:
        flat = flatten_candidates(table)
        h, eligible = _hashes or _response_hashes(flat.values, self.min_chars)
        pid = table["prompt_id"].take(pa.array(flat.parents, type=pa.int64()))
        df = pl.DataFrame({"h": h, "p": pl.Series(pid.combine_chunks()).hash(seed=0)})
        self.parts.append(df.filter(pl.Series(eligible)).unique())
        return self

    def merge(self, other: RepeatedResponsesFit) -> RepeatedResponsesFit:
        self.parts += other.parts
        return self

    def distinct(self) -> pl.DataFrame:
        """Every distinct (h, p) pair, sorted; the parts are compacted into it. A sort and
        a comparison with the previous row (polars' ``unique`` and ``group_by`` over
        millions of pairs held several times the pairs' size)."""
        if len(self.parts) == 1 and self.parts[0] is self._distinct:
            return self._distinct  # compacted already (dumps() then finalize())
        schema = {"h": pl.UInt64, "p": pl.UInt64}
        df = pl.concat([pl.DataFrame(schema=schema), *self.parts]).sort(["h", "p"])
        h, p = df["h"].to_numpy(), df["p"].to_numpy()
        new = np.ones(len(h), bool)
        new[1:] = (h[1:] != h[:-1]) | (p[1:] != p[:-1])
        if not new.all():
            df = df.filter(pl.Series(new))
        self.parts = [df]
        self._distinct = df
        return df

    def finalize(self) -> RepeatedResponses:
        h = self.distinct()["h"].to_numpy()
        if len(h):
            start = np.flatnonzero(np.r_[True, h[1:] != h[:-1]])
            counts = np.diff(np.r_[start, len(h)])
            hashes = h[start[counts >= self.min_prompts]]
        else:
            hashes = np.array([], dtype=np.uint64)
        fp = _hash_digest([hashes.tobytes(), str((self.min_prompts, self.min_chars)).encode()])
        return RepeatedResponses(hashes.astype(np.uint64), self.min_prompts, self.min_chars, fp)

    def fitted(self, stage: FlagDegenerate) -> FlagDegenerate:
        """``stage`` with the repeated responses of this fit."""
        return replace(stage, repeated=self.finalize())

    def dumps(self) -> bytes:
        """Arrow IPC: the distinct (text hash ``h``, prompt_id hash ``p``) pairs, sorted."""
        return table_dumps(self.distinct().to_arrow(), {"config": {"min_chars": self.min_chars}})

    def load(self, data: bytes) -> RepeatedResponsesFit:
        """Add the pairs :meth:`dumps` wrote.

        >>> t = pa.table({"prompt_id": ["p"], "candidates": [[{"response": "Hi"}]]})
        >>> fit = RepeatedResponsesFit(min_prompts=1, min_chars=1).update(t)
        >>> back = RepeatedResponsesFit(min_prompts=1, min_chars=1).load(fit.dumps())
        >>> back.finalize().fingerprint == fit.finalize().fingerprint
        True
        """
        table, _ = table_loads(data, {"min_chars": self.min_chars})
        self.parts.append(pl.from_arrow(table))
        return self


def _response_hashes(values: pa.StructArray, min_chars: int) -> tuple[np.ndarray, np.ndarray]:
    text = pc.utf8_trim_whitespace(pc.utf8_lower(pc.struct_field(values, "response")))
    eligible = pc.fill_null(pc.greater_equal(pc.utf8_length(text), min_chars), False)
    return text_hash(text), eligible.to_numpy(zero_copy_only=False)


def _dominant_script(texts: pa.Array, min_letters: int) -> np.ndarray:
    """Index into ``SCRIPT_NAMES`` of the dominant script, -1 when too few letters."""
    counts = script_counts(texts)
    return np.where(counts.sum(axis=1) >= min_letters, counts.argmax(axis=1), -1)


@dataclass(frozen=True)
class FlagDegenerate(Stage):
    """Flag degenerate candidates (module docstring). Never drops anything."""

    empty: bool = True
    truncated: bool = True
    judge_injection: bool = True
    injection_patterns: tuple[str, ...] = JUDGE_INJECTION_PATTERNS
    repeated_min_prompts: int | None = 5
    repeated_min_chars: int = 20
    repeated: RepeatedResponses | None = field(default=None, metadata={"fingerprint": False})
    language_mismatch: bool = False
    language_min_letters: int = 20
    requires: ClassVar[tuple[str, ...]] = ("prompt_id", "prompt", "candidates")

    def fits_on_input(self) -> str | None:
        if self.repeated is None and self.repeated_min_prompts is not None:
            return (
                "the responses repeated across prompts (fit it first: prefdata.fit.fit_stage("
                "stage, shards), pass repeated=RepeatedResponsesFit(...).update(...).finalize(), "
                "or repeated_min_prompts=None)"
            )
        return None

    def fit(self) -> StageFit | None:
        """The :class:`RepeatedResponsesFit` of this stage's settings, bound to it (None with
        ``repeated`` or ``repeated_min_prompts=None``)."""
        if self.fits_on_input() is None:
            return None
        assert self.repeated_min_prompts is not None
        return StageFit(
            self, RepeatedResponsesFit(self.repeated_min_prompts, self.repeated_min_chars)
        )

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        if self.repeated is not None:
            cfg["repeated"] = self.repeated.fingerprint
        return cfg

    def process(self, table: pa.Table) -> pa.Table:
        flat = flatten_candidates(table)
        resp = pc.fill_null(pc.struct_field(flat.values, "response"), "")
        flags: dict[str, np.ndarray] = {}
        if self.empty:
            flags["empty"] = pc.equal(pc.utf8_trim_whitespace(resp), "").to_numpy(
                zero_copy_only=False
            )
        if self.truncated:
            fr = pc.struct_field(flat.values, "finish_reason")
            flags["truncated"] = pc.fill_null(pc.equal(fr, "length"), False).to_numpy(
                zero_copy_only=False
            )
        repeated = self.repeated
        if (fit := self.fit()) is not None:  # whole-table mode
            repeated = fit.update(table).finalize().repeated
        if repeated is not None:
            h, eligible = _response_hashes(flat.values, repeated.min_chars)
            flags["repeated_across_prompts"] = eligible & np.isin(h, repeated.hashes)
        if self.judge_injection and self.injection_patterns:
            pattern = "(?i)(" + "|".join(f"(?:{p})" for p in self.injection_patterns) + ")"
            flags["judge_injection"] = pc.match_substring_regex(resp, pattern).to_numpy(
                zero_copy_only=False
            )
        if self.language_mismatch:
            ps = _dominant_script(prompt_text(table), self.language_min_letters)[flat.parents]
            rs = _dominant_script(resp, self.language_min_letters)
            flags["language_mismatch"] = (ps >= 0) & (rs >= 0) & (ps != rs)
        return add_flags(table, flat, flags) if len(flat.parents) else table


@dataclass(frozen=True)
class DropFlagged(Stage):
    """Drop candidates carrying any of ``flags``; reject pools left too small.

    A pool that had at least ``min_candidates`` candidates and keeps fewer is rejected
    (its removed candidates are in the rejected record's ``dropped_candidates``); pools
    that were already smaller are left to construction.
    """

    flags: tuple[str, ...] = DEFAULT_DROP
    min_candidates: int = 2
    requires: ClassVar[tuple[str, ...]] = ("prompt_id", "candidates")
    provides: ClassVar[tuple[str, ...]] = ("dropped_candidates",)

    def process(self, table: pa.Table) -> StageOutput:
        table = ensure_dropped(table)
        flat, flags = candidate_flags(table)
        n = table.num_rows
        before = np.bincount(flat.parents, minlength=n)
        if len(flags) and self.flags:
            # only candidates with any flag can match (most have none)
            some = np.flatnonzero(flags.list.len().fill_null(0).to_numpy() > 0)
            hit = np.zeros((len(flags), len(self.flags)), bool)
            hit[some] = (
                pl.DataFrame({"f": flags.gather(some)})
                .select([pl.col("f").list.contains(pl.lit(f)).alias(f) for f in self.flags])
                .to_numpy()
                .astype(bool)
            )
            drop = hit.any(axis=1)
            # the reason is the first matching flag in ``self.flags`` order
            first = np.argmax(hit, axis=1)
            reasons = np.asarray([f"flagged: {f}" for f in self.flags], dtype=object)[first]
            after = before - np.bincount(flat.parents[drop], minlength=n)
        else:
            drop, after = None, before
        keep = ~((before >= self.min_candidates) & (after < self.min_candidates))
        reason = f"flagged: fewer than {self.min_candidates} candidates left"
        if drop is None or not drop.any():
            return split(table, keep, self.name, reason, field="candidates")
        table = record_dropped(table, flat, drop, reasons)
        # the kept pools and their candidates in one filter of the nested values
        kept = rebuild_candidates(table, flat, flat.values, keep=~drop, rows=keep)
        gone = np.flatnonzero(~keep)
        sub = table.take(gone)
        sub_flat = flatten_candidates(sub)
        rejected = rebuild_candidates(
            sub, sub_flat, sub_flat.values, keep=~drop[np.isin(flat.parents, gone)]
        )
        return StageOutput(
            kept, rejects_from(rejected, self.name, reason, field="candidates", rows=gone)
        )


__all__ = [
    "DEFAULT_DROP",
    "JUDGE_INJECTION_PATTERNS",
    "SCRIPT_NAMES",
    "DropFlagged",
    "FlagDegenerate",
    "RepeatedResponses",
    "RepeatedResponsesFit",
]
