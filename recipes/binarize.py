"""Turn a rated dataset into training-ready preference data.

Reads any layout into pools, flags degenerate candidates (empty, truncated, repeated across
prompts, addressed to a judge) and drops them, optionally z-normalises the scores and keeps
only pairs that at least K scorers agree on, constructs pairs with the chosen strategy,
annotates ensemble strength and a soft label, and writes each requested format. Every
stage is checkpointed under --workdir: a killed run resumes where it stopped.

    # the main job, offline, on the sample that ships with prefdata
    python recipes/binarize.py --sample --out out/sample

    # the alpaca_eval pool: best vs worst by the GPT-4 judge preference, TRL DPO + Hub folder
    python recipes/binarize.py --input ../shared/data/alpaca_eval_pool.parquet --layout long \\
        --prompt-col instruction --response-col output --generator-col generator \\
        --score-col judge_pref --strategy best-worst --out out/alpaca

Like TRL's example scripts, this is a plain script over the library's stages; copy it and
change it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from prefdata.annotate.ensemble import METHODS as ENSEMBLE_METHODS
from prefdata.annotate.ensemble import Ensemble
from prefdata.annotate.normalise import Normalise
from prefdata.annotate.strength import Strength
from prefdata.cli import (
    HelpFormatter,
    add_debug_argument,
    add_layout_arguments,
    guarded,
    read_args,
)
from prefdata.construct import Lists, Pairs
from prefdata.construct.recorded import RecordedPairs
from prefdata.data import SAMPLE_OPTIONS, sample_path
from prefdata.execute import Ingest, LocalExecutor
from prefdata.execute.workdir import WorkdirBusy, clean_temp_files
from prefdata.filter.degenerate import DropFlagged, FlagDegenerate
from prefdata.filter.voting import Vote
from prefdata.io.export import FORMATS, ShardedExport, export, hub_table
from prefdata.io.parquet import write_parquet
from prefdata.io.readers import read_pools
from prefdata.io.shards import read_schema
from prefdata.pipeline import count_rejects_by_reason
from prefdata.report.stats import dropped_counts
from prefdata.schema import score_names

STRATEGIES = (
    "recorded",
    "best-worst",
    "best-random",
    "sweet-spot",
    "curriculum",
    "by-generator",
    "all-pairs",
    "by-correctness",
)
# --sample: the bundled sample's read options, under the flags' names (--score-col)
SAMPLE_FLAGS = {("score_col" if k == "score_cols" else k): v for k, v in SAMPLE_OPTIONS.items()}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=HelpFormatter,
    )
    src = p.add_argument_group("input")
    src.add_argument("--input", help="Parquet, JSONL(.gz), a datasets folder, or a Hub id")
    src.add_argument(
        "--sample",
        action="store_true",
        help="use the small scored sample bundled with prefdata (offline)",
    )
    add_layout_arguments(src, default_layout="long")

    con = p.add_argument_group("construction")
    con.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default=None,
        help="how pairs are chosen from each pool (default: recorded for the pairs and hh "
        "layouts, which keeps exactly the dataset's own preferences; best-worst otherwise)",
    )
    con.add_argument(
        "--score",
        help="score that ranks candidates: a score name, or ensemble:mean, ensemble:min or "
        "ensemble:uwo, an ensemble of every --score-col (z-scored first: Coste et al.'s "
        "mean, worst case, or mean minus --ensemble-lambda times the variance across "
        "scorers). Default: ensemble:mean with several scores (benchmarks/bench_quality.py), "
        "else the one score",
    )
    con.add_argument(
        "--ensemble-lambda",
        type=float,
        default=0.5,
        help="weight of the variance across scorers in ensemble:uwo",
    )
    con.add_argument(
        "--min-margin",
        type=float,
        default=None,
        help="drop pairs whose margin under --score is smaller",
    )
    con.add_argument(
        "--max-pairs-per-prompt",
        type=int,
        default=None,
        help="cap on pairs per prompt (all-pairs, curriculum, by-correctness)",
    )
    con.add_argument(
        "--sweet-spot-k",
        type=float,
        default=2.0,
        help="sweet-spot: rejected is the candidate closest to mean - k*std",
    )
    con.add_argument(
        "--chosen-generator",
        action="append",
        default=[],
        help="by-generator: generator(s) the chosen comes from (repeatable)",
    )
    con.add_argument(
        "--rejected-generator",
        action="append",
        default=[],
        help="by-generator: generator(s) the rejected comes from (repeatable)",
    )
    con.add_argument(
        "--threshold", type=float, default=None, help="by-correctness: a score >= threshold passes"
    )
    con.add_argument(
        "--vote",
        type=int,
        metavar="K",
        default=None,
        help="keep pairs that at least K scorers (z-normalised) agree on",
    )
    con.add_argument(
        "--vote-margin",
        type=float,
        default=0.0,
        help="minimum z-normalised margin for a scorer's vote to count",
    )
    con.add_argument(
        "--reward-margin",
        choices=("z", "raw", "none"),
        default="z",
        help="trl-reward margin: z-scored difference of --score, raw difference, or none",
    )
    con.add_argument(
        "--gamma",
        type=float,
        default=1.0,
        help="soft label p_chosen = sigmoid(gamma * strength_mean)",
    )
    con.add_argument(
        "--keep-flagged",
        action="store_true",
        help="keep degenerate candidates (they are still flagged)",
    )
    con.add_argument(
        "--repeated-min-prompts",
        type=int,
        default=5,
        help="flag a response text seen under at least this many prompts",
    )

    out = p.add_argument_group("output")
    out.add_argument(
        "--format",
        action="append",
        choices=(*sorted(FORMATS), "hub"),
        default=None,
        help="output format; repeatable (default: trl-dpo and hub)",
    )
    out.add_argument("--out", required=True, help="output folder")
    out.add_argument("--workdir", help="checkpoint folder (default: OUT/work)")
    out.add_argument(
        "--shard-rows", type=int, default=None, help="pools per shard (default: the executor's)"
    )
    out.add_argument("--seed", type=int, default=0, help="run seed for every random choice")
    out.add_argument("--name", default=None, help="pretty name for the dataset card")
    out.add_argument("--license", default="other", help="license for the dataset card")
    out.add_argument(
        "--push-to-hub",
        metavar="REPO",
        help="upload the Hub folder to this dataset repo (token from HF_TOKEN)",
    )
    out.add_argument("--public", action="store_true", help="make the Hub repo public")
    out.add_argument(
        "--report",
        action="store_true",
        help="also write OUT/report.html: plots of scores, agreement, length bias, margins, "
        "generators and the funnel (needs the report extra)",
    )
    add_debug_argument(p)
    return p


# strategies that rank candidates by one score (the others pair by generator, correctness
# threshold or the recorded preference)
RANKED_BY_SCORE = ("best-worst", "best-random", "sweet-spot", "curriculum", "all-pairs")


def _ensemble_method(score: str | None) -> str | None:
    """``mean``, ``min`` or ``uwo`` for ``--score ensemble:<method>``, else None."""
    if not score or not score.startswith("ensemble:"):
        return None
    method = score.removeprefix("ensemble:")
    if method not in ENSEMBLE_METHODS:
        raise UsageError(f"--score {score}: expected ensemble:mean, ensemble:min or ensemble:uwo")
    return method


def _pairs_stage(args: argparse.Namespace, score: str | None) -> Pairs | RecordedPairs:
    if args.strategy == "recorded":
        return RecordedPairs(annotators=bool(args.annotator_col))
    cfg: dict = {
        "seed": args.seed,
        "min_margin": args.min_margin,
        "max_pairs_per_prompt": args.max_pairs_per_prompt,
    }
    if args.strategy == "sweet-spot":
        cfg["k"] = args.sweet_spot_k
    if args.strategy == "by-generator":
        if not (args.chosen_generator and args.rejected_generator):
            raise UsageError(
                "--strategy by-generator needs --chosen-generator and --rejected-generator"
            )
        cfg |= {
            "chosen_generators": tuple(args.chosen_generator),
            "rejected_generators": tuple(args.rejected_generator),
        }
        score = None if args.score is None else score
    if args.strategy == "by-correctness":
        if args.threshold is None:
            raise UsageError("--strategy by-correctness needs --threshold")
        cfg["threshold"] = args.threshold
    return Pairs(args.strategy, score=score, **cfg)


def _source(args: argparse.Namespace) -> Ingest | str | pa.Table:
    """What the executor reads: a raw source with its layout (converted as the run's
    first, checkpointed step), or pools (Parquet read in place; anything else read whole)."""
    options = read_args(args)
    if args.layout != "pool":
        return Ingest(args.input, args.layout, **options)
    if str(args.input).endswith(".parquet") and options["split"] is None:
        return args.input
    return read_pools(args.input, "pool", **options).table


class UsageError(ValueError):
    """A flag that cannot work with the input (said in one line, exit status 2)."""


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return guarded("binarize", lambda: run(args), debug=args.debug, errors=(WorkdirBusy,))


def run(args: argparse.Namespace) -> int:
    """The recipe, on parsed flags."""
    if args.sample:
        args.input = str(sample_path())
        for k, v in SAMPLE_FLAGS.items():
            if getattr(args, k) in (None, "long"):
                setattr(args, k, v)
        args.name = args.name or "prefdata sample"
    if not args.input:
        raise UsageError("give --input (or --sample)")
    formats = args.format or ["trl-dpo", "hub"]
    if args.strategy is None:
        args.strategy = "recorded" if args.layout in ("pairs", "hh") else "best-worst"
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a folder for the outputs")
    workdir = Path(args.workdir) if args.workdir else out / "work"

    # 1. read into pools, flag degenerate candidates (the repeated-response statistics are
    # a pass over every pool, run by the executor) and drop them
    pool_stages = [FlagDegenerate(repeated_min_prompts=args.repeated_min_prompts)]
    if not args.keep_flagged:
        pool_stages.append(DropFlagged())
    filtered = LocalExecutor(workdir / "pools", shard_rows=args.shard_rows).run(
        pool_stages, _source(args)
    )
    funnel = filtered.funnel
    scores = score_names(read_schema(filtered.output_paths[0]))
    if args.score is None and len(scores) >= 2 and args.strategy in RANKED_BY_SCORE:
        # several scorers: rank by their z-scored mean (benchmarks/bench_quality.py: 99.3%
        # of pairs labelled right against 96.3% for one scorer, at the same yield)
        args.score = "ensemble:mean"
    ensemble = _ensemble_method(args.score)
    score = args.score or (scores[0] if scores else None)
    if score is None and args.strategy != "by-generator":
        raise UsageError(f"no score to rank by: give --score-col (input scores: {scores})")
    if ensemble is not None:
        if len(scores) < 2:
            raise UsageError(f"--score {args.score} needs at least 2 score columns: {scores}")
        score = f"ensemble.{ensemble}"
    elif score is not None and score not in scores:
        raise UsageError(f"--score {score!r} is not among the scores {scores}")
    if args.vote and args.vote > len(scores):
        raise UsageError(f"--vote {args.vote} needs at least {args.vote} score columns")

    # 2. z-normalise the kept candidates' scores (scorers live on different scales:
    # strength, soft labels and votes use z-scores; the statistics are fitted by the
    # executor on what survived step 1), construct pairs, vote, annotate strength
    pair_stages = []
    z_scores: tuple[str, ...] = ()
    if scores:
        pair_stages.append(Normalise("zscore", scorers=tuple(scores)))
        z_scores = tuple(f"{s}.z" for s in scores)
    if ensemble is not None:
        pair_stages.append(Ensemble(z_scores, method=ensemble, lam=args.ensemble_lambda))
    pairs_stage = _pairs_stage(args, score)
    pair_stages.append(pairs_stage)
    if args.vote:
        pair_stages.append(Vote(scorers=z_scores, k=args.vote, min_margin=args.vote_margin))
    if z_scores:
        pair_stages.append(Strength(scorers=z_scores, gamma=args.gamma))
    # formats written shard by shard as the pairs are computed (memory stays a shard);
    # the others need the whole table
    # who recorded each pair rides along in every format that takes extra columns
    keep = {"keep": ["annotator_id"]} if args.annotator_col else {}
    sinks = (
        {f: ShardedExport(f, out / f, **keep) for f in formats} if set(formats) <= STREAMED else {}
    )
    built = LocalExecutor(workdir / "pairs", shard_rows=args.shard_rows).run(
        pair_stages, filtered.output_paths, sink=_fan_out(sinks) if sinks else None
    )
    funnel = funnel.then(built.funnel)
    pairs = None if sinks else built.read()
    rejects = [filtered.rejects(), built.rejects()]
    kept_pools = filtered.read() if ("listwise" in formats or "hub" in formats) else None

    # 3. write every format (first removing temp files a killed export left behind)
    for folder in (out / f for f in formats):
        if folder.is_dir():
            clean_temp_files(folder)
    written: dict[str, list[str]] = {}
    for fmt, sink in sinks.items():
        res = sink.result(funnel)
        rejects.append(res.rejects)
        written[fmt] = [str(p) for p in _single_file_named(res.paths)]
    for fmt in formats:
        if fmt == "hub" or fmt in sinks:
            continue
        table = pairs
        if fmt == "listwise":
            ranked = kept_pools
            if ensemble is not None:  # the same z-scores and ensemble the pairs ranked by
                for stage in pair_stages[:2]:
                    ranked = stage(ranked).table
            lists = Lists(score=score)(ranked)
            table, rejects = lists.table, [*rejects, lists.rejects]
        options = dict(keep)
        if fmt == "trl-reward":
            table, options = _reward_margin(
                table, args.reward_margin, getattr(pairs_stage, "score", None)
            )
        res = export(table, fmt, out / fmt, funnel=funnel, **options)
        rejects.append(res.rejects)
        written[fmt] = [str(p) for p in res]
    converted = hub_table(pairs) if "hub" in formats else None
    if converted is not None:  # what the Hub table cannot hold is rejected, not dropped
        rejects.append(converted.rejects)
        funnel.add(
            "export:hub", converted.rows_in, converted.table.num_rows, converted.rejects.num_rows
        )
    all_rejects = pa.concat_tables(rejects, promote_options="default")
    write_parquet(all_rejects, out / "rejects.parquet")
    stages = [*pool_stages, *pair_stages]
    if "hub" in formats:
        import datasets

        from prefdata.io.hub import push_to_hub, write_hub_folder
        from prefdata.report.card import CardInfo, build_date, file_digests

        datasets.disable_progress_bars()

        folder = write_hub_folder(
            out / "hub",
            {"default": {"train": converted.table}},
            card=CardInfo(
                pretty_name=args.name or Path(args.input).stem,
                license=args.license,
                source_datasets=[args.input] if not Path(args.input).exists() else [],
                input_digests=file_digests([args.input]) if Path(args.input).exists() else {},
                created=build_date(),
                stages=stages,
                funnel=funnel,
                pools=kept_pools,
                seed=args.seed,
                description=f"Preference pairs built with prefdata's `{args.strategy}` "
                f"strategy from `{Path(args.input).name}`, ranked by `{score}`.",
            ),
        )
        written["hub"] = [str(folder)]
        if args.push_to_hub:
            push_to_hub(folder, args.push_to_hub, private=not args.public)
            written["hub"].append(f"https://huggingface.co/datasets/{args.push_to_hub}")

    if args.report:
        from prefdata.report.html import write_report

        written["report"] = [str(write_report(workdir, out / "report.html"))]
    n_pairs = built.funnel.entries[-1].rows_out if built.funnel.entries else 0
    agreement = None
    if args.annotator_col:
        from prefdata.annotate.annotators import annotator_agreement

        agreement = annotator_agreement(pairs if pairs is not None else built.read())
    _print_summary(funnel, all_rejects, filtered.output_paths, n_pairs, written, out, agreement)
    return 0


# Formats exported shard by shard when they are all that is asked for (the others need
# the whole table: side files, the Hub card, lists from pools, margins decided over all).
STREAMED = {"trl-dpo", "trl-kto"}


def _fan_out(sinks: dict[str, ShardedExport]):
    """One executor sink that hands every shard to each format's exporter."""

    def sink(shard: int, table: pa.Table) -> None:
        for export_shard in sinks.values():
            export_shard(shard, table)

    return sink


def _single_file_named(paths: list[Path]) -> list[Path]:
    """A streamed export of one shard is renamed ``train.<ext>``, as a whole-table export
    names it; several shards keep ``train-00000.<ext>``, ... (``load_dataset`` reads
    them with ``data_files="train-*"``)."""
    if len(paths) != 1:
        return paths
    one = Path(paths[0])
    single = one.with_name(one.name.replace("-00000", "", 1))
    one.replace(single)
    return [single]


def _reward_margin(pairs: pa.Table, kind: str, score: str | None) -> tuple[pa.Table, dict]:
    """The pairs and export options for TRL's reward margin (loss -logsigmoid(rc - rr - m)):
    ``z`` the margin in standard deviations of the ranking score, ``raw`` its raw difference,
    ``none`` no margin column. Pairs built without a score (by-generator, recorded without
    margins) get no margin column rather than a column of nulls."""
    recorded = pairs["margin"].null_count < pairs.num_rows
    if kind == "none" or (score is None and not recorded):
        return pairs, {"margin": False}
    if score is None:  # recorded pairs that carry the dataset's own margins
        return pairs, {"margin": True}
    if kind == "z":
        field = score if score.startswith("ensemble.") else f"{score}.z"  # already z-scored
        z = pc.subtract(
            pc.struct_field(pairs["chosen_scores"], field),
            pc.struct_field(pairs["rejected_scores"], field),
        )
        pairs = pairs.set_column(pairs.schema.get_field_index("margin"), "margin", z)
    return pairs, {"margin": pairs["margin"].null_count < pairs.num_rows}


def _print_summary(funnel, rejects, pool_paths, n_pairs, written, out, agreement=None) -> None:
    print("funnel (rows):")
    prev = None  # the step before; every export reads the pairs, not the export before it
    for e in funnel.entries:
        if prev is not None and prev.rows_out != e.rows_in:
            # The unit changes: input rows group into pools; pools expand into pairs; a
            # format may write several rows per pair (trl-kto: one per side).
            if prev.stage.startswith("layout:"):
                what = "rows with one prompt share a pool"
            elif e.stage.startswith("export:"):
                what = f"{e.stage.removeprefix('export:')} counts its own rows"
            else:
                what = "pools become pairs"
            print(f"  {'':<22} ({prev.rows_out} -> {e.rows_in}: {what})")
        print(
            f"  {e.stage:<22} {e.rows_in:>8} in  {e.rows_out:>8} out  {e.rows_rejected:>6} rejected"
        )
        if not e.stage.startswith("export:"):
            prev = e
    for reason, n in dropped_counts(pool_paths).items():
        print(f"  candidates dropped: {n} x {reason}")
    for stage, reason, n in count_rejects_by_reason(rejects)[:10]:
        print(f"  rejected by {stage}: {n} x {reason[:90]}")
    print(f"pairs: {n_pairs}")
    for fmt, paths in written.items():
        print(f"{fmt}: {', '.join(paths)}")
    print(f"rejects: {out / 'rejects.parquet'}")
    summary = {"pairs": n_pairs, "funnel": funnel.to_list(), "outputs": written}
    if agreement is not None:
        print(
            f"annotators: {len(agreement['annotators'])}, items labelled twice or more: "
            f"{agreement['items']}, Krippendorff's alpha {agreement['alpha']:.3f}"
        )
        summary["annotators"] = {
            "names": agreement["annotators"],
            "items": agreement["items"],
            "alpha": agreement["alpha"],
            "pairwise": [{"a": a, "b": b, **v} for (a, b), v in agreement["pairwise"].items()],
        }
    (Path(out) / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
