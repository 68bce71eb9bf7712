"""matplotlib only where a figure is drawn.

torchmetrics imports ``matplotlib.pyplot`` as soon as it is imported (for ``Metric.plot``, which this
package never calls), and Lightning imports torchmetrics, so every command paid for matplotlib, and on a
fresh machine for matplotlib's font cache, built on its first import (40 s measured on a GPU node, inside
``extract``, which draws nothing). :func:`defer` turns torchmetrics' own switch for its plotting helpers
(``torchmetrics.utilities.imports._MATPLOTLIB_AVAILABLE``) off as torchmetrics is first imported (a finder
on ``sys.meta_path`` waits for that module: ``import allo_lightning`` itself imports nothing of
torchmetrics, so ``--help`` stays fast), so nothing imports matplotlib until one of our figures is drawn
(``allo_lightning/plots``, ``outputs.save_figure``: imported inside the functions that draw). Only
torchmetrics' ``Metric.plot`` is affected (it then says matplotlib is missing).
``ALLO_LIGHTNING_EAGER_MATPLOTLIB=1`` leaves torchmetrics as it is; if torchmetrics is already imported
(a notebook that imported Lightning first), nothing changes.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys

_MODULE = "torchmetrics.utilities.imports"


class _Switch(importlib.abc.MetaPathFinder):
    """Finds nothing itself: when torchmetrics' import switches are first imported, it lets the other
    finders find them and marks matplotlib unavailable once the module has run (before torchmetrics reads
    it). Nothing is imported until then, so ``import allo_lightning`` (and ``--help``) stays light."""

    def find_spec(self, name, path=None, target=None):
        if name != _MODULE:
            return None
        _remove()
        spec = None
        try:
            spec = importlib.util.find_spec(name)
        except Exception:  # noqa: BLE001 - an optimisation only: torchmetrics then imports as before
            return None
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None
        run = spec.loader.exec_module

        def exec_module(module) -> None:
            run(module)
            if hasattr(module, "_MATPLOTLIB_AVAILABLE"):
                module._MATPLOTLIB_AVAILABLE = False

        spec.loader.exec_module = exec_module  # this spec's loader only
        return spec


def _remove() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _Switch)]


def defer() -> bool:
    """Mark matplotlib unavailable in torchmetrics' import switches when they are first imported; True
    when that will happen (False: torchmetrics is already imported, or ALLO_LIGHTNING_EAGER_MATPLOTLIB)."""
    if "torchmetrics" in sys.modules or _MODULE in sys.modules:
        return False
    if os.environ.get("ALLO_LIGHTNING_EAGER_MATPLOTLIB", "") not in ("", "0"):
        return False
    _remove()
    sys.meta_path.insert(0, _Switch())
    return True
