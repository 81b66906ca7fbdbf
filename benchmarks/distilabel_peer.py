"""Implementation (e) of ``bench_construct.py``: distilabel 1.5.3's
``LoadDataFromDicts >> FormatTextGenerationDPO``, run in distilabel's own venv (it needs no
torch; 1.5.3 imports ``requests`` without declaring it)::

    python3 -m venv /tmp/distilabel-venv
    /tmp/distilabel-venv/bin/pip install distilabel==1.5.3 requests
    /tmp/distilabel-venv/bin/python benchmarks/distilabel_peer.py POOLS.parquet OUT_DIR

Timed, from the Parquet file to the written file: read the pools with pyarrow, z-score
scorer ``a`` over the dataset (NumPy; monotone, so it picks the same candidates as the raw
score), build one dict per prompt (``instruction`` = the user turn, ``generations`` = the 8
responses, ``ratings`` = their ``a`` z-scores, ``generation_models`` = the candidate ids, so
``chosen_model``/``rejected_model`` name the chosen and rejected candidates), run the
pipeline (``FormatTextGenerationDPO`` takes max/min rating, first on ties), and write its
Distiset's train split to Parquet. It computes no strength and no vote: less work than the
other implementations. Prints one JSON line: seconds, peak RSS, rows.
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from pathlib import Path

from rss import peak_rss_mb


def main() -> None:
    data, out = Path(sys.argv[1]), Path(sys.argv[2])
    batch_size = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from distilabel.pipeline import Pipeline
    from distilabel.steps import FormatTextGenerationDPO, LoadDataFromDicts

    t0 = time.perf_counter()
    pools = pq.read_table(data)
    lists = pools["candidates"].combine_chunks()
    a = pc.struct_field(pc.list_flatten(lists), ["scores", "a"]).to_numpy()
    z = ((a - a.mean()) / a.std()).reshape(len(pools), -1).tolist()
    rows = []
    for i, row in enumerate(pools.select(["prompt_id", "prompt", "candidates"]).to_pylist()):
        cands = row["candidates"]
        rows.append(
            {
                "pid": row["prompt_id"],
                "instruction": row["prompt"][-1]["content"],
                "generations": [c["response"] for c in cands],
                "ratings": z[i],
                "generation_models": [c["candidate_id"] for c in cands],
            }
        )
    with tempfile.TemporaryDirectory() as cache:
        with Pipeline(name="bench-construct-dpo", cache_dir=cache) as pipeline:
            load = LoadDataFromDicts(data=rows, batch_size=batch_size)
            fmt = FormatTextGenerationDPO(input_batch_size=batch_size)
            load >> fmt
        distiset = pipeline.run(use_cache=False)
        train = distiset["default"]["train"]
        out.mkdir(parents=True, exist_ok=True)
        train.to_parquet(str(out / "distilabel.parquet"))
    seconds = time.perf_counter() - t0
    check = pa.table(
        {
            "prompt_id": train["pid"],
            "chosen_id": train["chosen_model"],
            "rejected_id": train["rejected_model"],
        }
    )
    pq.write_table(check, out / "check.parquet")
    rss = peak_rss_mb()
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(
        json.dumps({"seconds": seconds, "rss_mb": rss, "children_rss_mb": kids, "rows": len(train)})
    )


if __name__ == "__main__":
    main()
