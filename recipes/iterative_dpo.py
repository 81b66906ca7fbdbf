"""Iterative on-policy DPO: N rounds of sample, score, pair, export and train.

Round r samples --n candidates per prompt from the round r-1 policy (round 1: --model),
scores them with --reward-model (or, with --self-reward, has the round's policy rate them
as a pointwise judge: self-rewarding), drops degenerate candidates, builds pairs (--strategy,
best-worst by default) and writes TRL DPO data, then trains the next policy with TRL's
DPOTrainer for --steps steps (the round's policy is also DPO's reference) and saves it to
``OUT/round-<r>/policy``. Each round has its own work directory and is resumable: a round
whose policy is saved is skipped on a rerun, and a killed round resumes from its
checkpoints. The rounds' score and pair statistics are printed and saved together in
``OUT/summary.json``; ``--report`` writes ``OUT/report.html``, the rounds side by side
and then one by one (and each round's own report).

``--active prompts|pairs`` adds active preference selection (Muldrew et al.): each round
keeps ``--active-keep`` of its data for training, chosen by what the round's policy knows.
``prompts``: the prompts whose samples the policy finds least likely (predictive entropy,
from its own log-probabilities), chosen before the reward model labels anything, so only
they are scored; ``pairs``: the pairs whose implicit DPO preference
``beta * (log pi/pi_ref (chosen) - log pi/pi_ref (rejected))`` is most certain, with the
round's policy against ``--model`` as the reference (round 1's policy is the reference
itself, so that round keeps every pair).

    # offline, on CPU, with any small local causal LM and reward model
    python recipes/iterative_dpo.py --prompts prompts.jsonl --model ./policy \\
        --reward-model ./rm --rounds 2 --n 4 --steps 2 --out out/iterative

    # on a GPU: vLLM sampling, more samples and steps
    python recipes/iterative_dpo.py --prompts prompts.jsonl --model Qwen/Qwen2.5-1.5B-Instruct \\
        --backend vllm --reward-model Skywork/Skywork-Reward-V2-Llama-3.1-8B \\
        --rounds 3 --n 8 --steps 200 --strategy sweet-spot --out out/iterative
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

import pyarrow as pa

from prefdata.cli import HelpFormatter, add_debug_argument, add_layout_arguments, read_args
from prefdata.recipe import UsageError, main_of


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--prompts", required=True, help="prompts: path or Hub id")
    add_layout_arguments(p, default_layout="pool")  # a JSONL of {"prompt": ...} is pools
    p.add_argument("--model", required=True, help="the round-0 policy (path or Hub id)")
    p.add_argument("--reward-model", help="reward model that scores candidates")
    p.add_argument(
        "--self-reward",
        action="store_true",
        help="instead of a reward model, the round's policy rates each candidate 1-10 as a "
        "pointwise judge (self-rewarding; needs a policy that follows the rating prompt)",
    )
    p.add_argument("--backend", choices=("transformers", "vllm"), default="transformers")
    p.add_argument("--rounds", type=int, default=2, help="rounds of sample, pair and train")
    p.add_argument("--n", type=int, default=4, help="candidates per prompt per round")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--max-tokens", type=int, default=64, help="tokens per candidate at most")
    p.add_argument(
        "--strategy",
        choices=("best-worst", "best-random", "sweet-spot"),
        default="best-worst",
        help="pairs from each prompt's scored candidates",
    )
    p.add_argument(
        "--active",
        choices=("prompts", "pairs"),
        help="active selection each round: the prompts of highest policy entropy, or the "
        "pairs of most certain implicit preference (see above)",
    )
    p.add_argument(
        "--active-keep",
        type=float,
        help="with --active: the share of the round's prompts or pairs kept (default 0.5)",
    )
    p.add_argument("--steps", type=int, default=2, help="DPO steps per round")
    p.add_argument("--beta", type=float, default=0.1, help="DPO beta")
    p.add_argument("--learning-rate", type=float, default=5e-6)
    p.add_argument("--batch-size", type=int, default=2, help="DPO per-device batch size")
    p.add_argument("--max-length", type=int, default=512, help="DPO max sequence length")
    p.add_argument("--seed", type=int, default=0, help="run seed (each round derives its own)")
    p.add_argument("--out", required=True, help="output folder (a round-<r> folder per round)")
    p.add_argument(
        "--report",
        action="store_true",
        help="write OUT/report.html (the rounds side by side, then each) and each round's",
    )
    add_debug_argument(p)
    return p


def scorer(args: argparse.Namespace, policy: str):
    """The round's scorer, writing ``rm``: the reward model, or the policy as its own judge
    (the judge prompt's 1-10 rating; an answer without a rating leaves the candidate
    unscored and flagged)."""
    from prefdata.generate import make_backend
    from prefdata.score import JudgePointwise, RewardModel

    if not args.self_reward:
        return RewardModel(args.reward_model, name="rm")
    return JudgePointwise(
        backend=functools.partial(make_backend, args.backend, policy),
        name="rm",
        backend_id=f"self:{policy}",
    )


def sample_round(args: argparse.Namespace, r: int, policy: str, folder: Path) -> dict:
    """Sample, score, curate and export round ``r`` (checkpointed in ``folder/work``);
    its statistics."""
    from prefdata.annotate import Strength
    from prefdata.construct import Pairs
    from prefdata.execute import LocalExecutor
    from prefdata.filter import DropFlagged, FlagDegenerate
    from prefdata.generate import Sample
    from prefdata.io.export import export
    from prefdata.io.parquet import write_parquet
    from prefdata.io.readers import read_pools

    prompts, read_rejects, _ = read_pools(args.prompts, args.layout, **read_args(args))
    sample = [
        Sample(
            model=policy,
            backend=args.backend,
            n=args.n,
            temperature=args.temperature,
            max_tokens=args.max_tokens,
            seed=args.seed + r,
            generator=f"round-{r}",
        )
    ]
    label = [
        scorer(args, policy),
        FlagDegenerate(repeated_min_prompts=None),
        DropFlagged(flags=("empty",)),  # random or early policies hit the token limit
    ]
    pair = [Pairs(args.strategy, score="rm", seed=args.seed + r), Strength(scorers=("rm",))]
    stages = [*sample, *active_stages(args, policy, label, pair)]
    result = LocalExecutor(folder / "work", shard_rows=64).run(stages, prompts)
    pairs = result.read()
    dpo = export(pairs, "trl-dpo", folder / "trl-dpo", funnel=result.funnel)
    rejects = pa.concat_tables(
        [read_rejects, result.rejects(), dpo.rejects], promote_options="default"
    )
    write_parquet(rejects, folder / "rejects.parquet")
    scores = [(p or {}).get("rm") for p in pairs["chosen_scores"].to_pylist()]
    active = [f for f in result.funnel.to_list() if f["stage"].startswith("Active")]
    if args.report:
        from prefdata.report.html import write_report

        write_report(folder / "work", folder / "report.html")
    return {
        "round": r,
        "policy": policy,
        "prompts": prompts.num_rows,
        "pairs": pairs.num_rows,
        "mean_chosen_rm": _mean(scores),
        "mean_margin": _mean(pairs["margin"].to_pylist()),
        "active": active[0] if active else None,
        "funnel": result.funnel.to_list(),
        "dpo": str(dpo[0]),
    }


def active_stages(args: argparse.Namespace, policy: str, label: list, pair: list) -> list:
    """The round's stages after sampling: label and pair, with ``--active`` selection
    where it belongs (prompts before the labels, pairs after pairing)."""
    from prefdata.filter import ActivePairs, ActivePrompts
    from prefdata.score import LogProb

    logp = functools.partial(LogProb, max_length=args.max_length)
    if args.active == "prompts":
        entropy = [logp(policy, name="pi"), ActivePrompts(policy="pi", keep=args.active_keep)]
        return [*entropy, *label, *pair]
    if args.active == "pairs" and policy != args.model:  # round 1: policy == reference
        logps = [logp(policy, name="pi"), logp(args.model, name="ref")]
        certainty = ActivePairs(policy="pi", reference="ref", beta=args.beta, keep=args.active_keep)
        return [*label, *logps, *pair, certainty]
    return [*label, *pair]


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def train_round(args: argparse.Namespace, r: int, policy: str, data: str, out: Path) -> None:
    """DPO on the round's pairs, from ``policy`` (also the reference); saved to ``out``."""
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    dataset = load_dataset("parquet", data_files=data, split="train")
    tokenizer = AutoTokenizer.from_pretrained(policy)
    model = AutoModelForCausalLM.from_pretrained(policy)
    config = DPOConfig(
        output_dir=str(out.with_name("trainer")),
        max_steps=args.steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        beta=args.beta,
        max_length=args.max_length,
        seed=args.seed + r,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
        bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
    )
    trainer = DPOTrainer(
        model=model, args=config, train_dataset=dataset, processing_class=tokenizer
    )
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    tmp = out.with_name(out.name + ".tmp")
    trainer.save_model(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    (tmp / "dpo.json").write_text(
        json.dumps({"steps": trainer.state.global_step, "losses": losses})
    )
    tmp.replace(out)  # the policy appears whole or not at all: a rerun retrains otherwise


def run(args: argparse.Namespace) -> int:
    if args.rounds < 1 or args.steps < 1 or args.n < 2:
        raise UsageError("--rounds and --steps must be >= 1 and --n >= 2 (pairs need two)")
    if bool(args.reward_model) == bool(args.self_reward):
        raise UsageError("give --reward-model or --self-reward (one of them)")
    if args.active_keep is not None and args.active is None:
        raise UsageError("--active-keep needs --active prompts or --active pairs")
    args.active_keep = 0.5 if args.active_keep is None else args.active_keep
    if not 0 < args.active_keep <= 1:
        raise UsageError(f"--active-keep must be in (0, 1], not {args.active_keep}")
    out = Path(args.out)
    policy, rounds = args.model, []
    for r in range(1, args.rounds + 1):
        folder = out / f"round-{r}"
        saved = folder / "policy"
        stats_file = folder / "stats.json"
        if saved.is_dir() and stats_file.exists():  # finished earlier: skip
            stats = json.loads(stats_file.read_text())
            print(f"round {r}: done earlier, {stats['pairs']} pairs -> {saved}")
        else:
            if args.active == "pairs" and policy == args.model:
                print(f"round {r}: the policy is the reference: every pair is kept (--active)")
            stats = sample_round(args, r, policy, folder)
            if not stats["pairs"]:
                raise UsageError(
                    f"round {r}: no pairs to train on (see {folder / 'rejects.parquet'})"
                )
            train_round(args, r, policy, stats["dpo"], saved)
            stats["trained"] = json.loads((saved / "dpo.json").read_text())
            stats_file.write_text(json.dumps(stats, indent=2) + "\n")
            active = stats.get("active")
            chose = f" (active: kept {active['rows_out']} of {active['rows_in']})" if active else ""
            print(
                f"round {r}: {stats['pairs']} pairs{chose}, mean chosen rm "
                f"{stats['mean_chosen_rm']}, {stats['trained']['steps']} DPO steps -> {saved}"
            )
        rounds.append(stats)
        policy = str(saved)
    (out / "summary.json").write_text(json.dumps({"rounds": rounds}, indent=2) + "\n")
    if args.report:  # every round in one page: side by side, then one by one
        from prefdata.report.html import write_report

        print(f"report: {write_report(out, out / 'report.html')}")
    print(f"final policy: {policy}")
    return 0


main = main_of("iterative_dpo", build_parser, run)

if __name__ == "__main__":
    sys.exit(main())
