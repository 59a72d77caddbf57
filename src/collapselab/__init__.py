"""collapselab: run, measure and prevent model collapse.

The Python API (``collapselab.api``; docs/how-to/python-api.md)::

    import collapselab
    run = collapselab.run("configs/gaussian/replace.yaml", **{"policy.name": "accumulate"})
    run.metrics()                       # pandas DataFrame, one row per generation
    collapselab.load("runs/gaussian-replace").report("replace.html")
    collapselab.sweep("configs/sweeps/gaussian_table.yaml")

``import collapselab`` stays light: the API loads on first use.
"""

from __future__ import annotations

import sys
import types
from typing import Any

__version__ = "0.1.0"
__all__ = ["Run", "SweepRuns", "__version__", "experiment", "load", "run", "sweep"]

_API = {"Run", "SweepRuns", "experiment", "load", "run"}


def __getattr__(name: str) -> Any:
    if name in _API:
        from collapselab import api

        return getattr(api, name)
    if name == "sweep":  # the submodule, callable as api.sweep (see _SweepModule)
        import importlib

        return importlib.import_module("collapselab.sweep")
    raise AttributeError(f"module 'collapselab' has no attribute {name!r}")


class _SweepModule(types.ModuleType):
    """``collapselab.sweep`` names both the submodule (``from collapselab.sweep import
    load_sweep``) and the API function (``collapselab.sweep("sweep.yaml")``): importing a
    submodule sets it as the package's attribute, so the module itself is made callable."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from collapselab.api import sweep

        return sweep(*args, **kwargs)


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value: Any) -> None:
        if name == "sweep" and type(value) is types.ModuleType:
            value.__class__ = _SweepModule
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
