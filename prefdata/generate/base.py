"""The interface every chat backend implements (transformers, vLLM, OpenAI-compatible HTTP).

Samplers (``prefdata.generate``) and LLM judges / rationale writers use backends through
this one protocol, so any backend can serve any of them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

Message = dict[str, str]


@dataclass(frozen=True)
class GenerationConfig:
    """Sampling settings shared by every backend."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    chat_template_kwargs: tuple[tuple[str, Any], ...] = ()


@dataclass
class Completion:
    """One generated response."""

    text: str
    finish_reason: str | None = None
    num_tokens: int | None = None
    seed: int | None = None


@dataclass
class ChatResult:
    """The completions for one conversation, or why it could not be served."""

    completions: list[Completion] = field(default_factory=list)
    error: str | None = None


def check_seeds(
    conversations: Sequence[Sequence[Message]], seeds: Sequence[Sequence[int]], n: int
) -> None:
    """Every backend's first check: one list of ``n`` seeds per conversation.

    >>> check_seeds([[{"role": "user", "content": "Hi"}]], [[1], [2]], 1)
    Traceback (most recent call last):
    ValueError: 1 conversations but 2 seed lists
    >>> check_seeds([[{"role": "user", "content": "Hi"}]], [[1]], 2)
    Traceback (most recent call last):
    ValueError: conversation 0: 1 seeds for n=2
    """
    if len(seeds) != len(conversations):
        raise ValueError(f"{len(conversations)} conversations but {len(seeds)} seed lists")
    for i, conv_seeds in enumerate(seeds):
        if len(conv_seeds) != n:
            raise ValueError(f"conversation {i}: {len(conv_seeds)} seeds for n={n}")


@runtime_checkable
class ChatBackend(Protocol):
    """Generates ``config.n`` completions per conversation.

    ``seeds[i][j]`` is the seed of completion j of conversation i; a backend must give the same
    completions for the same seeds. A conversation it cannot serve (longer than the context,
    refused by the server) gets a ``ChatResult`` with ``error`` set instead of raising.
    """

    name: str

    def chat(
        self,
        conversations: Sequence[Sequence[Message]],
        config: GenerationConfig,
        seeds: Sequence[Sequence[int]],
    ) -> list[ChatResult]: ...


_SECRET_NAME = re.compile(
    r"(^|[_\-.])(api_?key|apikey|token|access_?token|auth_?token|secret|password|passwd"
    r"|authorization|credentials?)$",
    re.IGNORECASE,
)
_SECRET_VALUE = re.compile(r"^(sk|hf|rk|pk|ghp|gho|xox[abp])[-_][A-Za-z0-9_\-]{8,}")


def looks_like_secret_name(name: str) -> bool:
    """True for option names that hold credentials (whole name segments, so engine options
    such as ``max_num_batched_tokens`` or ``tokenizer_mode`` are not caught).

    >>> [looks_like_secret_name(n) for n in ("api_key", "hf_token", "tokenizer_mode",
    ...                                       "max_num_batched_tokens", "api_key_env")]
    [True, True, False, False, False]
    """
    return bool(_SECRET_NAME.search(name))


def redact(name: str, value: object) -> str:
    """``repr(value)``, or ``'***'`` when the name or the value looks like a credential.

    >>> redact("api_key", "abc"), redact("url", "http://x"), redact("", "sk-abcdefgh12345")
    ("'***'", "'http://x'", "'***'")
    """
    if looks_like_secret_name(name) or (isinstance(value, str) and _SECRET_VALUE.match(value)):
        return "'***'"
    return repr(value)
