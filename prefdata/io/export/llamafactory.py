"""LLaMA-Factory: sharegpt + ranking (DPO/RM), sharegpt KTO (``kto_tag``), alpaca + ranking,
and the ``dataset_info.json`` entry that registers the file.

Rules from ``src/llamafactory/data/converter.py`` and ``parser.py`` (hiyouga/LLaMA-Factory),
``SharegptDatasetConverter``: a leading system turn (``system_tag``) becomes the system
prompt; the remaining turns must alternate user/observation, assistant/function starting
with the user; with ``ranking`` the conversation has an odd length (ends on the user) and
``chosen``/``rejected`` are ONE assistant message each; without it (KTO) an even length.
A row that breaks these is skipped with only a log warning there, so here it is rejected
with a reason instead. System turns are written to a ``system`` column (mapped in the
entry); a system turn after the first message cannot be expressed and is rejected.

``tags`` in an entry replace *every* tag (``DatasetAttr.set_attr`` defaults missing ones to
None), so the OpenAI-style entry lists all seven. Written as JSON Lines.

>>> r = to_llamafactory({"prompt": [{"role": "system", "content": "Be brief."},
...                      {"role": "user", "content": "Hi"}], "chosen": "Hello", "rejected": "No"})
>>> r["conversations"], r["chosen"], r["system"]
([{'from': 'human', 'value': 'Hi'}], {'from': 'gpt', 'value': 'Hello'}, 'Be brief.')
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from prefdata.arrow import offsets_of
from prefdata.io.export._arrow import (
    Converted,
    Messages,
    Reasons,
    check_prompt,
    check_text,
    column,
    finish,
    keep_columns,
    write_json,
)
from prefdata.io.export.trl import check_prompt_record, pair_parts, pair_reasons, record_text

Style = Literal["sharegpt", "openai"]

SHAREGPT_ROLES = {"user": "human", "assistant": "gpt", "tool": "observation", "system": "system"}
"""Our roles -> LLaMA-Factory's default sharegpt tags (``from``/``value``)."""

OPENAI_TAGS = {
    "role_tag": "role",
    "content_tag": "content",
    "user_tag": "user",
    "assistant_tag": "assistant",
    "observation_tag": "tool",
    "function_tag": "function_call",
    "system_tag": "system",
}


def _keys(style: Style) -> tuple[str, str]:
    return ("from", "value") if style == "sharegpt" else ("role", "content")


def _role_map(style: Style) -> dict[str, str] | None:
    return SHAREGPT_ROLES if style == "sharegpt" else None


def split_system(prompt: list[dict[str, str]]) -> tuple[str, list[dict[str, str]]]:
    """Move a leading system turn out of the conversation; check the rest alternates
    user/tool, assistant, ... as LLaMA-Factory's converter requires.

    >>> split_system([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    Traceback (most recent call last):
    ...
    ValueError: prompt[1] has role 'user' where LLaMA-Factory needs an assistant turn
    """
    system = ""
    offset = 0
    if prompt and prompt[0]["role"] == "system":
        system, prompt, offset = prompt[0]["content"], prompt[1:], 1
    for i, m in enumerate(prompt):
        want = ("user", "tool") if i % 2 == 0 else ("assistant",)
        if m["role"] not in want:
            need = "a user or tool" if i % 2 == 0 else "an assistant"
            raise ValueError(
                f"prompt[{i + offset}] has role {m['role']!r} where LLaMA-Factory needs {need} turn"
            )
    return system, prompt


def _msg(role: str, content: str, style: Style) -> dict[str, str]:
    k = _keys(style)
    rm = _role_map(style) or {}
    return {k[0]: rm.get(role, role), k[1]: content}


def to_llamafactory(pair: Mapping[str, Any], *, style: Style = "sharegpt") -> dict[str, Any]:
    """A canonical pair as a LLaMA-Factory sharegpt ranking record."""
    prompt, chosen, rejected = pair_parts(pair)
    system, conv = split_system(prompt)
    return {
        "conversations": [_msg(m["role"], m["content"], style) for m in conv],
        "chosen": _msg("assistant", chosen, style),
        "rejected": _msg("assistant", rejected, style),
        "system": system,
    }


def to_llamafactory_kto(example: Mapping[str, Any], *, style: Style = "sharegpt") -> dict:
    """A canonical unpaired example as a LLaMA-Factory KTO record (``kto_tag`` = label).

    >>> to_llamafactory_kto({"prompt": [{"role": "user", "content": "Hi"}],
    ...                      "completion": "Hello", "label": False})["messages"][-1]
    {'from': 'gpt', 'value': 'Hello'}
    """
    system, conv = split_system(check_prompt_record(example.get("prompt")))
    completion = record_text(example, "completion")
    label = example.get("label")
    if not isinstance(label, bool):
        raise ValueError(f"label must be a bool, got {label!r}")
    messages = [_msg(m["role"], m["content"], style) for m in conv]
    return {
        "messages": messages + [_msg("assistant", completion, style)],
        "label": label,
        "system": system,
    }


def to_llamafactory_alpaca(pair: Mapping[str, Any]) -> dict[str, Any]:
    """A canonical pair as an alpaca ranking record: the last user turn is the instruction,
    earlier (user, assistant) turns are ``history``.

    >>> r = to_llamafactory_alpaca({"prompt": [{"role": "user", "content": "a"},
    ...     {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}],
    ...     "chosen": "d", "rejected": "e"})
    >>> r["instruction"], r["history"]
    ('c', [['a', 'b']])
    """
    prompt, chosen, rejected = pair_parts(pair)
    system, conv = split_system(prompt)
    if any(m["role"] == "tool" for m in conv):
        raise ValueError("prompt has a tool turn, which alpaca format cannot hold")
    history = [[conv[i]["content"], conv[i + 1]["content"]] for i in range(0, len(conv) - 1, 2)]
    return {
        "instruction": conv[-1]["content"],
        "input": "",
        "chosen": chosen,
        "rejected": rejected,
        "system": system,
        "history": history,
    }


# ---------------------------------------------------------------- vectorised


def _conversation_checks(reasons: Reasons, msgs: Messages, field: str = "prompt") -> Messages:
    """Reject rows LLaMA-Factory would skip; return the conversations without the leading
    system turn (its text goes to the ``system`` column)."""
    pos = msgs.positions
    has_sys = msgs.first_role_in(("system",))
    lead_sys = (pos == 0) & np.repeat(has_sys, msgs.lengths)
    later_sys = msgs.role_in(("system",)) & ~lead_sys
    reasons.add(
        msgs.any_per_row(later_sys), f"{field} has a system turn after the first message", field
    )
    turn = pos - np.repeat(has_sys.astype(np.int64), msgs.lengths)
    user_slot = (turn % 2 == 0) & ~lead_sys
    bad = (user_slot & ~msgs.role_in(("user", "tool"))) | (
        (turn % 2 == 1) & ~msgs.role_in(("assistant",)) & ~lead_sys
    )
    reasons.add(
        msgs.any_per_row(bad & ~later_sys),
        f"{field} does not alternate user/tool and assistant turns as LLaMA-Factory requires",
        field,
    )
    return msgs.take_flat(~lead_sys)


def _system_column(msgs: Messages, idx: np.ndarray) -> pa.Array:
    sub = msgs.take_rows(idx)
    has = sub.first_role_in(("system",))
    texts = np.full(len(idx), "", dtype=object)
    if has.any():
        firsts = sub.contents.take(pa.array(sub.starts[has])).to_numpy(zero_copy_only=False)
        texts[has] = firsts
    return pa.array(texts, pa.string())


def llamafactory_table(
    pairs: pa.Table, *, style: Style = "sharegpt", keep: Sequence[str] | str = ()
) -> Converted:
    """Vectorised :func:`to_llamafactory`."""
    msgs = Messages.of(pairs["prompt"])
    reasons = pair_reasons(pairs, msgs)
    conv = _conversation_checks(reasons, msgs)
    keys, rmap = _keys(style), _role_map(style)

    def build(kept: pa.Table, idx: np.ndarray) -> pa.Table:
        out = {
            "conversations": conv.take_rows(idx).to_array(keys, rmap),
            "chosen": Messages.single("assistant", kept["chosen"]).to_struct(keys, rmap),
            "rejected": Messages.single("assistant", kept["rejected"]).to_struct(keys, rmap),
            "system": _system_column(msgs, idx),
        }
        return pa.table(keep_columns(kept, out, keep, {"prompt", "chosen", "rejected"}))

    return finish(pairs, reasons, "export:llamafactory", build)


def llamafactory_kto_table(
    unpaired: pa.Table, *, style: Style = "sharegpt", keep: Sequence[str] | str = ()
) -> Converted:
    """Vectorised :func:`to_llamafactory_kto` over an unpaired table."""
    msgs = Messages.of(unpaired["prompt"])
    reasons = Reasons(unpaired.num_rows)
    check_prompt(reasons, unpaired, msgs)
    check_text(reasons, unpaired, "completion")
    reasons.add(
        column(unpaired, "label").is_null().to_numpy(zero_copy_only=False), "label is null", "label"
    )
    conv = _conversation_checks(reasons, msgs)
    keys, rmap = _keys(style), _role_map(style)

    def build(kept: pa.Table, idx: np.ndarray) -> pa.Table:
        full = conv.take_rows(idx).append("assistant", kept["completion"])
        out = {
            "messages": full.to_array(keys, rmap),
            "label": column(kept, "label").cast(pa.bool_()),
            "system": _system_column(msgs, idx),
        }
        return pa.table(keep_columns(kept, out, keep, {"prompt", "completion", "label"}))

    return finish(unpaired, reasons, "export:llamafactory", build)


def llamafactory_alpaca_table(pairs: pa.Table, *, keep: Sequence[str] | str = ()) -> Converted:
    """Vectorised :func:`to_llamafactory_alpaca`."""
    msgs = Messages.of(pairs["prompt"])
    reasons = pair_reasons(pairs, msgs)
    conv = _conversation_checks(reasons, msgs)
    reasons.add(
        conv.any_per_row(conv.role_in(("tool",))),
        "prompt has a tool turn, which alpaca format cannot hold",
        "prompt",
    )

    def build(kept: pa.Table, idx: np.ndarray) -> pa.Table:
        sub = conv.take_rows(idx)
        last = sub.starts + sub.lengths - 1
        instruction = sub.contents.take(pa.array(last))
        # history: the (user, assistant) turns before the last one, as [[u, a], ...].
        hist = sub.take_flat(sub.positions < np.repeat(sub.lengths - 1, sub.lengths))
        n_pairs = hist.lengths // 2
        inner = pa.ListArray.from_arrays(
            pa.array(np.arange(0, len(hist.contents) + 1, 2, dtype=np.int32)), hist.contents
        )
        history = pa.ListArray.from_arrays(pa.array(offsets_of(n_pairs)), inner)
        out = {
            "instruction": instruction,
            "input": pa.array(np.full(len(idx), "", dtype=object), pa.string()),
            "chosen": column(kept, "chosen"),
            "rejected": column(kept, "rejected"),
            "system": _system_column(msgs, idx),
            "history": history,
        }
        return pa.table(keep_columns(kept, out, keep, {"prompt", "chosen", "rejected"}))

    return finish(pairs, reasons, "export:llamafactory-alpaca", build)


# ---------------------------------------------------------------- dataset_info.json


def dataset_info_entry(
    file_name: str, *, kind: Literal["pair", "unpaired", "alpaca"], style: Style = "sharegpt"
) -> dict[str, Any]:
    """The ``dataset_info.json`` entry for a file written by this module.

    >>> dataset_info_entry("train.jsonl", kind="pair")["columns"]
    {'messages': 'conversations', 'chosen': 'chosen', 'rejected': 'rejected', 'system': 'system'}
    """
    if kind == "alpaca":
        return {
            "file_name": file_name,
            "formatting": "alpaca",
            "ranking": True,
            "columns": {
                "prompt": "instruction",
                "query": "input",
                "chosen": "chosen",
                "rejected": "rejected",
                "system": "system",
                "history": "history",
            },
        }
    entry: dict[str, Any] = {"file_name": file_name, "formatting": "sharegpt"}
    if kind == "pair":
        entry["ranking"] = True
        entry["columns"] = {
            "messages": "conversations",
            "chosen": "chosen",
            "rejected": "rejected",
            "system": "system",
        }
    else:
        entry["columns"] = {"messages": "messages", "kto_tag": "label", "system": "system"}
    if style == "openai":
        entry["tags"] = dict(OPENAI_TAGS)
    return entry


def write_dataset_info(out_dir: Path, name: str, entry: Mapping[str, Any]) -> Path:
    """Add (or replace) entry ``name`` in ``out_dir/dataset_info.json``, keeping the others."""
    path = Path(out_dir) / "dataset_info.json"
    info: dict[str, Any] = {}
    if path.exists():
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON; not overwriting it: {e}") from e
        if not isinstance(info, dict):
            raise ValueError(f"{path} does not hold a JSON object; not overwriting it")
    info[name] = dict(entry)
    return write_json(info, path)
