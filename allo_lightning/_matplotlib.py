"""matplotlib only where a figure is drawn.

torchmetrics imports ``matplotlib.pyplot`` as soon as it is imported (for ``Metric.plot``, which this
package never calls), and Lightning imports torchmetrics, so every command paid for matplotlib, and on a
fresh machine for matplotlib's font cache, built on its first import (40 s measured on a GPU node, inside
``extract``, which draws nothing). :func:`defer` turns torchmetrics' own switch for its plotting helpers
(``torchmetrics.utilities.imports._MATPLOTLIB_AVAILABLE``) off before torchmetrics is first imported, so
nothing imports matplotlib until one of our figures is drawn (``allo_lightning/plots``,
``outputs.save_figure``: imported inside the functions that draw). Only torchmetrics' ``Metric.plot``
is affected (it then says matplotlib is missing). ``ALLO_LIGHTNING_EAGER_MATPLOTLIB=1`` leaves torchmetrics
as it is; if torchmetrics is already imported (a notebook that imported Lightning first), nothing changes.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

_MODULE = "torchmetrics.utilities.imports"


def defer() -> bool:
    """Pre-load torchmetrics' import switches with matplotlib marked unavailable; True when done."""
    if "torchmetrics" in sys.modules or _MODULE in sys.modules:
        return False
    if os.environ.get("ALLO_LIGHTNING_EAGER_MATPLOTLIB", "") not in ("", "0"):
        return False
    try:
        spec = importlib.util.find_spec("torchmetrics")  # a top-level find_spec runs nothing
        if spec is None or not spec.submodule_search_locations:
            return False
        path = Path(next(iter(spec.submodule_search_locations))) / "utilities" / "imports.py"
        sub = importlib.util.spec_from_file_location(_MODULE, path)
        if sub is None or sub.loader is None:
            return False
        module = importlib.util.module_from_spec(sub)
        sub.loader.exec_module(module)  # plain flags (RequirementCache objects); imports nothing of torchmetrics
        if not hasattr(module, "_MATPLOTLIB_AVAILABLE"):
            return False
        module._MATPLOTLIB_AVAILABLE = False
        sys.modules[_MODULE] = module
        return True
    except Exception:  # noqa: BLE001 - an optimisation only: torchmetrics then imports matplotlib as before
        sys.modules.pop(_MODULE, None)
        return False
