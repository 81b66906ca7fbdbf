"""Reward-model data from the best and worst of N responses (West-of-N), keeping only the
pairs whose margin is confident.

Per prompt, the best and the worst response by the ranking score (the z-scored mean of
every --score-col, or --score) make a pair; pairs whose margin is below the --quantile of
all margins are dropped (the confidence filter: West-of-N keeps pairs whose preference
probability is above a quantile; the margin orders pairs the same way). The pairs get the
ensemble strength and a soft label, and are written for TRL's RewardTrainer with the
margin.

    # offline, on the sample that ships with prefdata
    python recipes/west_of_n_rm.py --sample --out out/west-of-n

    # N sampled responses per prompt, scored by several reward models
    python recipes/west_of_n_rm.py --input scored.parquet --layout long \\
        --score-col rm_a --score-col rm_b --quantile 0.25 --out out/west-of-n
"""

from __future__ import annotations

import sys

from prefdata.annotate import Strength
from prefdata.construct import Pairs
from prefdata.recipe import (
    UsageError,
    finish,
    main_of,
    ranked_pools,
    recipe_parser,
    run_stages,
    score_columns,
)


def build_parser():
    p = recipe_parser(__doc__.split("\n\n")[0], formats=("trl-reward",), ranked=True)
    c = p.add_argument_group("construction")
    c.add_argument(
        "--quantile",
        type=float,
        default=0.25,
        help="drop pairs whose margin is below this quantile of all margins",
    )
    return p


def run(args) -> int:
    if not 0 <= args.quantile < 1:
        raise UsageError(f"--quantile must be in [0, 1), not {args.quantile}")
    stages, rank_by = ranked_pools(args)
    z = tuple(f"{s}.z" for s in score_columns(args))
    stages += [Pairs("best-worst", score=rank_by, quantile=args.quantile), Strength(scorers=z)]
    return finish(args, run_stages(args, stages, "west-of-n"))


main = main_of("west_of_n_rm", build_parser, run)

if __name__ == "__main__":
    sys.exit(main())
