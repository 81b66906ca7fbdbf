"""LLM judges over any :class:`~prefdata.generate.base.ChatBackend`: pointwise ratings with
a rubric, and pairwise comparisons asked in both orders to cancel position bias.

The backend is given as an instance or as a zero-argument factory (picklable, such as
``functools.partial(SomeBackend, path)``) that :meth:`setup` calls once per worker. It is
not part of the fingerprinted config; ``backend_id`` (default: the backend's ``name``, or the
factory's qualified name and arguments) is.

>>> parse_rating("Clear and correct. Rating: [[8]]", 1, 10)
8.0
>>> parse_rating("I would say 7/10", 1, 10) is None  # no recognised rating form
True
>>> parse_verdict("After comparing both: [[B]]")
'B'
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from prefdata.generate.base import ChatBackend, GenerationConfig, redact
from prefdata.score.base import Scorer, candidates_view, seed_for, with_scores

__all__ = [
    "JudgePairwise",
    "JudgePointwise",
    "PAIRWISE_TEMPLATE",
    "POINTWISE_TEMPLATE",
    "parse_rating",
    "parse_verdict",
    "render_conversation",
]

POINTWISE_TEMPLATE = (
    "Please act as an impartial judge and rate the response of an AI assistant to the "
    "conversation below.\n\nRubric: {rubric}\n\n"
    "[Conversation]\n{conversation}\n\n[Response]\n{response}\n[End of response]\n\n"
    "Give a short explanation, then your rating from {low} to {high} in the form "
    '"Rating: [[N]]".'
)
PAIRWISE_TEMPLATE = (
    "Please act as an impartial judge and compare two responses to the conversation below."
    "\n\nRubric: {rubric}\n\n[Conversation]\n{conversation}\n\n"
    "[Response A]\n{response_a}\n[End of response A]\n\n"
    "[Response B]\n{response_b}\n[End of response B]\n\n"
    "Do not let the order or length of the responses influence you. Give a short "
    'explanation, then your verdict: "[[A]]" if A is better, "[[B]]" if B is better, '
    '"[[C]]" for a tie.'
)
DEFAULT_RUBRIC = "helpfulness, correctness, harmlessness and clarity"

_NUM = r"([-+]?\d+(?:\.\d+)?)"
_RATING_PATTERNS = [
    re.compile(r"\[\[\s*" + _NUM + r"\s*\]\]"),
    re.compile(r"(?i)\b(?:rating|score)\s*[:=]\s*\**\s*\[?\s*" + _NUM),
    re.compile(r"^\s*" + _NUM + r"\s*$"),
]
_VERDICT_PATTERNS = [
    re.compile(r"\[\[\s*([ABC])\s*\]\]"),
    re.compile(
        r"(?i)\b(?:verdict|answer|winner|better response)\s*(?:is)?\s*[:=]?\s*"
        r"\**\s*(?:response\s+|output\s+)?\(?\s*([ABC])\b"
    ),
    re.compile(r"^\s*\(?([ABC])\)?[.!]?\s*$"),
]


def parse_rating(text: str | None, low: float, high: float) -> float | None:
    """The rating in a judge's answer, or None when there is none inside [low, high].

    Forms, first match wins, the last occurrence of a form counts: ``[[7]]``,
    ``Rating: 7`` / ``Score = 7.5``, or the whole answer being a number.

    >>> parse_rating("Rating: 7", 1, 10), parse_rating("[[11]]", 1, 10), parse_rating("9", 1, 10)
    (7.0, None, 9.0)
    """
    if not text:
        return None
    for pat in _RATING_PATTERNS:
        found = pat.findall(text)
        if found:
            value = float(found[-1])
            return value if low <= value <= high else None
    return None


def parse_verdict(text: str | None) -> str | None:
    """``"A"``, ``"B"``, ``"C"`` (tie) from a judge's answer, or None.

    >>> parse_verdict("A"), parse_verdict("Verdict: B"), parse_verdict("[[C]]"), parse_verdict("?")
    ('A', 'B', 'C', None)
    """
    if not text:
        return None
    for pat in _VERDICT_PATTERNS:
        found = pat.findall(text)
        if found:
            return found[-1].upper()
    return None


def render_conversation(prompt: Sequence[dict]) -> str:
    """A prompt's turns as ``ROLE: content`` blocks.

    >>> render_conversation([{"role": "user", "content": "Hi"}])
    'USER: Hi'
    """
    return "\n\n".join(f"{m['role'].upper()}: {m['content']}" for m in prompt)


def _backend_identity(backend: Any) -> str:
    if isinstance(backend, functools.partial):
        f = backend.func
        # Credentials never reach the fingerprint, the manifest or the card.
        args = ", ".join(
            [
                *(redact("", a) for a in backend.args),
                *(f"{k}={redact(k, v)}" for k, v in backend.keywords.items()),
            ]
        )
        return f"{f.__module__}.{f.__qualname__}({args})"
    if isinstance(backend, ChatBackend):
        return f"{type(backend).__qualname__}:{backend.name}"
    return (
        f"{getattr(backend, '__module__', '?')}.{getattr(backend, '__qualname__', repr(backend))}"
    )


@dataclass(frozen=True)
class _Judge(Scorer):
    def _backend(self) -> ChatBackend:
        return self.resources["backend"]

    def setup(self) -> None:
        b = self.backend
        if b is None:
            raise TypeError(
                f"judge {self.name}: no backend; pass backend= a ChatBackend (OpenAIBackend, "
                "TransformersBackend, VLLMBackend) or a function that builds one"
            )
        if not isinstance(b, ChatBackend):
            b = b()
        if not isinstance(b, ChatBackend):
            raise TypeError(
                f"judge {self.name}: backend factory returned {type(b).__name__}, not a ChatBackend"
            )
        self.resources["backend"] = b

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        cfg["backend"] = self.backend_id or _backend_identity(self.backend)
        return cfg

    def source(self) -> dict[str, Any]:
        return {
            "backend": self.backend_id or _backend_identity(self.backend),
            "function": f"{type(self).__module__}.{type(self).__qualname__}",
        }

    def _ask(
        self, conversations: list[list[dict]], seeds: list[list[int]]
    ) -> list[list[str | None]]:
        """Answers (``generation.n`` per conversation; None where the backend errored)."""
        from prefdata.progress import progress_bar

        out: list[list[str | None]] = []
        step = max(1, self.batch_size)
        with progress_bar(
            len(conversations), desc=self.name, unit="asks", enabled=self.progress
        ) as bar:
            for i in range(0, len(conversations), step):
                res = self._backend().chat(
                    conversations[i : i + step], self.generation, seeds[i : i + step]
                )
                if len(res) != len(conversations[i : i + step]):
                    raise RuntimeError(
                        f"backend returned {len(res)} results for "
                        f"{len(conversations[i : i + step])} conversations"
                    )
                out.extend([None] if r.error else [c.text for c in r.completions] for r in res)
                bar.update(len(res))
        return out


@dataclass(frozen=True)
class JudgePointwise(_Judge):
    """Rate each candidate on ``scale`` with a rubric; the score is the mean of the parsed
    ratings of the ``generation.n`` samples (raw scale, not normalised). An answer with no
    rating in range gives a null score and the flag ``{name}_unparsed`` (``judge_unparsed``
    by default); a backend error gives the flag ``{name}_error``. Never raises for either.

    ``template`` may use ``{rubric}``, ``{conversation}``, ``{prompt}`` (last user turn),
    ``{response}``, ``{low}``, ``{high}``. Seeds derive from (seed, prompt_id, candidate_id).

    >>> JudgePointwise(backend=lambda: None, name="judge").score_fields()
    ('judge',)
    """

    backend: ChatBackend | Callable[[], ChatBackend] = field(
        default=None, metadata={"fingerprint": False}
    )
    rubric: str = DEFAULT_RUBRIC
    name: str = "judge"
    scale: tuple[float, float] = (1.0, 10.0)
    template: str = POINTWISE_TEMPLATE
    system_prompt: str | None = None
    generation: GenerationConfig = GenerationConfig(n=1, temperature=0.0, max_tokens=256)
    seed: int = 0
    batch_size: int = 64
    backend_id: str | None = None

    def process(self, table: pa.Table) -> pa.Table:
        view = candidates_view(table)
        prompts = table["prompt"].to_pylist()
        pids = table["prompt_id"].to_pylist()
        cids = view.field("candidate_id")
        low, high = self.scale
        convs, seeds = [], []
        for k, r in enumerate(view.row):
            p = prompts[r]
            text = self.template.format(
                rubric=self.rubric,
                conversation=render_conversation(p),
                prompt=next((m["content"] for m in reversed(p) if m["role"] == "user"), ""),
                response=view.responses[k] or "",
                low=_fmt(low),
                high=_fmt(high),
            )
            msgs = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
            convs.append([*msgs, {"role": "user", "content": text}])
            seeds.append(
                [seed_for(self.seed, pids[r], cids[k], j) for j in range(self.generation.n)]
            )
        answers = self._ask(convs, seeds)
        values = np.full(len(view), np.nan)
        flags: list[list[str]] = [[] for _ in range(len(view))]
        for k, ans in enumerate(answers):
            if ans == [None]:
                flags[k].append(f"{self.name}_error")
                continue
            parsed = [v for v in (parse_rating(a, low, high) for a in ans) if v is not None]
            if parsed:
                values[k] = float(np.mean(parsed))
            else:
                flags[k].append(f"{self.name}_unparsed")
        return with_scores(table, {self.name: values}, flags=flags)


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


_VERDICT_VALUE = {"A": 1.0, "B": 0.0, "C": 0.5}


@dataclass(frozen=True)
class JudgePairwise(_Judge):
    """Compare candidates pairwise, each pair asked in both orders (A/B then B/A) to cancel
    position bias. ``P(i better than j)`` is the mean over both orders (and the
    ``generation.n`` samples) of 1 for a win, 0.5 for a tie ([[C]]), 0 for a loss, over the
    answers that parse; null when none parse.

    Per-candidate score (``{name}``): with ``reference=None``, the mean win probability of
    the candidate against every other candidate of its pool (a Borda-style score in [0, 1];
    a pool of one candidate gets null). With ``reference="<generator>"``, the probability
    of beating that generator's candidate in the pool (the reference itself scores 0.5; a
    pool without it gets null and the flag ``{name}_no_reference``). Candidates with an
    unparsed comparison get the flag ``{name}_unparsed``. All pairs cost ``n(n-1)`` calls per
    pool: use a reference for large pools. :meth:`compare` returns the pair-level table.

    >>> JudgePairwise(backend=lambda: None, name="pw").score_fields()
    ('pw',)
    """

    backend: ChatBackend | Callable[[], ChatBackend] = field(
        default=None, metadata={"fingerprint": False}
    )
    rubric: str = DEFAULT_RUBRIC
    name: str = "pairwise"
    reference: str | None = None
    template: str = PAIRWISE_TEMPLATE
    system_prompt: str | None = None
    generation: GenerationConfig = GenerationConfig(n=1, temperature=0.0, max_tokens=256)
    seed: int = 0
    batch_size: int = 64
    backend_id: str | None = None

    def _pairs(self, view, table) -> list[tuple[int, int, int]]:
        """(row, i, j) flat candidate indices to compare (i < j or i vs the reference)."""
        gens = view.field("generator")
        pairs = []
        for r in range(table.num_rows):
            lo, hi = int(view.offsets[r]), int(view.offsets[r + 1])
            if self.reference is None:
                pairs += [(r, i, j) for i in range(lo, hi) for j in range(i + 1, hi)]
            else:
                ref = next((k for k in range(lo, hi) if gens[k] == self.reference), None)
                if ref is not None:
                    pairs += [(r, i, ref) for i in range(lo, hi) if i != ref]
        return pairs

    def compare(self, table: pa.Table) -> pa.Table:
        """Pair-level results: prompt_id, candidate_a, candidate_b, p_a_better (null when no
        answer parsed), parsed (answers that parsed, of ``2 * n``), a_first and b_first (the
        mean verdict value for A in each order: a gap between them is position bias)."""
        self.check(table.schema)
        self.ensure_setup()
        return self._compare(candidates_view(table), table)[0]

    def _compare(self, view, table, pairs: list[tuple[int, int, int]] | None = None):
        """Judge ``pairs`` ((row, i, j) flat candidate indices; default: :meth:`_pairs`)
        in both orders: the public pair table and the rows with ``_i``/``_j``."""
        prompts = table["prompt"].to_pylist()
        pids = table["prompt_id"].to_pylist()
        cids = view.field("candidate_id")
        pairs = self._pairs(view, table) if pairs is None else pairs
        convs, seeds = [], []
        for r, i, j in pairs:
            for a, b in ((i, j), (j, i)):
                text = self.template.format(
                    rubric=self.rubric,
                    conversation=render_conversation(prompts[r]),
                    response_a=view.responses[a] or "",
                    response_b=view.responses[b] or "",
                )
                msgs = (
                    [{"role": "system", "content": self.system_prompt}]
                    if self.system_prompt
                    else []
                )
                convs.append([*msgs, {"role": "user", "content": text}])
                seeds.append(
                    [
                        seed_for(self.seed, pids[r], cids[a], cids[b], s)
                        for s in range(self.generation.n)
                    ]
                )
        answers = self._ask(convs, seeds)
        rows = []
        for p, (r, i, j) in enumerate(pairs):
            first = [_VERDICT_VALUE.get(parse_verdict(a), None) for a in answers[2 * p] if a]
            # Second order shows j as A: a verdict for A is a win for j.
            second = [_VERDICT_VALUE.get(parse_verdict(a), None) for a in answers[2 * p + 1] if a]
            first = [v for v in first if v is not None]
            second = [1.0 - v for v in second if v is not None]
            got = first + second
            rows.append(
                {
                    "prompt_id": pids[r],
                    "candidate_a": cids[i],
                    "candidate_b": cids[j],
                    "p_a_better": float(np.mean(got)) if got else None,
                    "parsed": len(got),
                    "a_first": float(np.mean(first)) if first else None,
                    "b_first": float(np.mean(second)) if second else None,
                    "_i": i,
                    "_j": j,
                }
            )
        schema = pa.schema(
            [
                ("prompt_id", pa.string()),
                ("candidate_a", pa.string()),
                ("candidate_b", pa.string()),
                ("p_a_better", pa.float64()),
                ("parsed", pa.int32()),
                ("a_first", pa.float64()),
                ("b_first", pa.float64()),
            ]
        )
        public = pa.Table.from_pylist(
            [{k: v for k, v in x.items() if not k.startswith("_")} for x in rows], schema=schema
        )
        return public, rows

    def process(self, table: pa.Table) -> pa.Table:
        view = candidates_view(table)
        _, rows = self._compare(view, table)
        n = len(view)
        total, count = np.zeros(n), np.zeros(n)
        flags: list[list[str]] = [[] for _ in range(n)]
        full = 2 * self.generation.n
        for x in rows:
            i, j, p = x["_i"], x["_j"], x["p_a_better"]
            if x["parsed"] < full:
                flags[i].append(f"{self.name}_unparsed")
                if self.reference is None:
                    flags[j].append(f"{self.name}_unparsed")
            if p is None:
                continue
            total[i] += p
            count[i] += 1
            if self.reference is None:
                total[j] += 1.0 - p
                count[j] += 1
        with np.errstate(invalid="ignore", divide="ignore"):
            values = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        if self.reference is not None:
            gens = view.field("generator")
            for r in range(table.num_rows):
                lo, hi = int(view.offsets[r]), int(view.offsets[r + 1])
                if not any(gens[k] == self.reference for k in range(lo, hi)):
                    for k in range(lo, hi):
                        flags[k].append(f"{self.name}_no_reference")
                else:
                    ref = next(k for k in range(lo, hi) if gens[k] == self.reference)
                    values[ref] = 0.5
        return with_scores(table, {self.name: values}, flags=flags)
