"""Sequence-classification reward models: transformers (length-bucketed batches under a token
budget) and vLLM pooling.

>>> rm = RewardModel("/path/to/rm", name="rm")  # doctest: +SKIP
>>> scored = rm(pools).table  # doctest: +SKIP
>>> RewardModel("m", name="armo", objectives=("helpfulness", "safety")).score_fields()
('armo.helpfulness', 'armo.safety')
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from prefdata.score.base import Scorer, candidates_view, model_source, package_version, with_scores
from prefdata.score.batching import (
    chat_token_ids,
    plan_batches,
    resolve_pad_id,
    truncate_left,
)

__all__ = [
    "RewardModel",
    "VLLMRewardModel",
    "map_reward_outputs",
    "vllm_classify_requests",
    "vllm_classify_scores",
]


def _objective_names(name: str, objectives: Sequence[str] | None, n_cols: int, id2label=None):
    if objectives is not None:
        if len(objectives) != n_cols:
            raise ValueError(
                f"scorer {name!r}: objectives has {len(objectives)} names but the model "
                f"outputs {n_cols} values per candidate"
            )
        return [f"{name}.{o}" for o in objectives]
    if n_cols == 1:
        return [name]
    labels = [(id2label or {}).get(i) for i in range(n_cols)]
    if all(lab and not str(lab).startswith("LABEL_") for lab in labels):
        return [f"{name}.{lab}" for lab in labels]
    return [f"{name}.{i}" for i in range(n_cols)]


def map_reward_outputs(
    output: Any,
    name: str,
    objectives: Sequence[str] | None = None,
    id2label=None,
    aggregate: bool = False,
) -> dict[str, np.ndarray]:
    """Score fields from one batch of model output.

    Per-objective values come from ``output.rewards`` when the model has it (ArmoRM's custom
    output), else from ``output.logits``; column i becomes ``{name}.{objectives[i]}`` (a
    single column becomes ``{name}``). With ``aggregate``, ``output.score`` (ArmoRM's gated
    preference score) becomes the ``{name}`` field.

    >>> import torch
    >>> from types import SimpleNamespace as NS
    >>> out = map_reward_outputs(NS(logits=torch.tensor([[1.0, 2.0]])), "m", ["a", "b"])
    >>> {k: v.tolist() for k, v in out.items()}
    {'m.a': [1.0], 'm.b': [2.0]}
    """
    per = getattr(output, "rewards", None)
    if per is None:
        per = output.logits
    per = per.float().detach().cpu().numpy().astype(np.float64)
    if per.ndim == 1:
        per = per[:, None]
    names = _objective_names(name, objectives, per.shape[1], id2label)
    out = {n: per[:, i] for i, n in enumerate(names)}
    if aggregate:
        agg = getattr(output, "score", None)
        if agg is None or callable(agg):
            raise ValueError(f"scorer {name!r}: aggregate=True but the model output has no score")
        agg = agg.float().detach().cpu().numpy().astype(np.float64).reshape(len(per), -1)
        out[name] = agg[:, 0]
    return out


def head_fields(
    name: str,
    objectives: Sequence[str] | None,
    model: str,
    *,
    revision: str | None = None,
    trust_remote_code: bool = False,
    aggregate: bool = False,
) -> tuple[str, ...]:
    """The score fields a reward head writes, known before any weight is loaded: one per
    objective, else from the model's config (``num_labels``, ``id2label``) as
    :func:`map_reward_outputs` names them, then ``{name}`` for the aggregate. A config that
    cannot be read at planning time counts as one head (``setup`` checks it).

    >>> head_fields("rm", ("a", "b"), "path/to/rm", aggregate=True)
    ('rm.a', 'rm.b', 'rm')
    >>> head_fields("rm", None, "path/to/rm")
    ('rm',)
    """
    if objectives:
        names = [f"{name}.{o}" for o in objectives]
    else:
        try:
            from transformers import AutoConfig

            cfg = AutoConfig.from_pretrained(
                model, revision=revision, trust_remote_code=trust_remote_code
            )
            names = _objective_names(name, None, cfg.num_labels, getattr(cfg, "id2label", None))
        except Exception:  # noqa: BLE001 - no config here (yet): setup() checks the head
            names = [name]
    return tuple(names + [name] * aggregate)


def check_head(
    name: str,
    objectives: Sequence[str] | None,
    config: Any,
    declared: Sequence[str],
    aggregate: bool,
) -> None:
    """Raise when the loaded model's head does not write the fields the stage declared."""
    heads = _objective_names(name, objectives, config.num_labels, getattr(config, "id2label", None))
    got = tuple(heads + [name] * aggregate)
    if got != tuple(declared):
        raise ValueError(
            f"scorer {name!r}: the model's head gives {list(got)} but the stage declared "
            f"{list(declared)} (its config could not be read when the pipeline was planned)"
        )


def _is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def run_bucketed(
    ids: list[list[int]],
    forward: Callable[[list[int]], dict[str, np.ndarray]],
    token_budget: int,
    *,
    on_oom: Callable[[], None] | None = None,
    desc: str = "",
    progress: bool | None = None,
) -> tuple[dict[str, np.ndarray], list[int]]:
    """Run ``forward(indices)`` over length-bucketed batches of ``ids``; on out-of-memory
    halve the batch and retry. Returns the per-sequence outputs in input order and the batch
    sizes used. A progress bar (``desc``; on a terminal unless ``progress`` says) counts
    sequences, with tokens/s."""
    import time

    from prefdata.progress import progress_bar

    results: dict[str, np.ndarray] = {}
    sizes: list[int] = []

    def put(idx: list[int], out: dict[str, np.ndarray]) -> None:
        for k, v in out.items():
            if k not in results:
                results[k] = np.full(len(ids), np.nan)
            results[k][idx] = v

    stack = list(reversed(plan_batches([len(x) for x in ids], token_budget)))
    t0, tokens = time.perf_counter(), 0
    with progress_bar(len(ids), desc=desc, unit="seqs", enabled=progress) as bar:
        while stack:
            idx = stack.pop()
            try:
                out = forward(idx)
            except (RuntimeError, MemoryError) as exc:
                if not _is_oom(exc) or len(idx) == 1:
                    raise
                if on_oom is not None:
                    on_oom()
                half = len(idx) // 2
                stack.extend([idx[half:], idx[:half]])
                continue
            sizes.append(len(idx))
            put(idx, out)
            tokens += sum(len(ids[i]) for i in idx)
            bar.update(len(idx))
            bar.set_postfix_str(
                f"{tokens / max(time.perf_counter() - t0, 1e-9):.0f} tok/s", refresh=False
            )
    return results, sizes


@dataclass(frozen=True)
class RewardModel(Scorer):
    """Reward model through transformers ``AutoModelForSequenceClassification``.

    Each candidate is scored on the chat template over prompt + response (tokenised once,
    no double BOS). Sequences are sorted by length and packed into batches whose padded size
    ``rows * longest`` stays under ``token_budget``; on CUDA out-of-memory a batch is halved
    and retried. Sequences longer than ``max_length`` (default: the model's
    ``max_position_embeddings``) keep their last tokens and get the flag
    ``{name}_truncated``. Padding is on the right with a pad id distinct from EOS
    (``config.pad_token_id`` is set to it).

    Multi-head models: ``objectives`` names the logit columns (``{name}.{objective}``); an
    ArmoRM-style output with ``.rewards`` (per objective) and ``.score`` (aggregate) gives
    both the objective fields and the aggregate ``{name}`` (load such models with
    ``trust_remote_code=True``). Without ``objectives`` a multi-column head gives
    ``{name}.{label}`` from ``config.id2label``, or ``{name}.{i}``.

    dtype: bfloat16 on GPU, float32 on CPU unless given.

    >>> RewardModel("path/to/rm").score_fields()
    ('rm',)
    """

    model: str
    name: str = "rm"
    max_length: int | None = None
    token_budget: int = 16384
    device: str | None = None
    dtype: str | None = None
    objectives: tuple[str, ...] | None = None
    revision: str | None = None
    trust_remote_code: bool = False
    aggregate: bool = False

    def __post_init__(self) -> None:
        if self.objectives is not None and not isinstance(self.objectives, tuple):
            object.__setattr__(self, "objectives", tuple(self.objectives))
        if self.token_budget < 1:
            raise ValueError("token_budget must be positive")

    def score_fields(self) -> tuple[str, ...]:
        if "score_fields" not in self.resources:
            self.resources["score_fields"] = head_fields(
                self.name,
                self.objectives,
                self.model,
                revision=self.revision,
                trust_remote_code=self.trust_remote_code,
                aggregate=self.aggregate,
            )
        return self.resources["score_fields"]

    @property
    def truncated_flag(self) -> str:
        return f"{self.name}_truncated"

    def setup(self) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = (
            getattr(torch, self.dtype)
            if self.dtype
            else (torch.bfloat16 if device.startswith("cuda") else torch.float32)
        )
        tok = AutoTokenizer.from_pretrained(
            self.model, revision=self.revision, trust_remote_code=self.trust_remote_code
        )
        model = AutoModelForSequenceClassification.from_pretrained(
            self.model,
            dtype=dtype,
            revision=self.revision,
            trust_remote_code=self.trust_remote_code,
        )
        check_head(self.name, self.objectives, model.config, self.score_fields(), self.aggregate)
        pad = resolve_pad_id(tok)
        model.config.pad_token_id = pad
        model.to(device).eval()
        limit = self.max_length or getattr(model.config, "max_position_embeddings", None) or 4096
        self.resources.update(
            tokenizer=tok,
            model=model,
            device=device,
            pad_id=pad,
            max_length=int(limit),
            oom_retries=0,
            batch_sizes=[],
        )

    def source(self) -> dict[str, Any]:
        src = model_source(self.model, self.resources.get("model"), self.revision)
        src["transformers"] = package_version("transformers")
        return src

    def _forward(self, batch: list[list[int]]) -> dict[str, np.ndarray]:
        import torch

        r = self.resources
        width = max(len(x) for x in batch)
        ids = torch.full((len(batch), width), r["pad_id"], dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, x in enumerate(batch):
            ids[i, : len(x)] = torch.tensor(x, dtype=torch.long)
            mask[i, : len(x)] = 1
        with torch.inference_mode():
            out = r["model"](input_ids=ids.to(r["device"]), attention_mask=mask.to(r["device"]))
        return map_reward_outputs(
            out,
            self.name,
            self.objectives,
            getattr(r["model"].config, "id2label", None),
            self.aggregate,
        )

    def encode(self, table: pa.Table) -> tuple[list[list[int]], list[bool]]:
        """Token ids per candidate (flattened) and whether each was truncated."""
        view = candidates_view(table)
        prompts = table["prompt"].to_pylist()
        tok = self.resources["tokenizer"]
        responses = ["" if r is None else r for r in view.responses]
        raw = chat_token_ids(tok, [prompts[i] for i in view.row], responses)
        cut = [truncate_left(x, self.resources["max_length"], tok.bos_token_id) for x in raw]
        return [c[0] for c in cut], [c[1] for c in cut]

    def process(self, table: pa.Table) -> pa.Table:
        ids, truncated = self.encode(table)
        empty = {f: np.array([], dtype=np.float64) for f in self.score_fields()}
        if not ids:
            return with_scores(table, empty)

        def oom() -> None:
            import torch

            self.resources["oom_retries"] += 1
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

        scores, sizes = run_bucketed(
            ids,
            lambda idx: self._forward([ids[i] for i in idx]),
            self.token_budget,
            on_oom=oom,
            desc=self.name,
            progress=self.progress,
        )
        self.resources["batch_sizes"].extend(sizes)
        flags = [[self.truncated_flag] if t else [] for t in truncated]
        return with_scores(table, scores, flags=flags)


# -- vLLM -------------------------------------------------------------------------------


def vllm_classify_requests(
    tokenizer: Any,
    prompts: Sequence[Sequence[dict]],
    responses: Sequence[str],
    max_length: int,
) -> tuple[list[dict[str, list[int]]], list[bool]]:
    """vLLM ``TokensPrompt`` dicts (``{"prompt_token_ids": ids}``) over the chat template,
    truncated like :class:`RewardModel`, and the truncation flags.

    Token ids rather than text: vLLM would add a BOS to text the template already began with.
    """
    raw = chat_token_ids(tokenizer, prompts, responses)
    cut = [truncate_left(x, max_length, tokenizer.bos_token_id) for x in raw]
    return [{"prompt_token_ids": c[0]} for c in cut], [c[1] for c in cut]


def vllm_classify_scores(outputs: Sequence[Any], fields: Sequence[str]) -> dict[str, np.ndarray]:
    """Score fields from ``LLM.classify`` outputs (``ClassificationRequestOutput``): column i
    of the head becomes ``fields[i]`` (the stage's :meth:`score_fields`, from
    :func:`head_fields`, so labelled heads are named as :class:`RewardModel` names them).

    Each output's ``.outputs.probs`` holds one value per label; with
    ``PoolingParams(use_activation=False)`` these are the raw logits despite the name.

    >>> from types import SimpleNamespace as NS
    >>> outs = [NS(outputs=NS(probs=[0.5, -1.0])), NS(outputs=NS(probs=[2.0, 0.0]))]
    >>> {k: v.tolist() for k, v in vllm_classify_scores(outs, ["m.a", "m.b"]).items()}
    {'m.a': [0.5, 2.0], 'm.b': [-1.0, 0.0]}
    """
    rows = [np.asarray(o.outputs.probs, dtype=np.float64).reshape(-1) for o in outputs]
    widths = {len(r) for r in rows}
    if len(widths) > 1:
        raise ValueError(f"vLLM returned outputs of differing widths {sorted(widths)}")
    mat = np.stack(rows) if rows else np.zeros((0, len(fields)))
    if mat.shape[1] != len(fields):
        raise ValueError(f"the head gives {mat.shape[1]} values per candidate, not {list(fields)}")
    return {n: mat[:, i] for i, n in enumerate(fields)}


@dataclass(frozen=True)
class VLLMRewardModel(Scorer):
    """Reward model through vLLM pooling: ``LLM(model, runner="pooling", convert="classify")``
    and ``classify(prompts, pooling_params=PoolingParams(use_activation=False))`` for raw
    logits. vLLM is imported lazily in :meth:`setup` (a GPU, or vLLM's CPU build: CI runs
    it on tiny models in ``tests/vllm_cpu_check.py``; :func:`vllm_classify_requests` and
    :func:`vllm_classify_scores` are tested without vLLM too).
    ArmoRM's custom head is not in vLLM's registry: use :class:`RewardModel` for it.

    >>> VLLMRewardModel("path/to/rm", name="skywork").score_fields()
    ('skywork',)
    """

    model: str
    name: str = "rm"
    max_length: int | None = None
    objectives: tuple[str, ...] | None = None
    dtype: str = "auto"
    seed: int = 0
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    llm_kwargs: tuple[tuple[str, Any], ...] = field(default=())

    def score_fields(self) -> tuple[str, ...]:
        if "score_fields" not in self.resources:
            fields = head_fields(self.name, self.objectives, self.model)
            self.resources["score_fields"] = fields
        return self.resources["score_fields"]

    def setup(self) -> None:
        from vllm import LLM, PoolingParams  # lazy: optional (a GPU or vLLM's CPU build)

        kwargs = {
            "runner": "pooling",
            "convert": "classify",
            "dtype": self.dtype,
            "seed": self.seed,
            "tensor_parallel_size": self.tensor_parallel_size,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            **({"max_model_len": self.max_length} if self.max_length else {}),
            **dict(self.llm_kwargs),  # the caller's word wins
        }
        llm = LLM(self.model, **kwargs)
        config = llm.llm_engine.model_config
        check_head(self.name, self.objectives, config.hf_config, self.score_fields(), False)
        tok = llm.get_tokenizer()
        limit = self.max_length or config.max_model_len
        self.resources.update(
            llm=llm, tokenizer=tok, params=PoolingParams(use_activation=False), max_length=limit
        )

    def source(self) -> dict[str, Any]:
        return {"model": self.model, "revision": None, "vllm": package_version("vllm")}

    def process(self, table: pa.Table) -> pa.Table:
        r = self.resources
        view = candidates_view(table)
        prompts = table["prompt"].to_pylist()
        reqs, truncated = vllm_classify_requests(
            r["tokenizer"],
            [prompts[i] for i in view.row],
            ["" if x is None else x for x in view.responses],
            r["max_length"],
        )
        outs = r["llm"].classify(reqs, pooling_params=r["params"], use_tqdm=False) if reqs else []
        scores = vllm_classify_scores(outs, self.score_fields())
        flags = [[f"{self.name}_truncated"] if t else [] for t in truncated]
        return with_scores(table, scores, flags=flags)
