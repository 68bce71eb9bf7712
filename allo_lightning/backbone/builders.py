"""The factory above the model modules: family -> how to build its ``nn.Module`` and wrap it as a
:class:`Backbone` (as evolutionaryscale's ``pretrained.py`` keeps its ``dict[name, builder]``). The model
modules never import this one; they read the spec table in ``registry``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from .base import Backbone
from .esm2 import ESM2Backbone, build_esm2
from .esmc import ESMCBackbone, build_esmc
from .registry import BackboneSpec


@dataclass(frozen=True)
class Family:
    """How one family's backbone is made: ``build(spec, device)`` -> ``nn.Module``, and the
    :class:`Backbone` class that wraps it (``cls(model, name)``)."""

    build: Callable[[BackboneSpec, str], nn.Module]
    backbone: type[Backbone]


FAMILIES: dict[str, Family] = {
    "esmc": Family(lambda spec, device: build_esmc(spec.d_model, spec.n_heads, spec.n_layers, device=device),
                   ESMCBackbone),
    "esm2": Family(lambda spec, device: build_esm2(spec, device=device), ESM2Backbone),
}


def build_model(spec: BackboneSpec, device: str = "cpu") -> nn.Module:
    """The family's ``nn.Module`` of this shape, built on ``device`` (``"meta"``: no memory, to be
    filled by ``load_state_dict(assign=True)``); random init on a real device."""
    return FAMILIES[spec.family].build(spec, device)


def wrap(spec: BackboneSpec, model: nn.Module) -> Backbone:
    """The :class:`Backbone` of the family around ``model``."""
    return FAMILIES[spec.family].backbone(model, spec.name)
