"""The README's Python example runs as written, from any folder (the sample is found
through the installed package, not a path relative to the repository)."""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert blocks
    monkeypatch.chdir(tmp_path)  # not the repository root
    code = blocks[0].replace('"out/python"', repr(str(tmp_path / "out")))
    exec(compile(code, "README.md", "exec"), {})
    assert "Pairs:" in capsys.readouterr().out
    assert (tmp_path / "out" / "train.parquet").exists()
    assert not os.path.exists("prefdata/data/sample_long.jsonl")
