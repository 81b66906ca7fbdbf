"""DPO pairs from verifiable answers: correct against incorrect worked solutions (math),
or responses that meet their instruction's constraints against ones that break them.

Every candidate's final answer is checked against the problem's gold answer with
math-verify (1.0 right, 0.0 wrong; a problem without a usable gold answer is not scored
and flagged); each prompt pairs every right solution with every wrong one (the
``by-correctness`` strategy; --max-pairs-per-prompt caps them); a prompt whose solutions
are all right or all wrong is rejected with that reason. The input is pools with a
gold-answer column (--gold-col), such as ``prefdata/data/math_solutions.jsonl``, or
sampled solutions (``sample_and_score.py``) joined with their answers.

    # offline, on the math problems that ship with prefdata
    python recipes/verifiable_math_dpo.py --sample --out out/math

    # offline, on the instruction prompts with constraints that ship with prefdata
    python recipes/verifiable_math_dpo.py --sample --verifier constraints --out out/ifeval

With ``--verifier constraints`` each prompt's own constraints come from --constraints-col
(a JSON object per pool: ``{"max_words": 20}``, ``{"json": true}``, ...; see
``prefdata.score.Constraints``) and a response passes when it meets all of them.

    python recipes/verifiable_math_dpo.py --input solutions.jsonl --layout pool \\
        --gold-col answer --out out/math
"""

from __future__ import annotations

import sys

from prefdata.construct import Pairs
from prefdata.data import instructions_path, math_path
from prefdata.filter import DropFlagged, FlagDegenerate
from prefdata.recipe import finish, main_of, recipe_parser, run_stages
from prefdata.score import Constraints, MathVerify


def build_parser():
    p = recipe_parser(__doc__.split("\n\n")[0], formats=("trl-dpo",))
    p.set_defaults(layout="pool")
    c = p.add_argument_group("verification")
    c.add_argument("--verifier", choices=("math", "constraints"), default="math")
    c.add_argument("--gold-col", default="answer", help="the pool column with the gold answer")
    c.add_argument(
        "--constraints-col",
        default="constraints",
        help="the pool column with each prompt's constraints (JSON; --verifier constraints)",
    )
    c.add_argument("--timeout", type=int, default=5, help="seconds per answer check")
    c.add_argument(
        "--max-pairs-per-prompt", type=int, default=None, help="pairs per prompt at most"
    )
    return p


def run(args) -> int:
    if args.sample:  # the bundled problems or instructions, not the scored sample
        bundled = math_path() if args.verifier == "math" else instructions_path()
        args.sample, args.input, args.layout = False, str(bundled), "pool"
    if args.verifier == "math":
        verifier, threshold = MathVerify(args.gold_col, timeout_s=args.timeout), 0.5
    else:  # every constraint met
        verifier, threshold = Constraints(from_col=args.constraints_col), 1.0
    stages = [
        FlagDegenerate(repeated_min_prompts=None),
        DropFlagged(flags=("empty",)),
        verifier,
        Pairs(
            "by-correctness",
            score=verifier.name,
            threshold=threshold,
            max_pairs_per_prompt=args.max_pairs_per_prompt,
            seed=0,
        ),
    ]
    return finish(args, run_stages(args, stages, "math"))


main = main_of("verifiable_math_dpo", build_parser, run)

if __name__ == "__main__":
    sys.exit(main())
