"""Candidate generation: chat backends and the ``Sample`` stage that fills pools.

Backends (transformers, vLLM, OpenAI-compatible HTTP) implement
:class:`prefdata.generate.base.ChatBackend`; their modules import torch / vLLM lazily, so
importing this package needs neither.

>>> from prefdata.generate import Sample, candidate_seed
>>> Sample(model="Qwen/Qwen2.5-1.5B-Instruct", n=4).generator_name
'Qwen/Qwen2.5-1.5B-Instruct'
"""

from prefdata.generate.base import ChatBackend, ChatResult, Completion, GenerationConfig
from prefdata.generate.sample import (
    Sample,
    append_candidates,
    candidate_seed,
    default_generator_name,
    make_backend,
    validate_prompt,
)

__all__ = [
    "ChatBackend",
    "ChatResult",
    "Completion",
    "GenerationConfig",
    "Sample",
    "append_candidates",
    "candidate_seed",
    "default_generator_name",
    "make_backend",
    "validate_prompt",
]
