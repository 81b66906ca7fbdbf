"""Start-up of the command line and the recipes: pyarrow's pandas check without pandas.

pyarrow imports pandas (0.4-0.8 s here) the first time it converts any Python object
(``pa.array`` of a list, ``pa.scalar``), only to ask whether the object is a pandas one.
A process that has not imported pandas holds no pandas object, so :func:`defer_pandas`
answers that first question with pandas held back, then gives pyarrow its pandas support
back the moment anything imports pandas: pyarrow sees pandas exactly when it is loaded.
:func:`prefdata.cli.guarded`, the entry of the command and of every recipe, calls it.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import threading
from typing import Any


def defer_pandas() -> bool:
    """Settle pyarrow's pandas check without importing pandas (module docstring); False
    when there is nothing to settle (pandas is loaded, or this pyarrow has no such
    check)."""
    if "pandas" in sys.modules or any(isinstance(f, _Watch) for f in sys.meta_path):
        return False
    import pyarrow as pa

    if not hasattr(getattr(pa, "lib", None), "_pandas_api"):
        return False
    block = _Block(threading.get_ident())
    sys.meta_path.insert(0, block)
    try:
        pa.array([0])  # pyarrow's first check: pandas is "absent"
    finally:
        sys.meta_path.remove(block)
    sys.meta_path.insert(0, _Watch())
    return True


def _restore_pyarrow_pandas() -> None:
    """pyarrow's pandas support, now that pandas is loaded (its ``pd`` retries the
    import, which finds the loaded module)."""
    import pyarrow as pa

    _ = pa.lib._pandas_api.pd


class _Block(importlib.abc.MetaPathFinder):
    """``import pandas`` fails on one thread (only while pyarrow's check runs)."""

    def __init__(self, thread: int) -> None:
        self.thread = thread

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "pandas" and threading.get_ident() == self.thread:
            raise ImportError("pandas is held back while pyarrow checks for it")
        return None


class _Watch(importlib.abc.MetaPathFinder):
    """Finds pandas as the other finders do, with a loader that restores pyarrow's pandas
    support once pandas has run (then the watch is removed)."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "pandas":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _Restoring(spec.loader, self)
                return spec
        return None


class _Restoring(importlib.abc.Loader):
    """A loader that runs pandas with its own loader, then restores pyarrow's support
    and puts its own loader back on the module."""

    def __init__(self, loader: Any, watch: _Watch) -> None:
        self.loader, self.watch = loader, watch

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self.loader.exec_module(module)
        module.__loader__ = module.__spec__.loader = self.loader  # nothing of ours stays
        if self.watch in sys.meta_path:
            sys.meta_path.remove(self.watch)
        _restore_pyarrow_pandas()

    def __getattr__(self, name: str) -> Any:  # resource readers and the like
        return getattr(self.loader, name)


__all__ = ["defer_pandas"]
