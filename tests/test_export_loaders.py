"""Our files against the rules of the loaders of LLaMA-Factory, Axolotl, OpenRLHF, NeMo-RL
and PRO. Those projects cannot be installed here (GPU stacks, pinned dependencies), so each
test re-implements the relevant part of the loader faithfully, cites the file it follows,
and runs it on what ``export`` wrote (read back from disk). Chat templates are applied with
the real tiny tokenizer from the ``tiny_models`` fixture.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from prefdata.io.export import export
from prefdata.schema import LIST_SCHEMA, PAIR_SCHEMA, UNPAIRED_SCHEMA

U1 = {"role": "user", "content": "What is the capital of France?"}
A1 = {"role": "assistant", "content": "The capital of France is Paris."}
U2 = {"role": "user", "content": "Give me three tips for staying productive."}
SYS = {"role": "system", "content": "Be brief."}
TOOL_CALL = {"role": "assistant", "content": "calculator(12 * 7)"}
TOOL = {"role": "tool", "content": "84"}

PROMPTS = [[U2], [SYS, U2], [U1, A1, U2], [SYS, U1, A1, U2], [U1, TOOL_CALL, TOOL]]


def _pairs() -> pa.Table:
    rows = [
        {
            "prompt_id": f"p{i}",
            "prompt": p,
            "chosen": f"Sure! Here is a list: {i}. apples 2. bananas 3. cherries.",
            "rejected": "I am sorry, but I cannot help with that request.",
            "margin": 0.5 * (i + 1),
            "strategy": "best-worst",
        }
        for i, p in enumerate(PROMPTS)
    ]
    return pa.Table.from_pylist(rows, schema=PAIR_SCHEMA)


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def tokenizer(tiny_models):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_models["tokenizer"])


# ------------------------------------------------------------------ LLaMA-Factory

_LF_DEFAULTS = {
    "formatting": "alpaca",
    "ranking": False,
    "system": None,
    "chosen": None,
    "rejected": None,
    "kto_tag": None,
    "prompt": "instruction",
    "query": "input",
    "response": "output",
    "history": None,
    "messages": "conversations",
    "role_tag": "from",
    "content_tag": "value",
    "user_tag": "human",
    "assistant_tag": "gpt",
    "observation_tag": "observation",
    "function_tag": "function_call",
    "system_tag": "system",
}


def _lf_attr(entry: dict) -> dict:
    """``get_dataset_list`` in src/llamafactory/data/parser.py: ``set_attr(key, obj)`` sets
    every listed column / tag to ``obj.get(key)``, i.e. None when missing."""
    attr = dict(_LF_DEFAULTS)
    attr["formatting"] = entry.get("formatting", "alpaca")
    attr["ranking"] = entry.get("ranking", False)
    if "columns" in entry:
        names = ["system", "tools", "images", "chosen", "rejected", "kto_tag"]
        names += (
            ["prompt", "query", "response", "history"]
            if attr["formatting"] == "alpaca"
            else ["messages"]
        )
        for n in names:
            attr[n] = entry["columns"].get(n)
    if attr["formatting"] == "sharegpt" and "tags" in entry:
        for t in (
            "role_tag",
            "content_tag",
            "user_tag",
            "assistant_tag",
            "observation_tag",
            "function_tag",
            "system_tag",
        ):
            attr[t] = entry["tags"].get(t)
    return attr


def _lf_sharegpt(example: dict, a: dict) -> tuple[list, list, str, bool]:
    """``SharegptDatasetConverter.__call__`` (src/llamafactory/data/converter.py): returns
    (prompt, response, system, broken)."""
    tag_mapping = {
        a["user_tag"]: "user",
        a["assistant_tag"]: "assistant",
        a["observation_tag"]: "observation",
        a["function_tag"]: "function",
        a["system_tag"]: "system",
    }
    odd_tags = (a["user_tag"], a["observation_tag"])
    even_tags = (a["assistant_tag"], a["function_tag"])
    accept_tags = (odd_tags, even_tags)
    messages = example[a["messages"]]
    if a["system_tag"] and len(messages) != 0 and messages[0][a["role_tag"]] == a["system_tag"]:
        system = messages[0][a["content_tag"]]
        messages = messages[1:]
    else:
        system = example[a["system"]] if a["system"] else ""
    aligned, broken = [], False
    for turn_idx, message in enumerate(messages):
        if message[a["role_tag"]] not in accept_tags[turn_idx % 2]:
            broken = True
            break
        aligned.append(
            {"role": tag_mapping[message[a["role_tag"]]], "content": message[a["content_tag"]]}
        )
    if (not a["ranking"] and len(aligned) % 2 != 0) or (a["ranking"] and len(aligned) % 2 == 0):
        broken = True
    if broken:
        return [], [], system, True
    if a["kto_tag"] and isinstance(example[a["kto_tag"]], bool):
        prompt, response = aligned[:-1], aligned[-1:]
        empty = {"role": "assistant", "content": ""}
        response = response + [empty] if example[a["kto_tag"]] else [empty] + response
    elif (
        a["ranking"]
        and isinstance(example[a["chosen"]], dict)
        and isinstance(example[a["rejected"]], dict)
    ):
        chosen, rejected = example[a["chosen"]], example[a["rejected"]]
        if (
            chosen[a["role_tag"]] not in accept_tags[-1]
            or rejected[a["role_tag"]] not in (accept_tags[-1])
        ):
            broken = True
        prompt = aligned
        response = [
            {"role": tag_mapping[chosen[a["role_tag"]]], "content": chosen[a["content_tag"]]},
            {"role": tag_mapping[rejected[a["role_tag"]]], "content": rejected[a["content_tag"]]},
        ]
    else:
        prompt, response = aligned[:-1], aligned[-1:]
    return prompt, response, system, broken


def _lf_alpaca(example: dict, a: dict) -> tuple[list, list, str]:
    """``AlpacaDatasetConverter.__call__`` (src/llamafactory/data/converter.py), ranking path."""
    prompt = []
    if a["history"] and isinstance(example[a["history"]], list):
        for old_prompt, old_response in example[a["history"]]:
            prompt.append({"role": "user", "content": old_prompt})
            prompt.append({"role": "assistant", "content": old_response})
    query = []
    if a["prompt"] and example[a["prompt"]]:
        query.append(example[a["prompt"]])
    if a["query"] and example[a["query"]]:
        query.append(example[a["query"]])
    prompt.append({"role": "user", "content": "\n".join(query)})
    assert a["ranking"] and isinstance(example[a["chosen"]], str)
    response = [
        {"role": "assistant", "content": example[a["chosen"]]},
        {"role": "assistant", "content": example[a["rejected"]]},
    ]
    return prompt, response, example[a["system"]] if a["system"] else ""


def _lf_kept_by_processor(prompt: list, response: list) -> bool:
    """``PairwiseDatasetProcessor.preprocess_dataset`` (src/llamafactory/data/processor/
    pairwise.py) and the feedback (KTO) processor drop examples with an even prompt length or
    fewer than two responses."""
    return len(prompt) % 2 == 1 and len(response) >= 2


def _canon(prompt: list) -> list:
    """LLaMA-Factory's roles back to ours (observation = a tool result)."""
    names = {"observation": "tool"}
    return [{"role": names.get(m["role"], m["role"]), "content": m["content"]} for m in prompt]


@pytest.mark.parametrize("style", ["sharegpt", "openai"])
def test_llamafactory_sharegpt_ranking_rows_survive_its_converter(tmp_path, style):
    """Follows hiyouga/LLaMA-Factory src/llamafactory/data/parser.py (dataset_info.json ->
    DatasetAttr), src/llamafactory/data/converter.py (SharegptDatasetConverter) and
    src/llamafactory/data/processor/pairwise.py (the odd-length / two-response check)."""
    pairs = _pairs()
    export(pairs, "llamafactory", tmp_path, style=style)
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    attr = _lf_attr(info["prefdata_train"])
    rows = _read_jsonl(tmp_path / info["prefdata_train"]["file_name"])
    assert len(rows) == pairs.num_rows
    for src, row in zip(pairs.to_pylist(), rows, strict=True):
        prompt, response, system, broken = _lf_sharegpt(row, attr)
        assert not broken, row
        assert _lf_kept_by_processor(prompt, response)
        full = ([{"role": "system", "content": system}] if system else []) + _canon(prompt)
        assert full == src["prompt"]
        assert [r["content"] for r in response] == [src["chosen"], src["rejected"]]
        assert {r["role"] for r in response} == {"assistant"}


def test_llamafactory_kto_rows_survive_its_converter(tmp_path):
    """Follows hiyouga/LLaMA-Factory src/llamafactory/data/converter.py (the ``kto_tag``
    branch of SharegptDatasetConverter: the label must be a JSON bool, the conversation must
    end on the assistant) and parser.py for the entry."""
    rows = [
        {"prompt_id": f"u{i}", "prompt": p, "completion": f"answer {i}", "label": i % 2 == 0}
        for i, p in enumerate(PROMPTS)
    ]
    table = pa.Table.from_pylist(rows, schema=UNPAIRED_SCHEMA)
    export(table, "llamafactory", tmp_path, split="kto")
    info = json.loads((tmp_path / "dataset_info.json").read_text())["prefdata_kto"]
    attr = _lf_attr(info)
    for src, row in zip(rows, _read_jsonl(tmp_path / info["file_name"]), strict=True):
        assert isinstance(row["label"], bool)
        prompt, response, system, broken = _lf_sharegpt(row, attr)
        assert not broken and _lf_kept_by_processor(prompt, response)
        full = ([{"role": "system", "content": system}] if system else []) + _canon(prompt)
        assert full == src["prompt"]
        desirable = response[0]["content"] != ""
        assert desirable == src["label"]
        assert src["completion"] in (response[0]["content"], response[1]["content"])


def test_llamafactory_alpaca_ranking_rows_survive_its_converter(tmp_path):
    """Follows hiyouga/LLaMA-Factory src/llamafactory/data/converter.py
    (AlpacaDatasetConverter: history pairs, instruction + input joined by a newline, the
    ranking branch) and parser.py (alpaca column names)."""
    pairs = _pairs()
    out = export(pairs, "llamafactory-alpaca", tmp_path)
    assert out.rejects["row"].to_pylist() == [4]  # the tool turn cannot be expressed
    info = json.loads((tmp_path / "dataset_info.json").read_text())["prefdata_train"]
    attr = _lf_attr(info)
    kept = [r for i, r in enumerate(pairs.to_pylist()) if i != 4]
    for src, row in zip(kept, _read_jsonl(tmp_path / info["file_name"]), strict=True):
        prompt, response, system = _lf_alpaca(row, attr)
        assert _lf_kept_by_processor(prompt, response)
        full = ([{"role": "system", "content": system}] if system else []) + prompt
        assert full == src["prompt"]
        assert [r["content"] for r in response] == [src["chosen"], src["rejected"]]


# ------------------------------------------------------------------ Axolotl


def test_axolotl_chat_template_default_renders_our_rows(tmp_path, tokenizer):
    """Follows axolotl-ai-cloud/axolotl src/axolotl/prompt_strategies/dpo/chat_template.py
    (``default``: role map, prompt with a generation prompt, each response rendered after a
    dummy user turn and cut at ``find(content)``)."""
    import yaml

    pairs = _pairs()
    out = export(pairs, "axolotl", tmp_path)
    cfg = yaml.safe_load((tmp_path / "axolotl.yaml").read_text())["datasets"][0]
    mapping = cfg["message_property_mappings"]
    role_map = {src: tgt for tgt, srcs in cfg["roles"].items() for src in srcs}
    dummy = {"role": "user", "content": "[[dummy_message]]"}
    for src, sample in zip(pairs.to_pylist(), _read_jsonl(out[0]), strict=True):
        messages = [
            {"role": role_map[m[mapping["role"]]], "content": m[mapping["content"]]}
            for m in sample[cfg["field_messages"]]
        ]
        result = {
            "prompt": tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=False
            )
        }
        for key in ("chosen", "rejected"):
            raw = sample[cfg[f"field_{key}"]]
            assert isinstance(raw, dict)  # one message, not a list
            msg = {"role": role_map[raw[mapping["role"]]], "content": raw[mapping["content"]]}
            text = tokenizer.apply_chat_template([dummy, msg], tokenize=False)
            result[key] = text[text.find(msg["content"]) :].rstrip()
        expected_prompt = tokenizer.apply_chat_template(
            src["prompt"], add_generation_prompt=True, tokenize=False
        )
        assert result["prompt"] == expected_prompt
        for key in ("chosen", "rejected"):
            assert result[key].startswith(src[key])
            assert "[[dummy_message]]" not in result[key]


# ------------------------------------------------------------------ OpenRLHF


def _openrlhf_preprocess(data, apply_chat_template, is_dpo):
    """``preprocess_data`` of openrlhf/datasets/reward_dataset.py (OpenRLHF/OpenRLHF) with
    ``apply_chat_template`` and no ``prompt_key``."""
    prompt = ""
    chosen = apply_chat_template(data["chosen"], tokenize=False)
    rejected = apply_chat_template(data["rejected"], tokenize=False)
    if is_dpo:
        prompt = apply_chat_template(
            data["chosen"][:-1], tokenize=False, add_generation_prompt=True
        )
        chosen = chosen[len(prompt) :]
        rejected = rejected[len(prompt) :]
    margin = data["margin"] if data.get("margin") is not None else 0
    return prompt, chosen, rejected, margin


def test_openrlhf_reward_and_dpo_preprocessing(tmp_path, tokenizer):
    """Follows OpenRLHF/OpenRLHF openrlhf/datasets/reward_dataset.py (``preprocess_data``:
    prompt = template(chosen[:-1]), responses sliced at len(prompt); ``margin`` read when not
    None). Slicing is only right when rejected shares the prompt, which we check."""
    pairs = _pairs()
    out = export(pairs, "openrlhf", tmp_path)
    apply = tokenizer.apply_chat_template
    for src, data in zip(pairs.to_pylist(), _read_jsonl(out[0]), strict=True):
        assert data["chosen"][:-1] == data["rejected"][:-1] == src["prompt"]
        prompt, chosen, rejected, margin = _openrlhf_preprocess(data, apply, is_dpo=True)
        assert apply(data["rejected"], tokenize=False).startswith(prompt)
        assert chosen.startswith(src["chosen"]) and rejected.startswith(src["rejected"])
        _, rm_chosen, _, rm_margin = _openrlhf_preprocess(data, apply, is_dpo=False)
        assert rm_margin == margin == src["margin"]
        assert rm_chosen == prompt + chosen


# ------------------------------------------------------------------ NeMo-RL


def _nemo_preference_preprocessor(datum):
    """The ranking part of ``preference_preprocessor`` in nemo_rl/data/processors.py
    (NVIDIA-NeMo/RL): exactly two completions, lower rank preferred, ties raise."""
    assert len(datum["completions"]) == 2, "RM/DPO training supports only two completions"
    c0, c1 = datum["completions"]
    if c0["rank"] < c1["rank"]:
        chosen, rejected = c0, c1
    elif c0["rank"] > c1["rank"]:
        chosen, rejected = c1, c0
    else:
        raise NotImplementedError("Ties are not supported yet.")
    return datum["context"] + chosen["completion"], datum["context"] + rejected["completion"]


def test_nemo_rl_rank_format(tmp_path, tokenizer):
    """Follows NVIDIA-NeMo/RL nemo_rl/data/datasets/preference_datasets/preference_dataset.py
    (rank format read with ``load_dataset("json")``) and nemo_rl/data/processors.py
    (``preference_preprocessor``)."""
    from datasets import load_dataset

    pairs = _pairs()
    out = export(pairs, "nemo-rl", tmp_path)
    ds = load_dataset("json", data_files=str(out[0]), cache_dir=str(tmp_path / "c"))["train"]
    assert set(ds.column_names) == {"context", "completions"}
    for src, datum in zip(pairs.to_pylist(), ds, strict=True):
        chosen, rejected = _nemo_preference_preprocessor(datum)
        assert chosen == src["prompt"] + [{"role": "assistant", "content": src["chosen"]}]
        assert rejected[-1]["content"] == src["rejected"]
        tokenizer.apply_chat_template(chosen, tokenize=False)  # renders without error


# ------------------------------------------------------------------ PRO (listwise)


def test_pro_collator_reads_listwise_rows(tmp_path):
    """Follows AlibabaResearch/DAMO-ConvAI PRO/train/utils/data_manager.py
    (``HH_DataManager.train_data_collator``: prefixes joined and their tags mapped to
    Human/Assistant, ``[:training_stage]`` slices, ``sft_index < training_stage``, rewards
    reshaped to (batch, training_stage)) on our JSONL."""
    rows = [
        {
            "prompt_id": f"l{i}",
            "prompt": p,
            "responses": [
                {
                    "candidate_id": f"c{j}",
                    "response": f"resp {j}",
                    "generator": "g",
                    "score": 3.0 - j,
                    "rank": j + 1,
                }
                for j in range(3)
            ],
            "scorer": "rm",
        }
        for i, p in enumerate(PROMPTS[:4])
    ]
    table = pa.Table.from_pylist(rows, schema=LIST_SCHEMA)
    out = export(table, "listwise", tmp_path, num_responses=3)
    features = _read_jsonl(out[0])
    training_stage = 3
    ps, ss, rs = [], [], []
    for feature in features:
        for p, s, r in zip(
            feature["prefix"][:training_stage],
            feature["suffix"][:training_stage],
            feature["reward"][:training_stage],
            strict=True,
        ):
            p = "".join(p)
            p = p.replace("<|prompter|>", "\n\nHuman: ").replace("<|assistant|>", "\n\nAssistant: ")
            ps.append(p.rstrip())
            ss.append(s)
            rs.append(r)
        assert feature["sft_index"] < training_stage
    assert len(rs) == len(features) * training_stage  # the .view(samples, stage) reshape
    assert ps[0] == "\n\nHuman: " + U2["content"] + "\n\nAssistant:"
    assert ps[training_stage] == SYS["content"] + "\n\nHuman: " + U2["content"] + "\n\nAssistant:"
    assert ss[:3] == ["resp 0", "resp 1", "resp 2"]
    for f in features:
        assert f["reward"] == sorted(f["reward"], reverse=True)
