"""The pairs layout reads rows column-wise and only sends the rows it cannot vouch for to
the per-row rules: on any input, the pools, rejects and reasons equal those of reading
every row by the per-row rules."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prefdata.io.layouts import pairs as pairs_layout
from prefdata.io.layouts import to_pools
from prefdata.schema import MESSAGES_TYPE

texts = st.sampled_from(["", " ", "Q", "A", "B", "\x1c", "\u00a0x", "hi there", "\n"])
roles = st.sampled_from(["user", "assistant", "system", "tool", "bogus", None])
any_msg = st.one_of(
    st.none(),
    st.fixed_dictionaries({"role": roles, "content": st.one_of(st.none(), texts)}),
)
good_msg = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system"]), "content": texts}
)
msgs = st.one_of(st.none(), st.lists(st.one_of(good_msg, good_msg, any_msg), max_size=4))
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


def both_ways(monkeypatch, raw: pa.Table, **options):
    fast = to_pools(raw, "pairs", **options)
    with monkeypatch.context() as m:  # every row by the per-row rules
        m.setattr(pairs_layout, "messages_ok", lambda lists: np.zeros(len(lists), bool))
        m.setattr(pairs_layout, "_MAYBE_BLANK", "")
        m.setattr(pairs_layout, "_plain_pairs_json", lambda *args: None)  # merged pools' JSON
        slow = to_pools(raw, "pairs", **options)
    assert fast.table.equals(slow.table)
    assert fast.rejects.to_pylist() == slow.rejects.to_pylist()


@SETTINGS
@given(
    st.lists(
        st.tuples(*[st.one_of(st.none(), texts)] * 3, st.one_of(st.none(), st.floats())),
        min_size=1,
        max_size=8,
    )
)
def test_string_pairs(monkeypatch, rows):
    cols = list(zip(*rows, strict=True))
    raw = pa.table(
        {
            "prompt": pa.array(cols[0], pa.string()),
            "chosen": pa.array(cols[1], pa.string()),
            "rejected": pa.array(cols[2], pa.string()),
            "m": pa.array(cols[3], pa.float64()),
        }
    )
    both_ways(monkeypatch, raw, margin_col="m")


@SETTINGS
@given(st.lists(st.tuples(*[st.one_of(st.none(), texts)] * 3), min_size=1, max_size=12))
def test_merged_pools_list_their_pairs_as_json_does(monkeypatch, rows):
    """Without margins the merged pools' ``{"pairs": [...]}`` is built column-wise: the
    very text ``json.dumps`` of the per-row loop gives."""
    cols = list(zip(*rows, strict=True))
    names = ("prompt", "chosen", "rejected")
    raw = pa.table({n: pa.array(c, pa.string()) for n, c in zip(names, cols, strict=True)})
    both_ways(monkeypatch, raw)


@SETTINGS
@given(st.lists(st.tuples(msgs, msgs, msgs, st.booleans()), min_size=1, max_size=6), st.booleans())
def test_message_list_pairs(monkeypatch, rows, with_prompt):
    shaped = []
    for p, c, r, share in rows:  # often well-formed: shared prefixes, full conversations
        if share and with_prompt and p and c is not None:
            c = p + c[-1:]
        if share and not with_prompt and c and r is not None:
            r = c[:-1] + r[-1:]
        shaped.append((p, c, r))
    cols = {
        "chosen": pa.array([x[1] for x in shaped], MESSAGES_TYPE),
        "rejected": pa.array([x[2] for x in shaped], MESSAGES_TYPE),
    }
    if with_prompt:
        cols["prompt"] = pa.array([x[0] for x in shaped], MESSAGES_TYPE)
    both_ways(monkeypatch, pa.table(cols))


@pytest.mark.parametrize("prompt", ["Q", None])
def test_string_prompt_with_full_conversations(monkeypatch, prompt):
    """ultrafeedback_binarized's shape: a string prompt, chosen and rejected as the whole
    conversation (the prompt's user turn, then the answer)."""
    conv = lambda a: [{"role": "user", "content": "Q"}, {"role": "assistant", "content": a}]  # noqa: E731
    raw = pa.table(
        {
            "prompt": pa.array([prompt, "Q", "other"], pa.string()),
            "chosen": pa.array([conv("A"), conv("B"), conv("C")], MESSAGES_TYPE),
            "rejected": pa.array([conv("X"), conv("Y"), conv("Z")], MESSAGES_TYPE),
        }
    )
    both_ways(monkeypatch, raw)
    out = to_pools(raw, "pairs")
    assert out.rejects.num_rows == (1 if prompt is None else 0) + 1  # "other" != "Q"


def test_a_pair_with_the_same_text_on_both_sides_is_rejected():
    """No preference is recorded when chosen and rejected are one text: the row is a
    reject naming the rejected column, in the column-wise and the per-row path alike."""
    conv = lambda a: [{"role": "user", "content": "Q"}, {"role": "assistant", "content": a}]  # noqa: E731
    for raw in (
        pa.table({"prompt": ["Q", "Q2"], "chosen": ["A", "same"], "rejected": ["B", "same"]}),
        pa.table(
            {
                "chosen": pa.array([conv("A"), conv("same")], MESSAGES_TYPE),
                "rejected": pa.array([conv("B"), conv("same")], MESSAGES_TYPE),
            }
        ),
    ):
        out = to_pools(raw, "pairs")
        assert out.table.num_rows == 1
        assert out.rejects.select(["row", "field", "reason"]).to_pylist() == [
            {"row": 1, "field": "rejected", "reason": "chosen and rejected are the same text"}
        ]
