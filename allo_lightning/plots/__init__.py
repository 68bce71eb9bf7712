"""Figures (matplotlib, Agg backend: no display needed). Files are written atomically."""

import matplotlib

matplotlib.use("Agg")
