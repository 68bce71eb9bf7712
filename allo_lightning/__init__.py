"""allo_lightning: attention heads of a frozen protein language model that see allosteric sites,
and a lightweight probe trained on them."""

from . import _matplotlib

_matplotlib.defer()  # before Lightning (and torchmetrics) are imported: matplotlib only where a figure is drawn

__version__ = "0.1.0"
