"""Curriculum DPO (Curry-DPO): pair sets ordered from easy to hard, written as ordered
splits.

Per prompt the responses are ranked by the score (the mean of the z-scored --score-col, or
--score) and the best is paired with each of the others: (R1, Rn), ..., (R1, R2). Pairs
are grouped by that order into curriculum stages, stage 1 the easiest (the largest gap),
and each stage is written as its own split, ``trl-dpo/stage1.parquet``, ``stage2``, ...,
for training stage by stage (the paper's iterative variant trains on each in turn).

    # offline, on the sample that ships with prefdata
    python recipes/curriculum_dpo.py --sample --out out/curriculum

    python recipes/curriculum_dpo.py --input scored.parquet --layout long \\
        --score-col rm --out out/curriculum
"""

from __future__ import annotations

import sys

import pyarrow.compute as pc

from prefdata.construct import Pairs
from prefdata.recipe import (
    finish,
    main_of,
    ranked_pools,
    recipe_parser,
    run_stages,
)


def build_parser():
    p = recipe_parser(__doc__.split("\n\n")[0], formats=("trl-dpo",), ranked=True)
    c = p.add_argument_group("construction")
    c.add_argument(
        "--max-pairs-per-prompt", type=int, default=None, help="stages per prompt at most"
    )
    return p


def run(args) -> int:
    stages, rank_by = ranked_pools(args)
    stages.append(
        Pairs("curriculum", score=rank_by, max_pairs_per_prompt=args.max_pairs_per_prompt)
    )
    result = run_stages(args, stages, "curriculum")
    pairs = result.read()
    stage = pairs["curriculum_stage"]
    splits = sorted(set(stage.to_pylist())) if pairs.num_rows else []
    exports = [
        ("trl-dpo", pairs.filter(pc.equal(stage, k)), {"split": f"stage{k}", "folder": "trl-dpo"})
        for k in splits
    ]
    sizes = {f"stage{k}": exports[i][1].num_rows for i, k in enumerate(splits)}
    return finish(args, result, exports=exports, extra={"stages": sizes})


main = main_of("curriculum_dpo", build_parser, run)

if __name__ == "__main__":
    sys.exit(main())
