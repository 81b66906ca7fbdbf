"""Robust reward-model data: several reward models, ensemble strength, votes and CRM-style
peer filtering, written with margins and soft labels.

Every --score-col is z-normalised; pairs are the best and worst response by the mean of
those z-scores; each pair gets the ensemble strength (mean and std of the scorers' z-score
differences, "Secrets of RLHF II") and a soft label p_chosen = sigmoid(gamma * mean); pairs
that fewer than --vote scorers agree with are dropped; then the CRM-style peer filter (two
scorers each keep the (1 - --tau) lowest-loss pairs of the other, "Two Minds Better Than
One") drops the pairs either finds noisy. Written for TRL's RewardTrainer with the margin,
keeping strength_mean, strength_std and p_chosen beside it.

    # offline, on the sample that ships with prefdata (two reward scores)
    python recipes/robust_rm_data.py --sample --out out/robust-rm

    python recipes/robust_rm_data.py --input scored.parquet --layout long \\
        --score-col rm_a --score-col rm_b --score-col rm_c --vote 2 --tau 0.2 --out out/rm
"""

from __future__ import annotations

import sys

from prefdata.annotate import Ensemble, Normalise, Strength
from prefdata.construct import Pairs
from prefdata.filter import DropFlagged, FlagDegenerate, PeerFilter, Vote
from prefdata.recipe import UsageError, finish, main_of, recipe_parser, run_stages, score_columns

SOFT = ["strength_mean", "strength_std", "p_chosen"]


def build_parser():
    p = recipe_parser(__doc__.split("\n\n")[0], formats=("trl-reward",))
    c = p.add_argument_group("filtering")
    c.add_argument("--vote", type=int, default=None, help="keep pairs K scorers agree with "
                   "(default: all of them)")  # fmt: skip
    c.add_argument("--tau", type=float, default=0.2, help="peer filter: the noise share each "
                   "scorer drops for the other (0: no peer filter)")  # fmt: skip
    c.add_argument("--gamma", type=float, default=1.0, help="soft label sharpness")
    return p


def run(args) -> int:
    scores = score_columns(args)
    if len(scores) < 2:
        raise UsageError(f"give at least 2 --score-col (reward models), not {list(scores)}")
    vote = args.vote or len(scores)
    if not 1 <= vote <= len(scores):
        raise UsageError(f"--vote {vote}: between 1 and the {len(scores)} scores")
    z = tuple(f"{s}.z" for s in scores)
    stages = [
        FlagDegenerate(),
        DropFlagged(),
        Normalise(scorers=scores),
        Ensemble(z),
        Pairs("best-worst", score="ensemble.mean"),
        Strength(scorers=z, gamma=args.gamma),
        Vote(scorers=z, k=vote),
    ]
    if args.tau > 0:
        stages.append(PeerFilter(scorer_a=z[0], scorer_b=z[1], tau=args.tau))
    result = run_stages(args, stages, "robust-rm")
    pairs = result.read()
    exports = [(f, pairs, {"keep": SOFT}) for f in (args.format or args.default_formats)]
    return finish(args, result, exports=exports)


main = main_of("robust_rm_data", build_parser, run)

if __name__ == "__main__":
    sys.exit(main())
