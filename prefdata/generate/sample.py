"""The ``Sample`` stage: fill each pool's candidates from a chat backend.

Per-candidate seeds come from (run seed, prompt_id, sample index) alone, so a rerun, a
different shard split or another worker reproduces them; the stage is row-local, which lets
the executor checkpoint per shard and regenerate only unfinished shards. Candidates are
appended to those already in the pool, so several samplers can fill one pool (a strong and
a weak model for delta-learning pairs, an on-policy model beside stronger ones). Sample
indices of a generator continue after its candidates already in the pool, so a second pass
with the same generator draws new samples rather than repeating the first ones.

>>> import pyarrow as pa
>>> pools = pa.table({"prompt_id": ["p-1"], "prompt": [[{"role": "user", "content": "Hi"}]]})
>>> out = Sample(model="path/to/model", n=4, max_tokens=64)(pools)  # doctest: +SKIP
>>> len(out.table["candidates"][0])  # doctest: +SKIP
4
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prefdata.arrow import list_lengths, list_parents, offsets_of, parents_of, starts_of
from prefdata.generate.base import (
    ChatBackend,
    ChatResult,
    GenerationConfig,
    Message,
    looks_like_secret_name,
)
from prefdata.ids import candidate_id, digest
from prefdata.pipeline import Stage, StageOutput, split
from prefdata.progress import progress_bar
from prefdata.schema import PROMPT_END_ROLES, ROLES, candidate_type

BackendKind = Literal["transformers", "vllm", "openai"]


def candidate_seed(run_seed: int, prompt_id: str, sample_index: int) -> int:
    """The seed of one candidate: a 63-bit digest of (run seed, prompt_id, sample index).

    >>> candidate_seed(0, "p-1", 0) == candidate_seed(0, "p-1", 0) != candidate_seed(0, "p-1", 1)
    True
    >>> 0 <= candidate_seed(0, "p-1", 0) < 2**63
    True
    """
    return int(digest("sample-seed", int(run_seed), prompt_id, int(sample_index)), 16) >> 1


def default_generator_name(model: str) -> str:
    """The generator recorded for ``model`` unless ``generator=`` names it: the model id or
    path as given (without a trailing slash), so two local models in folders of the same
    name stay two generators.

    >>> default_generator_name("/models/a/qwen-3b/"), default_generator_name("Qwen/Qwen2.5-3B")
    ('/models/a/qwen-3b', 'Qwen/Qwen2.5-3B')
    """
    model = str(model)
    return model.rstrip("/\\") or model


def make_backend(
    kind: BackendKind, model: str, *, base_url: str | None = None, **options: Any
) -> ChatBackend:
    """Build a chat backend by kind: ``transformers``, ``vllm`` or ``openai``.

    >>> make_backend("openai", "m").url  # doctest: +SKIP
    Traceback (most recent call last):
    ValueError: the openai backend needs base_url
    """
    if kind == "transformers":
        from prefdata.generate.transformers_backend import TransformersBackend

        return TransformersBackend(model, **options)
    if kind == "vllm":
        from prefdata.generate.vllm_backend import VLLMBackend

        return VLLMBackend(model, **options)
    if kind == "openai":
        if not base_url:
            raise ValueError("the openai backend needs base_url")
        from prefdata.generate.openai_backend import OpenAIBackend

        return OpenAIBackend(base_url, model, **options)
    raise ValueError(f"unknown backend {kind!r}; expected transformers, vllm or openai")


def _pairs(value: Mapping[str, Any] | Sequence[tuple[str, Any]] | None) -> tuple:
    if not value:
        return ()
    items = value.items() if isinstance(value, Mapping) else value
    return tuple(sorted((str(k), v) for k, v in items))


def validate_prompt(prompt: Any) -> str | None:
    """Why ``prompt`` cannot be sampled from, or None.

    >>> validate_prompt([{"role": "assistant", "content": "Hi"}])
    "prompt must end with a user or tool turn; it ends with 'assistant'"
    """
    if not prompt:
        return "prompt is empty"
    for k, m in enumerate(prompt):
        if not isinstance(m, Mapping) or m.get("role") not in ROLES:
            role = m.get("role") if isinstance(m, Mapping) else m
            return f"prompt[{k}] has role {role!r}; expected one of {ROLES}"
        if not isinstance(m.get("content"), str):
            return f"prompt[{k}].content is missing"
    last = prompt[-1]["role"]
    if last not in PROMPT_END_ROLES:
        return f"prompt must end with a user or tool turn; it ends with {last!r}"
    return None


@dataclass(frozen=True)
class Sample(Stage):
    """Sample ``n`` candidates per pool from ``model`` and append them to ``candidates``.

    ``backend`` is ``"transformers"`` (``model`` is a local path or Hub id), ``"vllm"`` or
    ``"openai"`` (``model`` is the served model name at ``base_url``). ``system_prompt`` is
    put first in conversations that have no system turn of their own. Each candidate records
    ``generator`` (default: the model's name), ``sample_index``, ``seed``,
    ``finish_reason``, ``num_tokens``, a null entry for every existing score field, and the
    flags ``truncated`` (finish_reason ``"length"``) and ``empty`` (whitespace only).
    A conversation the backend cannot serve (longer than the context, refused) goes to
    rejects with the backend's reason.

    ``options`` go to the backend (``batch_size``, ``device``, ``concurrency``,
    ``api_key_env``, vLLM engine arguments, ...); they are not fingerprinted, and may not
    hold credentials: the OpenAI backend reads its key from the environment variable named
    by ``api_key_env``. ``dtype`` and ``max_model_len`` change outputs, so they are config.
    """

    model: str = ""
    backend: BackendKind = "transformers"
    base_url: str | None = None
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    system_prompt: str | None = None
    chat_template_kwargs: tuple[tuple[str, Any], ...] = ()
    seed: int = 0
    generator: str | None = None
    dtype: str | None = None
    max_model_len: int | None = None
    options: tuple[tuple[str, Any], ...] = field(default=(), metadata={"fingerprint": False})
    chunk_size: int = field(default=256, metadata={"fingerprint": False})
    progress: bool | None = field(default=None, metadata={"fingerprint": False})

    requires = ("prompt_id", "prompt")
    provides = ("candidates",)

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("Sample needs model (a path, Hub id or served model name)")
        if self.backend not in ("transformers", "vllm", "openai"):
            raise ValueError(f"unknown backend {self.backend!r}")
        if self.n < 1 or self.max_tokens < 1 or self.chunk_size < 1:
            raise ValueError("n, max_tokens and chunk_size must be >= 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError("temperature must be >= 0 and top_p in (0, 1]")
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        object.__setattr__(self, "stop", stop)
        object.__setattr__(self, "chat_template_kwargs", _pairs(self.chat_template_kwargs))
        options = _pairs(self.options)
        for key, _ in options:
            if looks_like_secret_name(key):
                raise ValueError(
                    f"option {key!r} looks like a credential; set it in the environment and "
                    "name the variable with api_key_env"
                )
        object.__setattr__(self, "options", options)

    @property
    def generator_name(self) -> str:
        return self.generator or default_generator_name(self.model)

    @property
    def name(self) -> str:
        """``Sample[<generator>]``: two samplers in one run are two funnel lines."""
        return f"Sample[{self.generator_name}]"

    @property
    def generation_config(self) -> GenerationConfig:
        return GenerationConfig(
            n=self.n,
            temperature=self.temperature,
            top_p=self.top_p,
            max_tokens=self.max_tokens,
            stop=self.stop,
            chat_template_kwargs=self.chat_template_kwargs,
        )

    def setup(self) -> None:
        options = dict(self.options)
        if self.backend == "transformers":
            options.setdefault("dtype", self.dtype)
            options.setdefault("max_model_len", self.max_model_len)
        elif self.backend == "vllm":
            if self.dtype is not None:
                options.setdefault("dtype", self.dtype)
            if self.max_model_len is not None:
                options.setdefault("max_model_len", self.max_model_len)
        options.setdefault("name", self.generator_name)
        self.resources["backend"] = make_backend(
            self.backend, self.model, base_url=self.base_url, **options
        )

    # -- helpers ------------------------------------------------------------------------
    def conversation(self, prompt: Sequence[Mapping[str, Any]]) -> list[Message]:
        conv = [{"role": m["role"], "content": m["content"]} for m in prompt]
        if self.system_prompt is not None and conv[0]["role"] != "system":
            conv.insert(0, {"role": "system", "content": self.system_prompt})
        return conv

    def _first_indices(self, candidates: pa.Array) -> np.ndarray:
        """Per row, the first free sample index of this generator (vectorised)."""
        rows = len(candidates)
        parents = list_parents(candidates)
        if not parents.size:
            return np.zeros(rows, dtype=np.int64)
        flat = pc.list_flatten(candidates)
        # struct_field, not field(): a null candidate's hidden children must not count
        gen = pc.struct_field(flat, "generator")
        mine = pc.fill_null(pc.equal(gen, self.generator_name), False)
        mine = mine.to_numpy(zero_copy_only=False)
        idx = pc.struct_field(flat, "sample_index")
        idx = pc.fill_null(idx, -1).to_numpy(zero_copy_only=False)
        count = np.bincount(parents[mine], minlength=rows)
        top = np.full(rows, -1, dtype=np.int64)
        np.maximum.at(top, parents[mine], idx[mine].astype(np.int64))
        return np.maximum(top + 1, count)

    # -- the stage ----------------------------------------------------------------------
    def process(self, table: pa.Table) -> StageOutput:
        if "candidates" not in table.column_names:
            empty = pa.array([[]] * table.num_rows, type=pa.list_(candidate_type()))
            table = table.append_column("candidates", empty)
        col = table.schema.get_field_index("candidates")
        cand_type = table.schema.field("candidates").type.value_type
        names = (
            [f.name for f in cand_type.field("scores").type]
            if cand_type.get_field_index("scores") >= 0
            else []
        )
        ctype = candidate_type(names)
        list_type = pa.list_(ctype)
        try:
            old = table["candidates"].cast(list_type).combine_chunks()
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise ValueError(f"{self.name}: candidates do not fit the pool schema: {exc}") from exc

        prompt_ids = table["prompt_id"].to_pylist()
        prompts = table["prompt"].to_pylist()
        errors: list[str | None] = [
            "prompt_id is missing" if not pid else validate_prompt(p)
            for pid, p in zip(prompt_ids, prompts, strict=True)
        ]
        fields: list[str | None] = [
            ("prompt_id" if not pid else "prompt") if e else None
            for pid, e in zip(prompt_ids, errors, strict=True)
        ]
        first = self._first_indices(old)
        todo = [r for r, e in enumerate(errors) if e is None]
        results: dict[int, ChatResult] = {}
        backend: ChatBackend = self.resources["backend"]
        config = self.generation_config
        t0, tokens = time.perf_counter(), 0
        # counts prompts (its rate is prompts/s), with tokens/s as postfix; a disabled bar's
        # update and close do nothing
        with progress_bar(
            len(todo),
            desc=self.name,
            unit="prompts",
            enabled=self.progress if todo else False,
        ) as bar:
            for start in range(0, len(todo), self.chunk_size):
                chunk = todo[start : start + self.chunk_size]
                seeds = [
                    [candidate_seed(self.seed, prompt_ids[r], first[r] + j) for j in range(self.n)]
                    for r in chunk
                ]
                convs = [self.conversation(prompts[r]) for r in chunk]
                for r, res in zip(chunk, backend.chat(convs, config, seeds), strict=True):
                    results[r] = res
                    tokens += sum(c.num_tokens or 0 for c in res.completions)
                bar.update(len(chunk))
                elapsed = max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix_str(f"{tokens / elapsed:.1f} tok/s", refresh=False)

        new: list[list[dict[str, Any]]] = [[] for _ in range(table.num_rows)]
        for r, res in results.items():
            if res.error is None and len(res.completions) != self.n:
                got = len(res.completions)
                res = ChatResult(error=f"backend returned {got} of {self.n} completions")
            if res.error is not None:
                errors[r], fields[r] = f"sampling failed: {res.error}", "prompt"
                continue
            for j, comp in enumerate(res.completions):
                index = int(first[r] + j)
                flags = []
                if comp.finish_reason == "length":
                    flags.append("truncated")
                if not comp.text.strip():
                    flags.append("empty")
                new[r].append(
                    {
                        "candidate_id": candidate_id(
                            prompt_ids[r], self.generator_name, index, comp.text
                        ),
                        "response": comp.text,
                        "generator": self.generator_name,
                        "sample_index": index,
                        "seed": comp.seed,
                        "finish_reason": comp.finish_reason,
                        "num_tokens": comp.num_tokens,
                        "scores": {},
                        "flags": flags,
                    }
                )
        merged = append_candidates(old, new, ctype)
        table = table.set_column(col, "candidates", merged)
        keep = np.array([e is None for e in errors], dtype=bool)
        reasons = [e or "" for e in errors]
        return split(table, keep, self.name, reasons, field=fields)


def append_candidates(
    old: pa.Array, new: Sequence[Sequence[Mapping[str, Any]]], ctype: pa.StructType
) -> pa.Array:
    """Per row, the candidates of ``old`` followed by those of ``new`` (a null list counts
    as empty). The gather is vectorised: one ``take`` over old and new values.

    >>> from prefdata.schema import candidate_type
    >>> t = candidate_type()
    >>> c = {"candidate_id": "c", "response": "r", "generator": "g", "scores": {}, "flags": []}
    >>> old = pa.array([[c], None], type=pa.list_(t))
    >>> [len(x) for x in append_candidates(old, [[c], [c, c]], t).to_pylist()]
    [2, 2]
    """
    old_len = list_lengths(old)
    old_values = pc.list_flatten(old)
    new_len = np.array([len(x) for x in new], dtype=np.int64)
    new_values = pa.array([c for row in new for c in row], type=ctype)
    values = pa.concat_arrays([old_values, new_values]) if len(new_values) else old_values
    total = old_len + new_len
    offsets = offsets_of(total, np.int64)
    old_start, new_start = starts_of(old_len), starts_of(new_len)
    row_of = parents_of(total)
    within = np.arange(offsets[-1]) - offsets[:-1][row_of]
    is_old = within < old_len[row_of]
    take = np.where(
        is_old,
        old_start[row_of] + within,
        len(old_values) + new_start[row_of] + within - old_len[row_of],
    )
    return pa.ListArray.from_arrays(
        pa.array(offsets, type=pa.int32()), values.take(pa.array(take, type=pa.int64()))
    ).cast(pa.list_(ctype))
