"""Verifiable rewards: math final answers (Hugging Face ``math-verify``) and
instruction-following constraints.

>>> t = pools_from_texts(["2+2?"], [["It is \\\\boxed{4}.", "5"]], columns={"gold": ["4"]})
>>> out = MathVerify("gold")(t).table
>>> [c["scores"]["math"] for c in out["candidates"].to_pylist()[0]]
[1.0, 0.0]
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prefdata.score.base import (
    Scorer,
    candidates_view,
    in_main_thread,
    package_version,
    pools_from_texts,  # noqa: F401  (used in the module doctest)
    with_scores,
)

__all__ = ["Constraints", "MathVerify", "check_json"]


@dataclass(frozen=True)
class MathVerify(Scorer):
    """1.0 when the candidate's final answer equals the gold answer in the pool-level column
    ``gold_col``, else 0.0, with ``math_verify.parse`` and ``math_verify.verify``.

    A pool whose gold is null, or whose gold ``math-verify`` cannot parse, gets null scores
    and the flag ``{name}_no_gold`` (``{name}_bad_gold``): not scored, never a wrong 0.
    math-verify times out with ``signal.alarm``, which works only in the main thread: off
    the main thread the timeouts are off (``timeout_s`` is then not enforced).

    >>> MathVerify("answer").required_columns()
    ('prompt_id', 'prompt', 'candidates', 'answer')
    """

    checkpoint = True  # symbolic parsing is costly though nothing is set up

    gold_col: str
    name: str = "math"
    timeout_s: int = 5

    def required_columns(self) -> tuple[str, ...]:
        return (*self.requires, self.gold_col)

    def source(self) -> dict[str, Any]:
        return {"function": "math_verify.verify", "math_verify": package_version("math-verify")}

    def process(self, table: pa.Table) -> pa.Table:
        from math_verify import parse, verify

        timeout = self.timeout_s if in_main_thread() else None
        view = candidates_view(table)
        golds = []
        for g in table[self.gold_col].to_pylist():
            if g is None or str(g).strip() == "":
                golds.append(None)
                continue
            text = str(g)
            # A bare gold like "42" or "\frac12" parses best inside math delimiters; a parse
            # that yields only a string (no expression) is not a usable gold answer.
            tries = [text] if "$" in text or "\\boxed" in text else [f"${text}$", text]
            parsed = None
            for attempt in tries:
                got = parse(attempt, parsing_timeout=timeout)
                if got and not isinstance(got[0], str):
                    parsed = got
                    break
            golds.append(parsed if parsed else False)
        values = np.full(len(view), np.nan)
        flags: list[list[str]] = [[] for _ in range(len(view))]
        for k, r in enumerate(view.row):
            gold = golds[r]
            if gold is None or gold is False:
                flags[k].append(f"{self.name}_{'no_gold' if gold is None else 'bad_gold'}")
                continue
            resp = view.responses[k] or ""
            pred = parse(resp, parsing_timeout=timeout) if resp else []
            values[k] = 1.0 if pred and verify(gold, pred, timeout_seconds=timeout) else 0.0
        return with_scores(table, {self.name: values}, flags=flags)


_FENCE = re.compile(r"^\s*```[a-zA-Z]*\s*\n(.*?)\n?```\s*$", re.S)


def check_json(text: str | None) -> bool:
    """Whether ``text`` (optionally inside one ``` fence) is valid JSON.

    >>> check_json('```json\\n{"a": 1}\\n```'), check_json("{a: 1}")
    (True, False)
    """
    if text is None:
        return False
    m = _FENCE.match(text)
    try:
        json.loads(m.group(1) if m else text)
    except (ValueError, TypeError):
        return False
    return True


_BULLET = r"(?m)^[ \t]*(?:[-*+\x{2022}]|\d+[.)])[ \t]+\S"
_SENTENCE_END = r"[.!?]+(?:[\"')\]]*)(?:\s|$)"


@dataclass(frozen=True)
class Constraints(Scorer):
    """Instruction-following checks; the score is the fraction of active constraints met.

    Constraints (None / empty = inactive): ``min_words``/``max_words`` (whitespace tokens),
    ``min_sentences``/``max_sentences`` (runs of ``.!?`` before a space or the end; text with
    no terminator counts as one sentence), ``required_keywords`` / ``forbidden_keywords``
    (case-insensitive whole words), ``json`` (the whole response, optionally fenced, parses),
    ``min_bullets``/``max_bullets`` (lines starting with ``-``, ``*``, ``+``, ``•`` or ``1.``).
    Each failed constraint adds the flag ``{name}_fail:<constraint>``, such as
    ``constraints_fail:max_words`` or ``constraints_fail:required:paris``. Counting is
    columnar (pyarrow compute); only the JSON check runs per response.

    Per-prompt constraints: ``from_col`` names a pool column holding each prompt's own
    constraints as a JSON object with these keys (``{"max_words": 20}``); the stage's
    fields are then the defaults it adds to. A pool whose object does not parse or names
    an unknown constraint is not scored (null) and gets the flag ``{name}_bad_spec``.

    >>> t = pools_from_texts(["Q"], [["Paris is nice. Yes.", "London"]])
    >>> out = Constraints(max_sentences=1, required_keywords=("paris",))(t).table
    >>> [(c["scores"]["constraints"], c["flags"]) for c in out["candidates"].to_pylist()[0]]
    [(0.5, ['constraints_fail:max_sentences']), (0.5, ['constraints_fail:required:paris'])]
    """

    name: str = "constraints"
    min_words: int | None = None
    max_words: int | None = None
    min_sentences: int | None = None
    max_sentences: int | None = None
    required_keywords: tuple[str, ...] = ()
    forbidden_keywords: tuple[str, ...] = ()
    json: bool = False
    min_bullets: int | None = None
    max_bullets: int | None = None
    from_col: str | None = None

    def __post_init__(self) -> None:
        for f in ("required_keywords", "forbidden_keywords"):
            v = getattr(self, f)
            if isinstance(v, str):
                raise TypeError(f"{f} must be a tuple of strings, not a string")
            object.__setattr__(self, f, tuple(v))
        if self.from_col is None and not self._checks_declared():
            raise ValueError("Constraints needs at least one constraint (or from_col=)")

    def required_columns(self) -> tuple[str, ...]:
        return (*self.requires, *((self.from_col,) if self.from_col else ()))

    def for_spec(self, spec: str | None) -> Constraints:
        """This stage with one pool's constraints (JSON text) added; ValueError when the
        text is not a JSON object of known constraints.

        >>> Constraints(from_col="c").for_spec('{"max_words": 3}').max_words
        3
        """
        try:
            extra = json.loads(spec) if spec else {}
        except ValueError:
            raise ValueError(f"not JSON: {spec[:60]!r}") from None
        if not isinstance(extra, dict):
            raise ValueError("not a JSON object")
        known = {f for f in self.__dataclass_fields__ if f not in ("name", "from_col", "progress")}
        unknown = sorted(set(extra) - known)
        if unknown:
            raise ValueError(f"unknown constraints {unknown}")
        for k in ("required_keywords", "forbidden_keywords"):
            if k in extra:
                extra[k] = tuple(extra[k])
        return dataclasses.replace(self, from_col=None, **extra)

    def _checks_declared(self) -> list[str]:
        names = [
            n
            for n in (
                "min_words",
                "max_words",
                "min_sentences",
                "max_sentences",
                "min_bullets",
                "max_bullets",
            )
            if getattr(self, n) is not None
        ]
        names += [f"required:{k}" for k in self.required_keywords]
        names += [f"forbidden:{k}" for k in self.forbidden_keywords]
        return names + (["json"] if self.json else [])

    def evaluate(self, responses: pa.Array) -> dict[str, np.ndarray]:
        """Pass/fail per constraint (bool arrays aligned with ``responses``)."""
        text = pc.fill_null(responses.cast(pa.string()), "")
        out: dict[str, np.ndarray] = {}

        def arr(x) -> np.ndarray:
            return np.asarray(x.to_numpy(zero_copy_only=False))

        if self.min_words is not None or self.max_words is not None:
            words = arr(pc.list_value_length(pc.utf8_split_whitespace(text)))
            if self.min_words is not None:
                out["min_words"] = words >= self.min_words
            if self.max_words is not None:
                out["max_words"] = words <= self.max_words
        if self.min_sentences is not None or self.max_sentences is not None:
            ends = arr(pc.count_substring_regex(text, _SENTENCE_END))
            nonblank = arr(pc.match_substring_regex(text, r"\S"))
            trailing = arr(pc.match_substring_regex(text, r"[^.!?\"')\]\s][\"')\]]*\s*$"))
            sentences = ends + (trailing & nonblank)
            if self.min_sentences is not None:
                out["min_sentences"] = sentences >= self.min_sentences
            if self.max_sentences is not None:
                out["max_sentences"] = sentences <= self.max_sentences
        if self.min_bullets is not None or self.max_bullets is not None:
            bullets = arr(pc.count_substring_regex(text, _BULLET))
            if self.min_bullets is not None:
                out["min_bullets"] = bullets >= self.min_bullets
            if self.max_bullets is not None:
                out["max_bullets"] = bullets <= self.max_bullets
        for k in self.required_keywords:
            out[f"required:{k}"] = arr(
                pc.match_substring_regex(text, rf"\b{re.escape(k)}\b", ignore_case=True)
            )
        for k in self.forbidden_keywords:
            out[f"forbidden:{k}"] = ~arr(
                pc.match_substring_regex(text, rf"\b{re.escape(k)}\b", ignore_case=True)
            )
        if self.json:
            out["json"] = np.array([check_json(t) for t in text.to_pylist()], dtype=bool)
        return out

    def process(self, table: pa.Table) -> pa.Table:
        if self.from_col is not None:
            return self._per_pool(table)
        view = candidates_view(table)
        checks = self.evaluate(view.struct.field("response"))
        passed = np.stack(list(checks.values()), axis=1) if len(view) else np.zeros((0, 1))
        values = passed.mean(axis=1) if len(view) else np.array([], dtype=np.float64)
        names = np.array([f"{self.name}_fail:{c}" for c in checks], dtype=object)
        failed_rows = np.flatnonzero(~passed.all(axis=1)) if len(view) else []
        flags: list[list[str]] = [[] for _ in range(len(view))]
        for k in failed_rows:
            flags[k] = names[~passed[k]].tolist()
        return with_scores(table, {self.name: values}, flags=flags)

    def _per_pool(self, table: pa.Table) -> pa.Table:
        """Each pool checked against its own constraints (``from_col``): pools grouped by
        their constraints, each group evaluated column-wise."""
        view = candidates_view(table)
        specs = table[self.from_col].combine_chunks().cast(pa.string()).to_pylist()
        values = np.full(len(view), np.nan)
        flags: list[list[str]] = [[] for _ in range(len(view))]
        groups: dict[str | None, list[int]] = {}
        for r, spec in enumerate(specs):
            groups.setdefault(spec, []).append(r)
        responses = view.struct.field("response")
        for spec, rows in groups.items():
            idx = np.concatenate(
                [np.arange(view.offsets[r], view.offsets[r + 1]) for r in rows]
            ).astype(np.int64)
            if not len(idx):
                continue
            try:
                stage = self.for_spec(spec)
                if not stage._checks_declared():
                    raise ValueError("no constraint")
            except (ValueError, TypeError):
                for k in idx.tolist():
                    flags[k].append(f"{self.name}_bad_spec")
                continue
            checks = stage.evaluate(responses.take(pa.array(idx)))
            passed = np.stack(list(checks.values()), axis=1)
            values[idx] = passed.mean(axis=1)
            names = np.array([f"{self.name}_fail:{c}" for c in checks], dtype=object)
            for j in np.flatnonzero(~passed.all(axis=1)).tolist():
                flags[int(idx[j])] = names[~passed[j]].tolist()
        return with_scores(table, {self.name: values}, flags=flags)
