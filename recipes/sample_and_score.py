"""On-policy preference data: sample candidates, score them, build pairs, export.

Reads prompts (any source and layout: a JSONL of {"prompt": ...}, a Hub dataset, pools),
samples --n candidates per prompt from each --model (several models fill one pool: an
on-policy model beside stronger ones, or a strong and a weak model for delta learning),
scores every candidate with each --reward-model, flags and drops degenerate candidates,
constructs pairs and writes TRL DPO data and a Hub-ready folder. Sampling and scoring are
checkpointed under --workdir at shard granularity (a killed run regenerates only unfinished
shards); after one pass that finds responses repeated across prompts over all of them, the
curation stages stream those shards through a second work directory (--workdir + "-pairs").

    python recipes/sample_and_score.py --prompts prompts.jsonl \\
        --model Qwen/Qwen2.5-1.5B-Instruct --backend vllm --n 8 --temperature 0.8 \\
        --reward-model Skywork/Skywork-Reward-V2-Llama-3.1-8B --strategy sweet-spot \\
        --out out/onpolicy

With --backend openai, --model is the served model's name at --base-url and the API key is
read from the environment variable named by --api-key-env (never logged or written).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import datasets
import pyarrow as pa

from prefdata.annotate.strength import Strength
from prefdata.cli import (
    HelpFormatter,
    add_debug_argument,
    add_layout_arguments,
    guarded,
    read_args,
)
from prefdata.construct import Pairs
from prefdata.execute import LocalExecutor
from prefdata.execute.workdir import WorkdirBusy
from prefdata.filter.degenerate import (
    DEFAULT_DROP,
    DropFlagged,
    FlagDegenerate,
)
from prefdata.generate import Sample
from prefdata.io.export import export, hub_table
from prefdata.io.hub import write_hub_folder
from prefdata.io.parquet import write_parquet
from prefdata.io.readers import read_pools
from prefdata.report.card import CardInfo, build_date, file_digests
from prefdata.score import RewardModel


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=HelpFormatter,
    )
    p.add_argument("--prompts", required=True, help="prompts: path or Hub id")
    add_layout_arguments(p, default_layout="pool")  # how --prompts is laid out
    p.add_argument(
        "--model",
        action="append",
        required=True,
        help="model to sample from; repeat for several generators",
    )
    p.add_argument(
        "--generator-name",
        action="append",
        help="the generator name recorded for each --model, in order (default: the model id "
        "or path as given)",
    )
    p.add_argument(
        "--backend",
        choices=("transformers", "vllm", "openai"),
        default="transformers",
        help="how to run the models",
    )
    p.add_argument("--base-url", help="OpenAI-compatible server URL (--backend openai)")
    p.add_argument(
        "--api-key-env",
        default="auto",
        help="environment variable holding the API key (--backend openai); auto: "
        "OPENAI_API_KEY for api.openai.com only, no key for any other server",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=64,
        help="requests in flight at once (--backend openai; a serving engine batches them)",
    )
    p.add_argument("--n", type=int, default=4, help="candidates per prompt per model")
    p.add_argument("--temperature", type=float, default=0.8, help="sampling temperature")
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling mass")
    p.add_argument("--max-tokens", type=int, default=512, help="tokens per candidate")
    p.add_argument("--system-prompt", help="system turn for prompts that have none")
    p.add_argument(
        "--reward-model",
        action="append",
        required=True,
        help="sequence-classification reward model; repeat for several scorers",
    )
    p.add_argument(
        "--strategy",
        default="best-worst",
        choices=("best-worst", "best-random", "sweet-spot", "curriculum", "all-pairs"),
        help="how pairs are chosen from each pool",
    )
    p.add_argument("--min-margin", type=float, help="drop pairs with a smaller margin")
    p.add_argument(
        "--drop-flag",
        action="append",
        default=None,
        help=f"drop candidates with this flag; repeatable (default: {DEFAULT_DROP})",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--workdir", help="checkpoint folder (default: OUT/work)")
    p.add_argument("--shard-rows", type=int, default=1000, help="prompts per shard")
    p.add_argument(
        "--seed", type=int, default=0, help="run seed (per-candidate seeds derive from it)"
    )
    p.add_argument("--report", action="store_true", help="also write OUT/report.html")
    add_debug_argument(p)
    return p


def _generator_names(args: argparse.Namespace) -> list[str | None]:
    """One generator name per --model (None: the model id), checked to be distinct: two
    samplers recording one generator would mix their candidates."""
    from prefdata.generate import default_generator_name

    given = args.generator_name or []
    if given and len(given) != len(args.model):
        raise UsageError(
            f"give one --generator-name per --model ({len(args.model)}), not {len(given)}"
        )
    names = given or [None] * len(args.model)
    recorded = [n or default_generator_name(m) for n, m in zip(names, args.model, strict=True)]
    twice = sorted({n for n in recorded if recorded.count(n) > 1})
    if twice:
        raise UsageError(
            f"two --model flags record the generator {twice[0]!r}; name them apart with "
            "--generator-name"
        )
    return names


class UsageError(ValueError):
    """Flags that cannot work together (one line, exit status 2)."""


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return guarded("sample_and_score", lambda: run(args), debug=args.debug, errors=(WorkdirBusy,))


def run(args: argparse.Namespace) -> int:
    """The recipe, on parsed flags."""
    datasets.disable_progress_bars()
    out = Path(args.out)
    prompts, read_rejects, funnel = read_pools(args.prompts, args.layout, **read_args(args))
    options = (
        (("api_key_env", args.api_key_env), ("concurrency", args.concurrency))
        if args.backend == "openai"
        else ()
    )
    samplers = [
        Sample(
            model=m,
            backend=args.backend,
            base_url=args.base_url,
            n=args.n,
            temperature=args.temperature,
            top_p=args.top_p,
            max_tokens=args.max_tokens,
            system_prompt=args.system_prompt,
            seed=args.seed,
            generator=g,
            options=options,
        )
        for m, g in zip(args.model, _generator_names(args), strict=True)
    ]
    names = [
        f"rm{i}" if len(args.reward_model) > 1 else "rm" for i in range(len(args.reward_model))
    ]
    scorers = [RewardModel(m, name=n) for m, n in zip(args.reward_model, names, strict=True)]
    # 1. sample and score (the costly stages: their shards are kept and resume)
    workdir = Path(args.workdir or out / "work")
    scored = LocalExecutor(workdir, shard_rows=args.shard_rows).run([*samplers, *scorers], prompts)
    # 2. flag ("repeated across prompts" is a dataset-wide fit: the executor runs it over
    # every scored shard first), drop, pair and annotate, streaming the scored shards
    curate = [
        FlagDegenerate(),
        DropFlagged(flags=tuple(args.drop_flag or DEFAULT_DROP)),
        Pairs(args.strategy, score=names[0], min_margin=args.min_margin, seed=args.seed),
        Strength(),  # every score field of the pairs, multi-objective heads included
    ]
    result = LocalExecutor(
        workdir.with_name(workdir.name + "-pairs"), shard_rows=args.shard_rows
    ).run(curate, scored.output_paths)
    stages = [*samplers, *scorers, *curate]
    funnel = funnel.then(scored.funnel).then(result.funnel)
    pairs = result.read()
    dpo = export(pairs, "trl-dpo", out / "trl-dpo", funnel=funnel)
    converted = hub_table(pairs)  # what the Hub table cannot hold is rejected, not dropped
    funnel.add(
        "export:hub", converted.rows_in, converted.table.num_rows, converted.rejects.num_rows
    )
    rejects = [read_rejects, scored.rejects(), result.rejects(), dpo.rejects, converted.rejects]
    write_parquet(pa.concat_tables(rejects, promote_options="default"), out / "rejects.parquet")
    local = Path(args.prompts).exists()
    hub = write_hub_folder(
        out / "hub",
        {"default": {"train": converted.table}},
        card=CardInfo(
            pretty_name=Path(args.prompts).stem,
            stages=stages,
            funnel=funnel,
            seed=args.seed,
            description="On-policy preference pairs sampled and scored with prefdata.",
            source_datasets=[] if local else [args.prompts],
            input_digests=file_digests([args.prompts]) if local else {},
            created=build_date(),
        ),
    )
    for e in funnel.entries:
        print(
            f"  {e.stage:<22} {e.rows_in:>8} in  {e.rows_out:>8} out  {e.rows_rejected:>6} rejected"
        )
    print(
        f"pairs: {pairs.num_rows}  (rejects: {read_rejects.num_rows} read, "
        f"{scored.rejects().num_rows + result.rejects().num_rows} in stages, "
        f"{dpo.rejects.num_rows} in export)"
    )
    print(f"trl-dpo: {dpo[0]}\nhub: {hub}\nrejects: {out / 'rejects.parquet'}")
    if args.report:
        from prefdata.report.html import write_report

        print(f"report: {write_report(workdir.parent, out / 'report.html')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
