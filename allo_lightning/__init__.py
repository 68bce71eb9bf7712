"""allo_lightning: attention heads of a frozen protein language model that see allosteric sites,
and a lightweight probe trained on them."""

__version__ = "0.1.0"
