"""What a probe score means, and a probability made from it.

The probe is trained with a class-weighted loss (positives weighted by negatives / positives), so its
``score`` (the sigmoid of its output) ranks residues but is not a probability: a score of 0.5 sits
near the class boundary of a balanced problem, not at a 50 % chance of being allosteric. A
``Calibration`` fitted on the VALIDATION scores maps a score to a probability:

- ``platt``: logistic regression of the label on logit(score) (two parameters, robust on few sites);
  a non-positive slope (scores that do not rank the validation sites) becomes slope 0: every residue
  gets the validation base rate;
- ``isotonic``: a monotone step function (scikit-learn's IsotonicRegression, clipped at the ends).

Both are monotone non-decreasing in the score, so rankings and the decision threshold (always on the
score) are unchanged. When the validation scores do not rank the sites (e.g. the random ``tiny``
backbone), the fitted map collapses: one probability (the validation base rate) for every residue,
or only a few distinct ones. That is the right answer on such scores, not a fault, but it is easy to
misread: :attr:`Calibration.collapsed` says so, and ``meaning`` and ``warning`` carry it into the
outputs and the log.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import AlloError

CALIBRATIONS = ("platt", "isotonic", "none")

SCORE_MEANING = ("score: ranking score of the probe (sigmoid of a class-weighted classifier: higher = more "
                 "likely allosteric, NOT a probability); predicted = score >= threshold (the threshold with "
                 "the best F1 on the validation proteins, on the score scale)")
PROBABILITY_MEANING = ("probability: the score calibrated on the validation proteins ({method}; {n_pos} sites "
                       "among {n} residues): an estimate of P(allosteric) for proteins like those")

_EPS = 1e-6
MIN_LEVELS = 3  # fewer distinct probabilities than this on the validation residues: a collapsed calibration


def _logit(scores: np.ndarray) -> np.ndarray:
    s = np.clip(np.asarray(scores, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(s) - np.log1p(-s)


@dataclass
class Calibration:
    """A monotone map score -> probability, fitted on validation scores (see module docstring)."""

    method: str
    params: dict = field(default_factory=dict)
    n: int = 0
    n_pos: int = 0

    @classmethod
    def fit(cls, scores: torch.Tensor, labels: torch.Tensor, method: str = "platt") -> Calibration | None:
        """Fit on validation scores; ``None`` when ``method`` is "none" or the labels have one class only."""
        if method not in CALIBRATIONS:
            raise AlloError(f"unknown calibration {method!r}; choose one of {', '.join(CALIBRATIONS)}.")
        s = scores.detach().double().cpu().numpy()
        y = labels.detach().long().cpu().numpy()
        if s.shape != y.shape or s.ndim != 1:
            raise AlloError(f"calibration: {s.size} scores of shape {tuple(s.shape)} for {y.size} labels of shape "
                            f"{tuple(y.shape)}; give one score per label, both 1-d.")
        if not np.isfinite(s).all():
            raise AlloError(f"calibration: {int((~np.isfinite(s)).sum())} of the {s.size} scores are not finite.")
        if not np.isin(y, (0, 1)).all():
            raise AlloError("calibration: labels must be 0 or 1.")
        n, n_pos = len(y), int(y.sum())
        if method == "none" or n_pos == 0 or n_pos == n:
            return None
        if method == "platt":
            from sklearn.linear_model import LogisticRegression

            lr = LogisticRegression(C=1e6, max_iter=1000).fit(_logit(s)[:, None], y)
            params = {"a": float(lr.coef_[0, 0]), "b": float(lr.intercept_[0])}
            if params["a"] <= 0:  # scores that do not rank the validation sites: the base rate for every residue
                params = {"a": 0.0, "b": float(np.log(n_pos / (n - n_pos)))}
        else:
            from sklearn.isotonic import IsotonicRegression

            iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip").fit(s, y)
            params = {"x": [float(v) for v in iso.X_thresholds_], "y": [float(v) for v in iso.y_thresholds_]}
        return cls(method, params, n, n_pos)

    def __call__(self, scores: torch.Tensor) -> torch.Tensor:
        """Probabilities [N] of scores [N]."""
        s = scores.detach().double().cpu().numpy()
        if self.method == "platt":
            z = self.params["a"] * _logit(s) + self.params["b"]
            p = 1.0 / (1.0 + np.exp(-z))
        elif self.method == "isotonic":
            p = np.interp(s, self.params["x"], self.params["y"])
        else:
            raise AlloError(f"unknown calibration {self.method!r}")
        return torch.from_numpy(p).float()

    @property
    def levels(self) -> int | None:
        """How many distinct probabilities the map gives the validation residues it was fitted on: 1 for
        a constant map, None for Platt with a positive slope (one per distinct score)."""
        if self.method == "platt":
            return 1 if self.params["a"] == 0 else None
        return len(set(self.params["y"]))

    @property
    def collapsed(self) -> str | None:
        """Why the map is (nearly) constant, or None when it separates residues (see module docstring)."""
        levels = self.levels
        if levels is None or levels >= MIN_LEVELS:
            return None
        values = sorted(set(self.params["y"])) if self.method == "isotonic" else [1 / (1 + np.exp(-self.params["b"]))]
        if levels == 1:
            return (f"the calibrated probability is constant: {values[0]:.4g} for every residue, the base rate of "
                    f"the validation residues it was fitted on ({self.n_pos} sites among {self.n}), because the "
                    "probe's scores do not rank the validation sites (expected with a random backbone such as "
                    "tiny); score still orders residues")
        return (f"the {self.method} calibration gives only {levels} distinct probabilities "
                f"({', '.join(f'{v:.4g}' for v in values)}) on the validation residues it was fitted on "
                f"({self.n_pos} sites among {self.n}): the probe's scores barely rank the validation sites")

    @property
    def warning(self) -> str | None:
        """A ``warning: ...`` line when the map is collapsed, else None."""
        return f"warning: {self.collapsed}" if self.collapsed else None

    @property
    def meaning(self) -> str:
        text = PROBABILITY_MEANING.format(method=self.method, n_pos=self.n_pos, n=self.n)
        return f"{text}; COLLAPSED: {self.collapsed}" if self.collapsed else text

    def to_config(self) -> dict:
        return {"method": self.method, "params": self.params, "n": self.n, "n_pos": self.n_pos,
                "fitted_on": "validation"}

    @classmethod
    def from_config(cls, config: dict | None) -> Calibration | None:
        if not config:
            return None
        method = str(config["method"])
        if method not in ("platt", "isotonic"):
            raise AlloError(f"unknown calibration {method!r}")
        params = dict(config["params"])
        if method == "platt":
            params = {"a": float(params["a"]), "b": float(params["b"])}
            values = list(params.values())
        else:
            params = {"x": [float(v) for v in params["x"]], "y": [float(v) for v in params["y"]]}
            if len(params["x"]) != len(params["y"]) or not params["x"]:
                raise AlloError("isotonic calibration: x and y differ in length")
            values = params["x"] + params["y"]
        if not all(np.isfinite(values)):
            raise AlloError("calibration parameters are not finite")
        return cls(method, params, int(config.get("n", 0)), int(config.get("n_pos", 0)))
