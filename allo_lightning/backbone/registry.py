"""The one table of backbones: name -> family, shape, context limit and where the weights come from.
The loader, the benchmark and the docs all read it (no parallel tables). A leaf: the model modules
(esmc, esm2) import it; the family -> builder table that builds them lives above, in ``builders``
(as evolutionaryscale's ``pretrained.py``), so no model module imports what imports it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class BackboneSpec:
    """One backbone.

    Args:
        name: the ``--model.backbone`` value.
        family: ``esmc`` (EvolutionaryScale ``esm`` package) or ``esm2`` (transformers' ``EsmModel``).
        d_model: hidden size.
        n_heads: attention heads per layer.
        n_layers: transformer layers.
        max_length: residues per forward pass (without BOS/EOS): the context the model was trained on.
        hub: Hugging Face hub repository (ESM-2) or ``esm`` data folder (ESM-C); None for tiny models.
        weights_file: the weights file inside the hub snapshot (ESM-C).
        tiny: a random model built in code for tests (its scores mean nothing).
    """

    name: str
    family: Literal["esmc", "esm2"]
    d_model: int
    n_heads: int
    n_layers: int
    max_length: int
    hub: str | None = None
    weights_file: str | None = None
    tiny: bool = False

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.d_model, self.n_heads, self.n_layers

    @property
    def n_params_approx(self) -> int:
        """Transformer parameters (12 d^2 per layer for ESM-2's 4x MLP; ESM-C's SwiGLU is close)."""
        return 12 * self.n_layers * self.d_model**2


ESMC_MAX_LENGTH = 2048  # ESM-C was trained on sequences up to 2048 residues
ESM2_MAX_LENGTH = 1022  # 1024 positions minus BOS/EOS

REGISTRY: dict[str, BackboneSpec] = {s.name: s for s in (
    BackboneSpec("esmc_300m", "esmc", 960, 15, 30, ESMC_MAX_LENGTH, "esmc-300",
                 "data/weights/esmc_300m_2024_12_v0.pth"),
    BackboneSpec("esmc_600m", "esmc", 1152, 18, 36, ESMC_MAX_LENGTH, "esmc-600",
                 "data/weights/esmc_600m_2024_12_v0.pth"),
    BackboneSpec("tiny", "esmc", 64, 4, 2, ESMC_MAX_LENGTH, tiny=True),
    BackboneSpec("esm2_tiny", "esm2", 64, 4, 2, ESM2_MAX_LENGTH, tiny=True),
    BackboneSpec("esm2_t6_8m", "esm2", 320, 20, 6, ESM2_MAX_LENGTH, "facebook/esm2_t6_8M_UR50D"),
    BackboneSpec("esm2_t12_35m", "esm2", 480, 20, 12, ESM2_MAX_LENGTH, "facebook/esm2_t12_35M_UR50D"),
    BackboneSpec("esm2_t30_150m", "esm2", 640, 20, 30, ESM2_MAX_LENGTH, "facebook/esm2_t30_150M_UR50D"),
    BackboneSpec("esm2_t33_650m", "esm2", 1280, 20, 33, ESM2_MAX_LENGTH, "facebook/esm2_t33_650M_UR50D"),
)}

BACKBONES = tuple(REGISTRY)


def spec_of(name: str) -> BackboneSpec:
    from ..errors import BackboneError

    spec = REGISTRY.get(name.lower())
    if spec is None:
        raise BackboneError(f"unknown backbone {name!r}. Choose one of: {', '.join(BACKBONES)}.")
    return spec
