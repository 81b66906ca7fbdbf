"""Stable identifiers: digests of canonical content.

>>> prompt_id([{"role": "user", "content": "Hi"}])
'p-45fe2e7380d72dda'
>>> prompt_id([{"role": "user", "content": "Hi"}]) == prompt_id([{"content": "Hi", "role": "user"}])
True
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any


def digest(*parts: Any, size: int = 16) -> str:
    """Hex digest (``size`` hex characters) of JSON-serialisable parts.

    >>> digest("a", 1) == digest("a", 1) != digest("a", 2)
    True
    """
    payload = json.dumps(parts, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(payload.encode("utf-8"), digest_size=size // 2).hexdigest()


def canonical_messages(messages: Sequence[dict[str, Any]]) -> list[list[str]]:
    """Messages as ``[role, content]`` lists, ignoring key order and extra keys."""
    return [[m["role"], m["content"]] for m in messages]


def prompt_id(messages: Sequence[dict[str, Any]]) -> str:
    """Digest of a canonical prompt (its roles and contents, in order)."""
    return "p-" + digest("prompt", canonical_messages(messages))


def candidate_id(
    prompt_id: str, generator: str | None, sample_index: int | None, response: str
) -> str:
    """Digest of (prompt_id, generator, sample index, response text).

    >>> candidate_id("p-1", "gpt", 0, "Hello")[:2]
    'c-'
    """
    return "c-" + digest("candidate", prompt_id, generator, sample_index, response)
