"""``prefdata report``: one self-contained HTML file that shows a run's data as pictures.

For a run folder (``binarize.py``'s ``OUT/work``, any executor's work directory), a pool
table or a pair table. Sections, each where the data has what it needs:

- the funnel as a chart, with the top reject reasons and the candidates dropped inside
  pools;
- score distributions, one histogram per scorer;
- scorer agreement: for every two scorers the share of candidate pairs of one pool they
  order the same way (sign agreement) and Kendall's tau over those pairs, as a matrix;
- length bias: each score against response length (with the correlation), and the
  chosen/rejected length ratio of the pairs;
- the margin histogram and each generator's chosen and rejected counts (win rate);
- a table of sample pairs (chosen, rejected, margin, strength);
- for an iterative run (``recipes/iterative_dpo.py``'s ``OUT``), the rounds side by side
  (pairs, chosen reward and margin by round), then all of the above for each round.

Plots are drawn with matplotlib (the ``report`` extra) as SVG and written inline: the file
opens from disk and fetches nothing. The same input gives the same bytes (fixed SVG ids, no
dates).

>>> write_report("out/sample/work", "report.html")  # doctest: +SKIP
PosixPath('report.html')
"""

from __future__ import annotations

import html
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from prefdata.pipeline import Funnel, count_rejects_by_reason
from prefdata.report.stats import dropped_counts
from prefdata.schema import score_names

MAX_POINTS = 4000  # scatter points per scorer (a fixed, evenly spaced sample)
MAX_SCORERS = 8


@dataclass
class ReportData:
    """What a report shows: any of pools, pairs, a funnel and rejects."""

    title: str
    pools: pa.Table | None = None
    pairs: pa.Table | None = None
    funnel: Funnel | None = None
    rejects: pa.Table | None = None


def collect(path: str | os.PathLike) -> ReportData:
    """A run folder's last pool and pair outputs, funnel and rejects; or one table."""
    from prefdata.io.shards import read_files, read_schema
    from prefdata.validate import record_type

    path = Path(path)
    if path.is_file():
        table = read_files(path)
        kind = record_type(table)
        if kind not in ("pool", "pair"):
            raise ValueError(f"{path}: not a pool or pair table (columns {table.column_names})")
        return ReportData(
            path.name,
            pools=table if kind == "pool" else None,
            pairs=table if kind == "pair" else None,
        )
    from prefdata.execute.ingest import is_ingest
    from prefdata.execute.runs import open_run
    from prefdata.execute.workdir import open_workdir

    run = open_run(path)
    outputs: dict[str, list[Path]] = {}
    for d in run.workdirs:
        if is_ingest(d):
            continue
        files = list(open_workdir(d).outputs)
        if files:
            kind = record_type(read_schema(files[0]))
            if kind in ("pool", "pair"):
                outputs[kind] = files
    if not outputs:
        raise ValueError(f"{path}: the run has no finished pool or pair output yet")
    read = lambda kind: read_files(outputs[kind]) if kind in outputs else None  # noqa: E731
    return ReportData(path.name, read("pool"), read("pair"), run.funnel, run.read_rejects())


# ------------------------------------------------------------------------ measures


def _flat_scores(pools: pa.Table) -> tuple[pl.DataFrame, list[str]]:
    """One row per candidate: pool, response length, generator, each score."""
    names = score_names(pools)[:MAX_SCORERS]
    cands = pc.list_flatten(pools["candidates"].combine_chunks())
    parents = pc.list_parent_indices(pools["candidates"].combine_chunks())
    cols = {
        "pool": parents.to_numpy(zero_copy_only=False),
        "length": pc.utf8_length(pc.struct_field(cands, "response")).to_numpy(zero_copy_only=False),
    }
    for n in names:
        cols[n] = pc.struct_field(pc.struct_field(cands, "scores"), n).to_numpy(
            zero_copy_only=False
        )
    return pl.DataFrame(cols), names


def agreement_and_tau(df: pl.DataFrame, names: Sequence[str]) -> dict[tuple[str, str], dict]:
    """For every two scorers, over the candidate pairs of each pool where both scored:
    sign agreement and Kendall's tau-a, ``(concordant - discordant) / pairs``.

    >>> df = pl.DataFrame({"pool": [0, 0, 0], "a": [1.0, 2.0, 3.0], "b": [1.0, 3.0, 2.0]})
    >>> r = agreement_and_tau(df, ["a", "b"])[("a", "b")]
    >>> r["pairs"], round(r["agreement"], 3), round(r["tau"], 3)
    (3, 0.667, 0.333)
    """
    pools = df["pool"].to_numpy()
    order = np.argsort(pools, kind="stable")
    pools = pools[order]
    starts = np.flatnonzero(np.r_[True, pools[1:] != pools[:-1]])
    ends = np.r_[starts[1:], len(pools)]
    i_idx, j_idx = [], []
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        if e - s > 1:
            i, j = np.triu_indices(e - s, 1)
            i_idx.append(order[s + i])
            j_idx.append(order[s + j])
    i_all = np.concatenate(i_idx) if i_idx else np.zeros(0, np.int64)
    j_all = np.concatenate(j_idx) if j_idx else np.zeros(0, np.int64)
    out = {}
    for a_pos, a in enumerate(names):
        for b in names[a_pos + 1 :]:
            x, y = df[a].to_numpy(), df[b].to_numpy()
            da, db = x[i_all] - x[j_all], y[i_all] - y[j_all]
            ok = ~(np.isnan(da) | np.isnan(db))
            sa, sb = np.sign(da[ok]), np.sign(db[ok])
            n = int(ok.sum())
            out[(a, b)] = {
                "pairs": n,
                "agreement": float(np.mean(sa == sb)) if n else float("nan"),
                "tau": float(np.sum(sa * sb) / n) if n else float("nan"),
            }
    return out


# ------------------------------------------------------------------------ plots


def _svg(fig: Any) -> str:
    """The figure as inline SVG (fixed ids, no date: the same data gives the same bytes)."""
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]


def _figure(cols: int = 1, rows: int = 1, width: float = 4.2, height: float = 3.0):
    try:
        import matplotlib
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(
            "the report draws with matplotlib: pip install 'prefdata[report]'", name=e.name
        ) from e

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.hashsalt": "prefdata", "svg.fonttype": "none", "font.size": 9})
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    return fig, axes.ravel()


def funnel_plot(funnel: Funnel) -> str:
    entries = funnel.entries
    fig, (ax,) = _figure(width=8.0, height=0.35 * len(entries) + 1.2)
    names = [e.stage for e in entries][::-1]
    out = [e.rows_out for e in entries][::-1]
    ax.barh(names, out, color="#4c78a8", label="out")
    rejected = [e.rows_rejected for e in entries][::-1]
    ax.barh(names, rejected, left=out, color="#e45756", label="rejected")
    ax.set_xlabel("rows (each stage's own unit: input rows, pools, pairs)")
    ax.legend(loc="lower right")
    return _svg(fig)


def score_histograms(df: pl.DataFrame, names: Sequence[str]) -> str:
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig, axes = _figure(cols, rows, width=3.6, height=2.6)
    for ax, n in zip(axes, names, strict=False):
        x = df[n].drop_nans().drop_nulls().to_numpy()
        ax.hist(x, bins=40, color="#4c78a8")
        ax.set_title(f"{n} (n={len(x):,})")
    for ax in axes[len(names) :]:
        ax.axis("off")
    return _svg(fig)


def length_bias(df: pl.DataFrame, names: Sequence[str]) -> tuple[str, dict[str, float]]:
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig, axes = _figure(cols, rows, width=3.6, height=2.6)
    corr = {}
    for ax, n in zip(axes, names, strict=False):
        sub = df.select("length", n).drop_nans().drop_nulls()
        x, y = sub["length"].to_numpy().astype(float), sub[n].to_numpy()
        corr[n] = (
            float(np.corrcoef(x, y)[0, 1]) if len(x) > 2 and x.std() and y.std() else float("nan")
        )
        step = max(1, len(x) // MAX_POINTS)
        ax.scatter(x[::step], y[::step], s=3, alpha=0.4, color="#4c78a8")
        ax.set_xscale("symlog")
        ax.set_title(f"{n}: r = {corr[n]:.2f}")
        ax.set_xlabel("response length (characters)")
    for ax in axes[len(names) :]:
        ax.axis("off")
    return _svg(fig), corr


def agreement_matrix(names: Sequence[str], agree: dict[tuple[str, str], dict]) -> str:
    """Scorers by scorers: sign agreement above the diagonal, Kendall's tau below."""
    k = len(names)
    grid = np.full((k, k), np.nan)
    for (a, b), v in agree.items():
        i, j = names.index(a), names.index(b)
        grid[i, j], grid[j, i] = v["agreement"], v["tau"]
    fig, (ax,) = _figure(width=1.1 * k + 2.2, height=1.0 * k + 1.4)
    image = ax.imshow(grid, vmin=-1, vmax=1, cmap="RdBu")
    for i in range(k):
        for j in range(k):
            if i != j and np.isfinite(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(k), names, rotation=45, ha="right")
    ax.set_yticks(range(k), names)
    ax.set_title("agreement (upper) and Kendall tau (lower)")
    fig.colorbar(image, ax=ax, shrink=0.8)
    return _svg(fig)


def margin_histogram(pairs: pa.Table) -> str:
    m = pc.drop_null(pairs["margin"]).to_numpy(zero_copy_only=False)
    fig, (ax,) = _figure(width=5.0)
    ax.hist(m[np.isfinite(m)], bins=40, color="#72b7b2")
    ax.set_title(f"margin (n={len(m):,})")
    return _svg(fig)


def generator_wins(pairs: pa.Table) -> tuple[str, list[tuple[str, int, int]]]:
    df = pl.from_arrow(pairs.select(["chosen_generator", "rejected_generator"]))
    won = df.group_by("chosen_generator").len().rename({"chosen_generator": "g", "len": "w"})
    lost = df.group_by("rejected_generator").len().rename({"rejected_generator": "g", "len": "l"})
    both = won.join(lost, on="g", how="full", coalesce=True).fill_null(0)
    both = both.with_columns(pl.col("g").fill_null("(none)")).sort(
        [pl.col("w") / (pl.col("w") + pl.col("l")), "g"], descending=[True, False]
    )
    rows = [(str(g), int(w), int(lo)) for g, w, lo in both.iter_rows()][:30]
    fig, (ax,) = _figure(width=8.0, height=0.3 * len(rows) + 1.2)
    names = [r[0] for r in rows][::-1]
    ax.barh(names, [r[1] for r in rows][::-1], color="#54a24b", label="chosen")
    ax.barh(names, [-r[2] for r in rows][::-1], color="#e45756", label="rejected")
    ax.axvline(0, color="black", linewidth=0.5)
    ax.legend(loc="lower right")
    ax.set_xlabel("pairs (chosen to the right, rejected to the left)")
    return _svg(fig), rows


# ------------------------------------------------------------------------ page


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return "" if np.isnan(v) else f"{v:.4g}"
    return "" if v is None else str(v)


def _short(text: str | None, n: int = 280) -> str:
    text = text or ""
    return text if len(text) <= n else text[:n] + " ..."


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.8em 0; }
th, td { border: 1px solid #ddd; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
td { max-width: 32em; white-space: pre-wrap; } svg { max-width: 100%; height: auto; }
.note { color: #555; font-size: 0.9em; }
"""


def render(data: ReportData, samples: int = 12) -> str:
    """The report's HTML (module docstring)."""
    return _page(data.title, sections(data, samples))


def _page(title: str, parts: list[str]) -> str:
    from prefdata import __version__

    head = [f"<h1>prefdata report: {html.escape(title)}</h1>"]
    head.append(f'<p class="note">prefdata {__version__}</p>')
    body = "\n".join([*head, *parts])
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>prefdata report: {html.escape(title)}</title><style>{STYLE}</style>"
        f"</head><body>\n{body}\n</body></html>\n"
    )


def sections(data: ReportData, samples: int = 12, level: int = 2) -> list[str]:
    """The report's sections for one run (headings from ``<h{level}>``)."""
    parts: list[str] = []
    if data.funnel is not None and data.funnel.entries:
        parts += ["<h2>Funnel</h2>", funnel_plot(data.funnel)]
        rows = [(e.stage, e.rows_in, e.rows_out, e.rows_rejected) for e in data.funnel.entries]
        parts.append(_table(["stage", "in", "out", "rejected"], rows))
    if data.rejects is not None and data.rejects.num_rows:
        top = count_rejects_by_reason(data.rejects)[:15]
        parts += ["<h3>Top reject reasons</h3>", _table(["stage", "reason", "rows"], top)]
    if data.pools is not None:
        dropped = dropped_counts(data.pools)
        if dropped:
            parts += ["<h3>Candidates dropped inside pools</h3>",
                      _table(["reason", "candidates"], list(dropped.items()))]  # fmt: skip
        df, names = _flat_scores(data.pools)
        if names:
            parts += ["<h2>Score distributions</h2>", score_histograms(df, names)]
            if len(names) > 1:
                agree = agreement_and_tau(df, names)
                rows = [(a, b, v["pairs"], v["agreement"], v["tau"]) for (a, b), v in agree.items()]
                parts += [
                    "<h2>Scorer agreement</h2>",
                    '<p class="note">Over every two candidates of one pool: the share both '
                    "scorers order the same way, and Kendall's tau-a.</p>",
                    agreement_matrix(names, agree),
                    _table(["scorer", "scorer", "pairs", "sign agreement", "Kendall tau"], rows),
                ]
            svg, corr = length_bias(df, names)
            parts += [
                "<h2>Length bias</h2>",
                '<p class="note">Each score against response length; r is the Pearson '
                "correlation.</p>",
                svg,
            ]
    if data.pairs is not None and data.pairs.num_rows:
        pairs = data.pairs
        parts.append("<h2>Pairs</h2>")
        c_len = pc.utf8_length(pairs["chosen"]).to_numpy(zero_copy_only=False).astype(float)
        r_len = pc.utf8_length(pairs["rejected"]).to_numpy(zero_copy_only=False).astype(float)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.nanmedian(np.where(r_len > 0, c_len / r_len, np.nan))
        longer = float(np.mean(c_len > r_len))
        parts.append(
            f'<p class="note">{pairs.num_rows:,} pairs; chosen/rejected length ratio: median '
            f"{ratio:.2f}; the chosen response is the longer one in {longer:.1%} of pairs.</p>"
        )
        if pairs["margin"].null_count < pairs.num_rows:
            parts += ["<h3>Margins</h3>", margin_histogram(pairs)]
        if pairs["chosen_generator"].null_count < pairs.num_rows:
            svg, rows = generator_wins(pairs)
            parts += [
                "<h3>Generators: chosen and rejected</h3>",
                svg,
                _table(["generator", "chosen", "rejected"], rows),
            ]
        sample = pairs.slice(0, samples).to_pylist()
        rows = [
            (
                _short((r["prompt"] or [{}])[-1].get("content", ""), 160),
                _short(r["chosen"]),
                _short(r["rejected"]),
                r.get("margin"),
                r.get("strength_mean"),
            )
            for r in sample
        ]
        parts += ["<h3>Sample pairs</h3>",
                  _table(["prompt", "chosen", "rejected", "margin", "strength"], rows)]  # fmt: skip
    if level != 2:  # nested under a round: every heading one level down
        parts = [
            p.replace("<h3>", "<h4>").replace("</h3>", "</h4>").replace("<h2>", "<h3>")
            .replace("</h2>", "</h3>")
            for p in parts
        ]  # fmt: skip
    return parts


def round_folders(path: Path) -> list[tuple[int, Path]]:
    """``round-<r>`` folders (an iterative run's), in round order."""
    found = []
    for d in Path(path).glob("round-*"):
        tail = d.name.removeprefix("round-")
        if d.is_dir() and tail.isdigit() and (d / "work").is_dir():
            found.append((int(tail), d))
    return sorted(found)


def render_rounds(path: Path, samples: int = 6) -> str:
    """An iterative run's report: the rounds side by side (pairs, chosen reward and margin
    by round, from each round's ``stats.json``), then each round's sections."""
    rounds = round_folders(path)
    stats = []
    for r, folder in rounds:
        f = folder / "stats.json"
        st = json.loads(f.read_text()) if f.exists() else {}
        stats.append((r, st.get("pairs"), st.get("mean_chosen_rm"), st.get("mean_margin")))
    fig, (ax,) = _figure(width=5.0)
    xs = [r for r, *_ in stats]
    ax.plot(xs, [x[2] if x[2] is not None else np.nan for x in stats], "o-", label="chosen rm")
    ax.plot(xs, [x[3] if x[3] is not None else np.nan for x in stats], "s-", label="margin")
    ax.set_xticks(xs)
    ax.set_xlabel("round")
    ax.legend()
    parts = [
        "<h2>Rounds</h2>",
        _svg(fig),
        _table(["round", "pairs", "mean chosen rm", "mean margin"], stats),
    ]
    for r, folder in rounds:
        parts.append(f"<h2>Round {r}</h2>")
        parts += sections(collect(folder / "work"), samples, level=3)
    return _page(Path(path).name, parts)


def write_report(path: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Collect ``path`` and write the report to ``out`` (atomically); an iterative run's
    folder (``round-<r>/``) gets every round, side by side and one by one."""
    from prefdata.io.atomic import atomic_path

    path = Path(path)
    page = render_rounds(path) if round_folders(path) else render(collect(path))
    out = Path(out)
    atomic_path(out, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return out


__all__ = [
    "ReportData",
    "agreement_and_tau",
    "collect",
    "render",
    "render_rounds",
    "sections",
    "write_report",
]
