"""Training losses. Plain torch, no Lightning import.

VAPL's co-training terms (eq. 5 to 7) live here; the attention losses of the baselines join them.
"""

from __future__ import annotations

import torch
from torch import nn


def parameter_distance(
    model_a: nn.Module, model_b: nn.Module, layer_types: tuple[type[nn.Module], ...] = (nn.Conv2d,)
) -> torch.Tensor:
    """Eq. 6, ``L_Param``: the sum over conv layers of ``||W_a - W_b||_F^2`` (a sum, not a mean).

    The two models must have the same architecture; layers are paired by name.
    """
    layers_b = dict(model_b.named_modules())
    total = None
    for name, layer_a in model_a.named_modules():
        if not isinstance(layer_a, layer_types):
            continue
        layer_b = layers_b.get(name)
        if layer_b is None or layer_b.weight.shape != layer_a.weight.shape:
            raise ValueError(
                f"layer {name!r} has no counterpart of the same shape in the other model"
            )
        term = (layer_a.weight - layer_b.weight).pow(2).sum()
        total = term if total is None else total + term
    if total is None:
        raise ValueError("the models have no layer of the types compared")
    return total


def activation_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> torch.Tensor:
    """Eq. 7, ``L_Activ``: ``||S_a - S_b||^2`` summed over feature dimensions, averaged over the batch.

    The per-sample squared norm is the paper's sum; the batch mean keeps it independent of the
    batch size.
    """
    return (features_a - features_b).pow(2).flatten(1).sum(dim=1).mean()
