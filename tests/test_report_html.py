"""prefdata report: one self-contained HTML file of plots (matplotlib SVG inline) for a
run folder, a pool table or a pair table; byte-identical for the same input."""

from __future__ import annotations

import re
import sys

import numpy as np
import polars as pl
import pytest

from prefdata.cli import main
from prefdata.report.html import agreement_and_tau

pytest.importorskip("matplotlib")

SECTIONS = [
    "<h2>Funnel</h2>",
    "<h3>Candidates dropped inside pools</h3>",
    "<h2>Score distributions</h2>",
    "<h2>Scorer agreement</h2>",
    "<h2>Length bias</h2>",
    "<h2>Pairs</h2>",
    "<h3>Margins</h3>",
    "<h3>Generators: chosen and rejected</h3>",
    "<h3>Sample pairs</h3>",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory, binarize_module):
    out = tmp_path_factory.mktemp("report") / "sample"
    assert binarize_module.main(["--sample", "--out", str(out), "--report"]) == 0
    return out


@pytest.fixture(scope="module")
def binarize_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "recipes" / "binarize.py"
    spec = importlib.util.spec_from_file_location("binarize_for_report", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def self_contained(page: str) -> bool:
    """Nothing fetched: no scripts, stylesheets, images or links to another file (an
    image inline as a data: URI is part of the page)."""
    refs = re.findall(r'(?:src|href)="([^"#][^"]*)"', page)
    refs = [r for r in refs if not r.startswith("data:")]
    return "<script" not in page and "<link" not in page and not refs


def test_the_recipe_writes_every_section_self_contained(run):
    page = (run / "report.html").read_text()
    for section in SECTIONS:
        assert section in page, section
    assert page.count("<svg") == 6  # funnel, scores, agreement, length bias, margins, generators
    assert self_contained(page)
    assert re.search(r"<td>rm_quality</td><td>rm_helpful</td><td>\d+</td>", page)


def test_the_cli_on_a_run_a_pool_and_a_pair_file_is_byte_identical(run, tmp_path, capsys):
    a, b = tmp_path / "a.html", tmp_path / "b.html"
    assert main(["report", str(run / "work"), "--out", str(a)]) == 0
    assert main(["report", str(run / "work"), "--out", str(b)]) == 0
    assert a.read_bytes() == b.read_bytes() == (run / "report.html").read_bytes()
    pairs = sorted((run / "work" / "pairs").rglob("shard-00000.arrow"))[-1]
    assert main(["report", str(pairs), "--out", str(tmp_path / "p.html")]) == 0
    page = (tmp_path / "p.html").read_text()
    assert "<h2>Pairs</h2>" in page and "<h2>Funnel</h2>" not in page and self_contained(page)
    capsys.readouterr()
    assert main(["report", str(tmp_path / "none.parquet"), "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.startswith("prefdata report: error: ")


def test_without_matplotlib_the_report_says_which_extra(run, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["report", str(run / "work"), "--out", str(tmp_path / "r.html")]) == 2
    assert "pip install 'prefdata[report]'" in capsys.readouterr().err


def test_agreement_and_kendall_tau_by_hand():
    df = pl.DataFrame(
        {
            "pool": [0, 0, 0, 0, 1, 1],
            "a": [1.0, 2.0, 3.0, 4.0, 1.0, 2.0],
            "b": [4.0, 3.0, 2.0, 1.0, 1.0, np.nan],  # reversed in pool 0; pool 1 unscored
        }
    )
    r = agreement_and_tau(df, ["a", "b"])[("a", "b")]
    assert r == {"pairs": 6, "agreement": 0.0, "tau": -1.0}


def test_reject_reasons_are_listed():
    import pyarrow as pa

    from prefdata.pipeline import Funnel, rejects_from
    from prefdata.report.html import ReportData, render

    funnel = Funnel()
    funnel.add("read", 3, 1, 2)
    rejects = rejects_from(pa.table({"prompt_id": ["a", "b"]}), "read", "line 1: invalid JSON")
    page = render(ReportData("t", funnel=funnel, rejects=rejects))
    assert "<h3>Top reject reasons</h3>" in page
    assert "<td>read</td><td>line 1: invalid JSON</td><td>2</td>" in page


def test_a_real_headless_chromium_renders_the_plots(run, tmp_path):
    """Debian's chromium opens the report from disk and draws it: the screenshot holds
    the plots' own colours (the funnel's blue, the generators' green). Skipped where no
    chromium is installed; .ci/run installs it, and PREFDATA_REQUIRE_CHROMIUM=1 turns the
    skip into a failure."""
    import os
    import shutil
    import subprocess

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("PREFDATA_REQUIRE_CHROMIUM") == "1":
            pytest.fail("chromium is not installed but PREFDATA_REQUIRE_CHROMIUM=1")
        pytest.skip("no chromium here (Debian: apt-get install chromium)")
    from PIL import Image

    shot = tmp_path / "report.png"
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--window-size=1200,3000", f"--screenshot={shot}", (run / "report.html").as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    image = Image.open(shot).convert("RGB")
    assert image.size == (1200, 3000)
    colours = {c for _, c in image.getcolors(maxcolors=1 << 20)}
    assert len(colours) > 50  # not a blank page

    def near(rgb):
        return any(sum(abs(a - b) for a, b in zip(c, rgb, strict=True)) < 12 for c in colours)

    assert near((0x4C, 0x78, 0xA8)) and near((0x54, 0xA2, 0x4B))  # funnel blue, chosen green
