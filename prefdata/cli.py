"""The ``prefdata`` command.

prefdata convert INPUT --layout long --prompt-col instruction ... --out pools.parquet
prefdata inspect PATH [--json]
prefdata validate PATH
prefdata sql PATH "SELECT ... FROM pools"
prefdata report PATH --out report.html

A user's mistake (a flag, a path, a file, the network) is one line on stderr and exit
status 2; ``--debug`` (or ``PREFDATA_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

# What a user's input, flags, files or network can cause: one line and exit status 2.
# OSError covers missing, unreadable, unwritable and damaged files (BadGzipFile, corrupt
# Parquet pages) and the network; EOFError a truncated gzip file.
USER_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    EOFError,
    KeyError,
    ValueError,
    TypeError,
    pa.ArrowException,
)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` with each flag's default, except where there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False:
            return action.help or ""
        return super()._get_help_string(action)


def error_line(e: BaseException) -> str:
    """An exception as one line (a KeyError without its quotes, Arrow's multi-line
    messages joined).

    >>> error_line(KeyError("no column 'x'")), error_line(OSError("bad page\\nheader"))
    ("no column 'x'", 'bad page; header')
    """
    text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


DEBUG_ENV = "PREFDATA_DEBUG"


def add_debug_argument(parser: argparse.ArgumentParser) -> None:
    """``--debug``: show the traceback of an error instead of its one line."""
    parser.add_argument(
        "--debug",
        action="store_true",
        help=f"show the full traceback of an error (or set {DEBUG_ENV}=1)",
    )


def guarded(
    prog: str,
    run: Callable[[], int],
    *,
    debug: bool = False,
    errors: tuple[type[BaseException], ...] = (),
) -> int:
    """The error boundary of the command line and every recipe: ``run()``'s status, or,
    for a user's error (:data:`USER_ERRORS` and ``errors``), one line ``prog: error: ...``
    on stderr and status 2. With ``debug`` (``--debug``) or ``PREFDATA_DEBUG=1`` the
    error propagates with its traceback. Other exceptions are bugs of ours: they always
    show their traceback.

    >>> guarded("demo", lambda: int("x"))
    2
    """
    from prefdata.startup import defer_pandas

    defer_pandas()
    # datasets' own progress bars would interleave with our lines
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")  # read when it loads
    if "datasets" in sys.modules:  # already loaded
        sys.modules["datasets"].disable_progress_bars()
    from prefdata.pipeline import EXTRAS

    try:
        return run()
    except (*USER_ERRORS, *errors, ModuleNotFoundError) as e:
        # a missing package is the user's to install only when an extra provides it
        missing_extra = isinstance(e, ModuleNotFoundError) and (
            (e.name or "").split(".")[0] in EXTRAS
        )
        if isinstance(e, ModuleNotFoundError) and not missing_extra:
            raise
        if debug or os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            raise
        print(f"{prog}: error: {error_line(e)}", file=sys.stderr)
        return 2


def add_layout_arguments(parser: Any, *, default_layout: str = "pool") -> None:
    """The flags that say how an input is laid out (shared by ``prefdata convert`` and the
    recipes); :func:`read_args` turns them into :func:`prefdata.io.readers.read_pools`'s
    keyword arguments."""
    from prefdata.io.layouts import LAYOUTS, LayoutOptions

    a = parser.add_argument
    d = LayoutOptions()  # the defaults live in one place
    a("--layout", choices=LAYOUTS, default=default_layout, help="how the input is laid out")
    a("--split", help="split to read from a Hugging Face dataset")
    a("--prompt-col", help="prompt column (a string or a message list)")
    a("--response-col", help="response column (long layout)")
    a("--generator-col", help="column naming the model that wrote a response")
    a(
        "--score-col",
        action="append",
        default=None,
        help="score column; repeat it for several scorers",
    )
    a("--id-col", help="column holding a given prompt_id")
    a("--chosen-col", default=d.chosen_col, help="chosen column (pairs, hh)")
    a("--rejected-col", default=d.rejected_col, help="rejected column (pairs, hh)")
    a("--margin-col", help="recorded margin column (pairs, hh)")
    a(
        "--chosen-score-col",
        help="pairs/hh: column with the chosen response's score (e.g. score_chosen); needs "
        "--rejected-score-col",
    )
    a(
        "--rejected-score-col",
        help="pairs/hh: column with the rejected response's score (e.g. score_rejected)",
    )
    a("--score-name", default=d.score_name, help="name the per-side scores get on each candidate")
    a(
        "--annotator-col",
        help="pairs/hh: column naming who recorded each preference (kept as annotator_id)",
    )
    a("--source", help="source name recorded in each pool (default: the input)")


def read_args(args: argparse.Namespace) -> dict[str, Any]:
    """:func:`prefdata.io.readers.read_pools` keyword arguments from
    :func:`add_layout_arguments`' flags."""
    import dataclasses

    from prefdata.io.layouts import LayoutOptions

    # one flag per LayoutOptions field (score_cols is the repeatable --score-col)
    options = {
        f.name: getattr(args, "score_col" if f.name == "score_cols" else f.name)
        for f in dataclasses.fields(LayoutOptions)
    }
    options["score_cols"] = tuple(options["score_cols"] or ())
    return dict(split=args.split, source_name=args.source, **options)


def rejects_path(out: Path) -> Path:
    """Where ``convert`` writes rejects: beside the output, ``<stem>.rejects.parquet``."""
    return out.with_name(out.name.removesuffix(".parquet") + ".rejects.parquet")


def _convert(args: argparse.Namespace) -> int:
    """Pools in memory for the pool layout; any other layout streams through the
    executor's ingest (batches, partitions, one pool shard each) into the output file, so
    memory stays a batch or a partition whatever the input's size."""
    from prefdata.io.parquet import write_parquet, write_parquet_files
    from prefdata.io.readers import read_pools
    from prefdata.io.shards import read_files

    out = Path(args.out)
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; give the output Parquet file")
    if args.layout == "pool":
        table, rejects, funnel = read_pools(args.input, args.layout, **read_args(args))
        write_parquet(table, out)
        write_parquet(rejects, rejects_path(out))
        pools = table.num_rows
        cands = pc.sum(pc.list_value_length(table["candidates"])).as_py() or 0
        n_rejects = rejects.num_rows
    else:
        import shutil
        import tempfile

        from prefdata.execute import Ingest
        from prefdata.execute.ingest import run_ingest

        options = read_args(args)
        ingest = Ingest(
            args.input, args.layout, split=options.pop("split"),
            source_name=options.pop("source_name"), **options,
        )  # fmt: skip
        out.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            done = run_ingest(ingest, work)
            write_parquet_files(done.pool_paths, out)
            rejects = read_files(done.rejects_paths) if done.rejects_paths else None
            if rejects is None:
                from prefdata.schema import empty_rejects

                rejects = empty_rejects()
            rejects = rejects.take(pc.sort_indices(rejects["row"]))
            write_parquet(rejects, rejects_path(out))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        funnel, n_rejects = done.funnel, rejects.num_rows
        file = pq.ParquetFile(out)
        pools, cands = file.metadata.num_rows, 0
        paths = [file.schema.column(i).path for i in range(len(file.schema))]
        leaf = [c for c in paths if c.startswith("candidates.")][:1]
        for g in range(file.num_row_groups):  # one leaf, one row group at a time
            lists = file.read_row_group(g, columns=leaf)["candidates"]
            cands += pc.sum(pc.list_value_length(lists)).as_py() or 0
    print(
        f"{args.input} [{args.layout}]: {funnel.summary()} | {pools} pools, "
        f"{cands} candidates -> {out}; {n_rejects} rejects -> {rejects_path(out)}"
    )
    return 0


def _is_run(path: Path) -> bool:
    """A work directory, or a folder holding the work directories of a run."""
    return path.is_dir() and any(path.rglob("manifest.json"))


def _load_any(path: Path) -> tuple[str, pa.Table | None, object | None]:
    """(kind, table, run info): kind is 'workdir', 'pools' or 'table'."""
    if _is_run(path):
        from prefdata.execute.runs import open_run

        info = open_run(path)
        return "workdir", info.read(), info
    from prefdata.io.readers import read_records

    table, _ = read_records(path)
    kind = "pools" if {"prompt_id", "prompt", "candidates"} <= set(table.column_names) else "table"
    if kind == "pools":
        from prefdata.io.parquet import from_parquet_layout

        table = from_parquet_layout(table)
    return kind, table, None


def _inspect(args: argparse.Namespace) -> int:
    from prefdata.report.summary import pool_stats

    path = Path(args.path)
    kind, table, info = _load_any(path)
    report: dict = {"path": str(path), "kind": kind}
    if info is not None:
        report["funnel"] = info.funnel.to_list()
        report["stages"] = info.stages
    if table is not None:
        report["rows"] = table.num_rows
        report["schema"] = {f.name: str(f.type) for f in table.schema}
        if {"prompt_id", "prompt", "candidates"} <= set(table.column_names):
            report.update(pool_stats(table))
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    print(f"{path} ({kind})")
    for key in ("rows", "pools", "candidates", "candidates_per_pool"):
        if key in report:
            print(f"  {key}: {report[key]}")
    if "schema" in report:
        print("  schema:")
        for name, typ in report["schema"].items():
            print(f"    {name}: {typ[:100]}")
    for name, s in report.get("scores", {}).items():
        print(
            f"  score {name}: "
            + ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in s.items()
            )
        )
    if report.get("generators"):
        print(
            f"  generators ({len(report['generators'])}): "
            + ", ".join(f"{g}={n}" for g, n in list(report["generators"].items())[:20])
        )
    if report.get("flags"):
        print("  flags: " + ", ".join(f"{g}={n}" for g, n in report["flags"].items()))
    for e in report.get("funnel", []):
        print(
            f"  funnel {e['stage']}: {e['rows_in']} in -> {e['rows_out']} out, "
            f"{e['rows_rejected']} rejected"
        )
    return 0


def _validate(args: argparse.Namespace) -> int:
    from prefdata.validate import record_type, validate_records

    _, table, _ = _load_any(Path(args.path))
    if table is None:
        print(f"{args.path}: nothing to validate", file=sys.stderr)
        return 1
    kind = record_type(table)
    if kind is None:
        raise ValueError(
            f"{args.path} is not a prefdata record table (pool, pair, list or unpaired); "
            f"its columns are {table.column_names}. Trainer exports are checked by their "
            "own loaders."
        )
    errors = validate_records(table, kind)
    for e in errors[: args.max_errors]:
        print(e)
    if len(errors) > args.max_errors:
        print(f"... and {len(errors) - args.max_errors} more")
    print(f"{args.path}: {table.num_rows} {kind} rows, {len(errors)} errors")
    return 1 if errors else 0


def _report(args: argparse.Namespace) -> int:
    from prefdata.report.html import write_report

    print(write_report(args.path, args.out))
    return 0


def _sql(args: argparse.Namespace) -> int:
    from prefdata.sql import format_table, query

    path = Path(args.path)
    tables: dict[str, object] = {}
    if _is_run(path):
        from prefdata.execute.runs import open_run

        info = open_run(path)
        if info.outputs:
            from prefdata.validate import record_type

            # The output is "pools", and also "pairs" (or lists, unpaired) when it is one:
            # read once, registered under both names.
            output = info.read()
            tables["pools"] = output
            kind = record_type(output.schema)
            if kind in ("pair", "list", "unpaired"):
                tables[{"pair": "pairs", "list": "lists", "unpaired": "unpaired"}[kind]] = output
        if info.rejects:
            tables["rejects"] = list(info.rejects)
    else:
        name = args.name or ("pairs" if "pair" in path.name else "pools")
        tables[name] = path
        sibling = rejects_path(path)
        if sibling.exists() and sibling != path:
            tables["rejects"] = sibling
    result = query(args.query, tables)
    print(format_table(result, max_rows=args.max_rows))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="prefdata", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("convert", help="read a dataset in any layout and write pools")
    c.add_argument("input", help="Parquet, JSONL(.gz), a datasets folder or a Hub name")
    add_layout_arguments(c, default_layout="pool")
    c.add_argument("--out", required=True, help="output Parquet file of pools")
    c.set_defaults(func=_convert)

    i = sub.add_parser("inspect", help="schema, counts, score statistics, a workdir's funnel")
    i.add_argument("path")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=_inspect)

    v = sub.add_parser("validate", help="row-level errors; exit status 1 when any")
    v.add_argument("path")
    v.add_argument("--max-errors", type=int, default=50)
    v.set_defaults(func=_validate)

    r = sub.add_parser(
        "report", help="one self-contained HTML file of plots for a run, pools or pairs"
    )
    r.add_argument("path", help="a run folder (e.g. OUT/work), a pool or a pair Parquet file")
    r.add_argument("--out", required=True, help="the HTML file to write")
    r.set_defaults(func=_report)

    s = sub.add_parser("sql", help="run a DuckDB query over pools, pairs or rejects")
    s.add_argument("path", help="a Parquet file (with its .rejects sibling) or a workdir")
    s.add_argument("query")
    s.add_argument("--name", help="table name for the file (default pools, or pairs)")
    s.add_argument("--max-rows", type=int, default=20)
    s.set_defaults(func=_sql)
    for command in (c, i, v, r, s):
        add_debug_argument(command)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    import duckdb

    args = build_parser().parse_args(argv)
    return guarded(
        f"prefdata {args.command}",
        lambda: args.func(args),
        debug=args.debug,
        errors=(duckdb.Error,),
    )


if __name__ == "__main__":
    sys.exit(main())
