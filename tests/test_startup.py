"""pyarrow's pandas check settled without importing pandas (prefdata/startup.py). Each test
runs a fresh interpreter: the test process has long imported pandas."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_python(code: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split()


def test_arrays_are_built_without_pandas_and_pandas_works_once_imported():
    got = run_python(
        """
        import importlib.resources, sys
        import pyarrow as pa
        from prefdata.startup import defer_pandas
        print(defer_pandas())
        pa.table({"a": [1, 2], "b": ["x", None]}); pa.scalar(3); pa.array([[1.5]])
        print("pandas" in sys.modules)
        import numpy as np, pandas as pd
        # pyarrow's pandas support is back: a pandas NaN is a null, as without prefdata
        print(pa.array(pd.Series([1.0, np.nan])).null_count)
        print(pa.Table.from_pandas(pd.DataFrame({"x": [1.0, None]})).column(0).null_count)
        print(pa.table({"x": [1, 2]}).to_pandas()["x"].sum())
        # pandas keeps its own loader (resources still read)
        print(type(pd.__loader__).__name__, importlib.resources.files("pandas").is_dir())
        print(defer_pandas())
        """
    )
    assert got == ["True", "False", "1", "1", "3", "SourceFileLoader", "True", "False"]


def test_nothing_to_settle_once_pandas_is_loaded():
    got = run_python(
        """
        import numpy as np, pandas as pd, pyarrow as pa
        from prefdata.startup import defer_pandas
        print(defer_pandas(), pa.array(pd.Series([1.0, np.nan])).null_count)
        """
    )
    assert got == ["False", "1"]


def test_a_recipe_to_trl_runs_without_importing_pandas(tmp_path):
    """The command line's entry (``guarded``) settles the check: binarize on the bundled
    sample to TRL DPO never loads pandas."""
    got = run_python(
        f"""
        import runpy, sys
        sys.argv = ["binarize.py", "--sample", "--format", "trl-dpo", "--out", {str(tmp_path)!r}]
        try:
            runpy.run_path("recipes/binarize.py", run_name="__main__")
        except SystemExit as e:
            print(e.code)
        print("pandas" in sys.modules)
        """
    )
    assert got[-2:] == ["0", "False"]  # after the recipe's own summary
    assert (tmp_path / "trl-dpo" / "train.parquet").exists()
