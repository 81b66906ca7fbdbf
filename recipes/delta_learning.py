"""Delta learning: preference pairs from two generators of different strength, no scorer.

Per prompt, the chosen response comes from the stronger generator and the rejected one
from the weaker ("The Delta Learning Hypothesis": Qwen2.5-3B-Instruct over
Qwen2.5-1.5B-Instruct, greedy, no judge, no filter); prompts without a response from both
are rejected with the reason. Degenerate responses (empty, addressed to a judge) are
dropped first unless --keep-flagged.

    # offline, on the sample that ships with prefdata (four generators)
    python recipes/delta_learning.py --sample --strong model-large --weak model-small \\
        --out out/delta

    # responses of two models, one row each
    python recipes/delta_learning.py --input responses.jsonl --generator-col model \\
        --strong Qwen/Qwen2.5-3B-Instruct --weak Qwen/Qwen2.5-1.5B-Instruct --out out/delta
"""

from __future__ import annotations

import sys

from prefdata.construct import Pairs
from prefdata.filter import DropFlagged, FlagDegenerate
from prefdata.recipe import UsageError, finish, main_of, recipe_parser, run_stages


def build_parser():
    p = recipe_parser(__doc__.split("\n\n")[0], formats=("trl-dpo",))
    c = p.add_argument_group("construction")
    c.add_argument("--strong", action="append", help="the stronger generator; repeatable")
    c.add_argument("--weak", action="append", help="the weaker generator; repeatable")
    c.add_argument("--keep-flagged", action="store_true", help="keep degenerate responses")
    return p


def run(args) -> int:
    if not (args.strong and args.weak):
        raise UsageError("give --strong and --weak (generator names)")
    both = set(args.strong) & set(args.weak)
    if both:
        raise UsageError(f"{sorted(both)} given as both --strong and --weak")
    stages = [] if args.keep_flagged else [FlagDegenerate(), DropFlagged()]
    stages.append(
        Pairs(
            "by-generator",
            chosen_generators=tuple(args.strong),
            rejected_generators=tuple(args.weak),
        )
    )
    return finish(args, run_stages(args, stages, "delta"))


main = main_of("delta_learning", build_parser, run)

if __name__ == "__main__":
    sys.exit(main())
