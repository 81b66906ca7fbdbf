"""DPO pairs from verifiable math: correct against incorrect worked solutions.

Every candidate's final answer is checked against the problem's gold answer with
math-verify (1.0 right, 0.0 wrong; a problem without a usable gold answer is not scored
and flagged); each prompt pairs every right solution with every wrong one (the
``by-correctness`` strategy; --max-pairs-per-prompt caps them); a prompt whose solutions
are all right or all wrong is rejected with that reason. The input is pools with a
gold-answer column (--gold-col), such as ``prefdata/data/math_solutions.jsonl``, or
sampled solutions (``sample_and_score.py``) joined with their answers.

    # offline, on the math problems that ship with prefdata
    python recipes/verifiable_math_dpo.py --sample --out out/math

    python recipes/verifiable_math_dpo.py --input solutions.jsonl --layout pool \\
        --gold-col answer --out out/math
"""

from __future__ import annotations

import sys

from prefdata.construct import Pairs
from prefdata.data import math_path
from prefdata.filter import DropFlagged, FlagDegenerate
from prefdata.recipe import finish, main_of, recipe_parser, run_stages
from prefdata.score import MathVerify


def build_parser():
    p = recipe_parser(__doc__.split("\n\n")[0], formats=("trl-dpo",))
    p.set_defaults(layout="pool")
    c = p.add_argument_group("verification")
    c.add_argument("--gold-col", default="answer", help="the pool column with the gold answer")
    c.add_argument("--timeout", type=int, default=5, help="seconds per answer check")
    c.add_argument(
        "--max-pairs-per-prompt", type=int, default=None, help="pairs per prompt at most"
    )
    return p


def run(args) -> int:
    if args.sample:  # the bundled problems, not the scored sample
        args.sample, args.input, args.layout = False, str(math_path()), "pool"
    stages = [
        FlagDegenerate(repeated_min_prompts=None),
        DropFlagged(flags=("empty",)),
        MathVerify(args.gold_col, timeout_s=args.timeout),
        Pairs(
            "by-correctness",
            score="math",
            threshold=0.5,
            max_pairs_per_prompt=args.max_pairs_per_prompt,
            seed=0,
        ),
    ]
    return finish(args, run_stages(args, stages, "math"))


main = main_of("verifiable_math_dpo", build_parser, run)

if __name__ == "__main__":
    sys.exit(main())
