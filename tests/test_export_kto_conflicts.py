"""KTO from overlapping pairs: contradictory labels are rejected, not exported."""

import pyarrow as pa

from prefdata.io.export import convert
from prefdata.schema import PAIR_SCHEMA

Q = [{"role": "user", "content": "Q"}]


def test_middle_response_of_all_pairs_is_rejected_with_a_reason():
    # good > ok, ok > bad, good > bad: "ok" is chosen once and rejected once.
    pairs = pa.Table.from_pylist(
        [
            {"prompt_id": "p", "prompt": Q, "chosen": c, "rejected": r, "strategy": "all-pairs"}
            for c, r in [("good", "ok"), ("ok", "bad"), ("good", "bad")]
        ],
        schema=PAIR_SCHEMA,
    )
    out = convert(pairs, "trl-kto")
    rows = sorted((r["completion"][0]["content"], r["label"]) for r in out.table.to_pylist())
    assert rows == [("bad", False), ("good", True)]
    reasons = sorted(r["reason"] for r in out.rejects.to_pylist())
    assert reasons == [
        "completion labelled both desirable and undesirable for this prompt",
        "completion labelled both desirable and undesirable for this prompt",
        "duplicate (prompt_id, completion, label) after unpairing",
        "duplicate (prompt_id, completion, label) after unpairing",
    ]
    assert out.table.num_rows + out.rejects.num_rows == 6
