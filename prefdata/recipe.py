"""The plumbing every recipe in ``recipes/`` shares, so each recipe is its flags and its
stages: the input flags (``--input`` in any layout, or ``--sample``, the bundled scored
sample), the output flags (``--out``, ``--workdir``, ``--shard-rows``, ``--format``,
``--report``, ``--debug``), the run (the executor ingests the input and fits what needs
fitting), and the finish: each format exported, every reject in ``OUT/rejects.parquet``,
the funnel printed and saved in ``OUT/summary.json``, and the HTML report if asked.

A user's mistake is one line and exit status 2 (:func:`prefdata.cli.guarded`).

>>> parser = recipe_parser("demo", formats=("trl-dpo",))
>>> args = parser.parse_args(["--sample", "--out", "o"])
>>> args.sample, args.format, args.out
(True, None, 'o')
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from prefdata.cli import HelpFormatter, add_debug_argument, add_layout_arguments, guarded, read_args
from prefdata.data import SAMPLE_OPTIONS, sample_path


class UsageError(ValueError):
    """Flags that cannot work together (one line, exit status 2)."""


def recipe_parser(
    description: str, *, formats: Sequence[str], ranked: bool = False
) -> argparse.ArgumentParser:
    """A parser with the shared input and output flags; ``formats``: the default exports
    (``--format`` adds others); ``ranked``: the recipe ranks by a score (``--score``, read
    by :func:`ranked_pools`)."""
    from prefdata.io.export import FORMATS

    p = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)
    src = p.add_argument_group("input")
    src.add_argument("--input", help="Parquet, JSONL(.gz), a datasets folder, or a Hub id")
    src.add_argument(
        "--sample",
        action="store_true",
        help="use the scored sample bundled with prefdata (prefdata.data.sample_path())",
    )
    add_layout_arguments(src, default_layout="long")
    if ranked:
        src.add_argument(
            "--score", help="the ranking score (default: the mean of the z-scored scores)"
        )
    out = p.add_argument_group("output")
    out.add_argument("--out", required=True, help="output folder")
    out.add_argument("--workdir", help="checkpoint folder (default: OUT/work)")
    out.add_argument("--shard-rows", type=int, default=None, help="pools per shard")
    out.add_argument(
        "--format",
        action="append",
        choices=sorted(FORMATS),
        help=f"export format; repeatable (default: {', '.join(formats)})",
    )
    out.add_argument("--report", action="store_true", help="also write OUT/report.html")
    p.set_defaults(default_formats=tuple(formats))
    add_debug_argument(p)
    return p


def source_of(args: argparse.Namespace) -> Any:
    """The executor's source: the ``--input`` in its layout (an :class:`Ingest`), or the
    bundled sample with its columns."""
    from prefdata.execute import Ingest

    if args.sample:
        args.input = str(sample_path())
        options = {k: v for k, v in SAMPLE_OPTIONS.items() if k != "layout"}
        return Ingest(args.input, "long", **options)
    if not args.input:
        raise UsageError("give --input (or --sample)")
    options = read_args(args)
    if args.layout != "pool":
        return Ingest(args.input, args.layout, **options)
    if str(args.input).endswith(".parquet") and options["split"] is None:
        return args.input  # pools already: read in place, shard by shard
    from prefdata.io.readers import read_pools

    return read_pools(args.input, "pool", **options).table


def score_columns(args: argparse.Namespace) -> tuple[str, ...]:
    """The scores the input gives (``--score-col``, or the sample's)."""
    if args.sample:
        return tuple(SAMPLE_OPTIONS["score_cols"])
    return tuple(args.score_col or ())


def ranked_pools(args: argparse.Namespace) -> tuple[list, str]:
    """The stages every scored recipe starts with, and the score they rank by: degenerate
    candidates flagged and dropped, the ``--score-col`` scores z-normalised, and ranking
    by ``--score`` (z-scored) or, with several scores, their ensemble mean (the quality
    benchmark's winner; one score: that one)."""
    from prefdata.annotate import Ensemble, Normalise
    from prefdata.filter import DropFlagged, FlagDegenerate

    scores = score_columns(args)
    if not scores:
        raise UsageError("give --score-col (the scores that rank the responses)")
    z = tuple(f"{s}.z" for s in scores)
    stages: list = [FlagDegenerate(), DropFlagged(), Normalise(scorers=scores)]
    if getattr(args, "score", None):
        return stages, f"{args.score}.z"
    if len(z) > 1:
        return [*stages, Ensemble(z)], "ensemble.mean"
    return stages, z[0]


def workdir_of(args: argparse.Namespace) -> Path:
    """``--workdir``, or ``OUT/work``."""
    return Path(args.workdir) if args.workdir else Path(args.out) / "work"


def run_stages(args: argparse.Namespace, stages: list, name: str) -> Any:
    """Run ``stages`` over the input with the local executor in ``WORKDIR/<name>``
    (checkpointed; a rerun resumes)."""
    from prefdata.execute import LocalExecutor

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a folder for the outputs")
    executor = LocalExecutor(workdir_of(args) / name, shard_rows=args.shard_rows)
    return executor.run(stages, source_of(args))


def finish(
    args: argparse.Namespace,
    result: Any,
    *,
    exports: Sequence[tuple[str, pa.Table, dict]] | None = None,
    extra: dict[str, Any] | None = None,
) -> int:
    """Export, record every reject, print and save the funnel (and the report).
    ``exports``: ``(format, table, options)`` to write (default: every ``--format`` of
    the run's output); ``extra``: more keys for ``summary.json``."""
    from prefdata.io.export import export
    from prefdata.io.parquet import write_parquet
    from prefdata.pipeline import count_rejects_by_reason

    out = Path(args.out)
    funnel = result.funnel
    if exports is None:
        table = result.read()
        exports = [(f, table, {}) for f in (args.format or args.default_formats)]
    rejects = [result.rejects()]
    written: dict[str, list[str]] = {}
    for fmt, table, options in exports:
        folder = options.pop("folder", fmt)
        res = export(table, fmt, out / folder, funnel=funnel, **options)
        rejects.append(res.rejects)
        written.setdefault(folder, []).extend(str(p) for p in res)
    write_parquet(pa.concat_tables(rejects, promote_options="default"), out / "rejects.parquet")
    if args.report:
        from prefdata.report.html import write_report

        written["report"] = [str(write_report(workdir_of(args), out / "report.html"))]
    print("funnel (rows):")
    for e in funnel.entries:
        print(
            f"  {e.stage:<28} {e.rows_in:>8} in {e.rows_out:>8} out {e.rows_rejected:>6} rejected"
        )
    all_rejects = pa.concat_tables(rejects, promote_options="default")
    for stage, reason, n in count_rejects_by_reason(all_rejects)[:10]:
        print(f"  rejected by {stage}: {n} x {reason[:90]}")
    for name, paths in written.items():
        print(f"{name}: {', '.join(paths)}")
    print(f"rejects: {out / 'rejects.parquet'}")
    summary = {"funnel": funnel.to_list(), "written": written, **(extra or {})}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 0


def main_of(name: str, parser: Callable[[], argparse.ArgumentParser], run: Callable) -> Callable:
    """A recipe's ``main(argv)``: parse, run inside the error boundary."""

    def main(argv: list[str] | None = None) -> int:
        args = parser().parse_args(argv)
        from prefdata.execute.workdir import WorkdirBusy

        return guarded(name, lambda: run(args), debug=args.debug, errors=(WorkdirBusy,))

    return main


__all__ = [
    "UsageError",
    "finish",
    "main_of",
    "ranked_pools",
    "recipe_parser",
    "run_stages",
    "score_columns",
    "source_of",
    "workdir_of",
]
