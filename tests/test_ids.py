"""The id scheme: pinned values (a change of scheme must be a visible decision), and the
bulk (Arrow + DuckDB) ids equal the one-at-a-time ones on any content."""

from __future__ import annotations

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from prefdata import ids
from prefdata.schema import MESSAGES_TYPE


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def test_pinned_ids():
    assert ids.canonical_prompt(user("Hi")) == "prompt:4:user:2:Hi"
    assert ids.prompt_id(user("Hi")) == "p-d7317f9c18d28540"
    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Grüße, 世界"},
    ]
    assert ids.canonical_prompt(conversation) == (
        "prompt:6:system:9:Be brief.:4:user:15:Grüße, 世界"
    )
    assert ids.prompt_id(conversation) == "p-71ebdb0ae7d00ab0"
    assert ids.canonical_candidate("p-d7317f9c18d28540", None, 0, "Hello") == (
        "candidate:18:p-d7317f9c18d28540:~::1:0:5:Hello"
    )
    assert ids.candidate_id("p-d7317f9c18d28540", None, 0, "Hello") == "c-cc08fd22ab104f27"
    assert ids.candidate_id("p-d7317f9c18d28540", "gpt-4", 3, "") == "c-76315a0ecb3c21ac"


def test_content_cannot_forge_a_boundary():
    # the same characters split differently between fields give different ids
    assert ids.candidate_id("p-1", "a:1:b", 0, "x") != ids.candidate_id("p-1", "a", 0, "1:b:x")
    assert ids.prompt_id(user("a") + user("b")) != ids.prompt_id(user("a:4:user:1:b"))
    assert ids.candidate_id("p-1", None, 0, "x") != ids.candidate_id("p-1", "", 0, "x")


text = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=30)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(
                st.none(),
                st.lists(st.tuples(st.sampled_from(["user", "system"]), text), max_size=3),
            ),
            st.one_of(st.none(), text),
            st.one_of(st.none(), st.integers(0, 2**31 - 1)),
            text,
        ),
        max_size=12,
    )
)
def test_bulk_ids_equal_one_at_a_time(rows):
    prompts = [None if p is None else [{"role": r, "content": c} for r, c in p] for p, *_ in rows]
    got = ids.prompt_ids(pa.array(prompts, MESSAGES_TYPE)).to_pylist()
    assert got == [None if p is None else ids.prompt_id(p) for p in prompts]
    pids = [g or "p-none" for g in got]
    gens, idx, resp = ([r[k] for r in rows] for k in (1, 2, 3))
    bulk = ids.candidate_ids(
        pa.array(pids, pa.string()),
        pa.array(gens, pa.string()),
        pa.array(idx, pa.int64()),
        pa.array(resp, pa.string()),
    ).to_pylist()
    assert bulk == [ids.candidate_id(*r) for r in zip(pids, gens, idx, resp, strict=True)]


def test_bulk_ids_of_sliced_and_chunked_input():
    prompts = pa.array([user(str(i)) for i in range(10)], MESSAGES_TYPE).slice(3, 4)
    assert ids.prompt_ids(prompts).to_pylist() == [ids.prompt_id(user(str(i))) for i in range(3, 7)]
    resp = pa.chunked_array([["a", "b"], ["c"]])
    got = ids.candidate_ids(
        pa.array(["p"] * 3), pa.array(["g"] * 3), pa.array([0, 1, 2]), resp
    ).to_pylist()
    assert got == [ids.candidate_id("p", "g", i, t) for i, t in enumerate("abc")]
