"""Grad-CAM and CAM on a :class:`~vapl.core.backbones.Classifier`, differentiable so that an attention
loss can train the network through them. Plain torch, no Lightning import.

Grad-CAM (Selvaraju et al., 2017) of class ``k`` on a feature map ``F`` [C, h, w]:
``alpha_c = mean_{h,w} d y_k / d F_c`` and ``cam = sum_c alpha_c F_c``. The gradient is taken with
``create_graph=True`` by default, so ``alpha`` itself stays differentiable (the attention loss then
trains the network through both the feature map and the channel weights). CAM (Zhou et al., 2016)
is the special case of a global-average-pooling head: ``cam = sum_c W_fc[k, c] F_c``.

The feature map is the output of one child of ``model.body`` (``layer``, default ``-1``: the last
convolutional stage); the rest of the body, the pooling and the FC layer form the *head* that maps
it to logits.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from vapl.core.backbones import Classifier

CAM_METHODS = ("gradcam", "cam")
NORMALIZATIONS = ("minmax", "relu", "relu_minmax")
#: Each normalisation's epsilon in the denominator: Learning to Look's code uses 1e-8.
_EPS = {"minmax": 1e-6, "relu": 1e-6, "relu_minmax": 1e-8}


def body_index(model: Classifier, layer: int) -> int:
    """``layer`` as a non-negative index into ``model.body``, checked."""
    body = model.body
    if not isinstance(body, nn.Sequential):
        raise ValueError("Grad-CAM needs model.body to be an nn.Sequential of stages")
    n = len(body)
    if not -n <= layer < n:
        raise ValueError(f"CAM layer {layer} is out of range for a body of {n} children")
    return layer % n


def split_classifier(
    model: Classifier, layer: int = -1
) -> tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]:
    """``(front, head)`` with ``model(x) == head(front(x))`` and ``front(x)`` the CAM feature map:
    the output of ``model.body[layer]``."""
    index = body_index(model, layer)
    front = model.body[: index + 1]
    rest = model.body[index + 1 :]

    def head(feature_map: torch.Tensor) -> torch.Tensor:
        return model.fc(model.pool(rest(feature_map)))

    return front, head


def feature_map_and_logits(
    model: Classifier, images: torch.Tensor, layer: int = -1
) -> tuple[torch.Tensor, torch.Tensor]:
    """The CAM feature map [B, C, h, w] (always part of the autograd graph) and the logits [B, K].

    If neither the images nor the layers before ``layer`` require gradients, the feature map is
    made a leaf that does, so Grad-CAM can still be taken (at evaluation, on a frozen model).
    """
    front, head = split_classifier(model, layer)
    feature_map = front(images)
    if not feature_map.requires_grad:
        feature_map = feature_map.detach().requires_grad_(True)
    return feature_map, head(feature_map)


def grad_cam_from_features(
    feature_map: torch.Tensor,
    logits: torch.Tensor,
    targets: torch.Tensor,
    create_graph: bool = True,
) -> torch.Tensor:
    """Raw Grad-CAM [B, h, w] of class ``targets[b]`` for each sample (no ReLU, no scaling).

    ``logits`` must have been computed from ``feature_map``. Samples are independent as long as
    nothing between the feature map and the logits mixes the batch (true for the last stage, and
    for any layer in eval mode). With ``create_graph=False`` the channel weights are constants (as
    in the reference RES code, which reads them from a backward hook) and only the feature map
    carries gradients.
    """
    score = logits.gather(1, targets.view(-1, 1).long()).sum()
    (gradient,) = torch.autograd.grad(
        score, feature_map, create_graph=create_graph, retain_graph=True
    )
    weights = gradient.mean(dim=(2, 3), keepdim=True)
    return (weights * feature_map).sum(dim=1)


def cam_from_features(
    feature_map: torch.Tensor, fc_weight: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """Raw CAM [B, h, w]: ``sum_c W[k, c] F_c`` for a global-average-pooling + linear head."""
    weights = fc_weight[targets.long()]  # [B, C]
    return torch.einsum("bc,bchw->bhw", weights, feature_map)


def grad_cam(
    model: Classifier,
    images: torch.Tensor,
    targets: torch.Tensor | None = None,
    layer: int = -1,
    create_graph: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw Grad-CAM [B, h, w] and logits [B, K]; ``targets=None`` explains the predicted class.

    Needs gradients enabled (wrap evaluation code in ``torch.enable_grad()``).
    """
    if not torch.is_grad_enabled():
        raise RuntimeError("grad_cam needs gradients: call it under torch.enable_grad()")
    feature_map, logits = feature_map_and_logits(model, images, layer)
    if targets is None:
        targets = logits.detach().argmax(dim=1)
    return grad_cam_from_features(feature_map, logits, targets, create_graph), logits


def class_activation_map(
    model: Classifier, images: torch.Tensor, targets: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw CAM [B, h, w] on the last stage and logits [B, K]; ``targets=None``: predicted class.

    For a GAP head, Grad-CAM on the last stage equals this CAM divided by ``h * w``.
    """
    feature_map = model.feature_map(images)
    logits = model.fc(model.pool(feature_map))
    if targets is None:
        targets = logits.detach().argmax(dim=1)
    return cam_from_features(feature_map, model.fc.weight, targets), logits


def normalize_cam(
    cam: torch.Tensor, mode: str = "minmax", eps: float | None = None
) -> torch.Tensor:
    """Scale each map of [B, h, w] into [0, 1).

    ``minmax``: ``(cam - min) / (max(cam - min) + eps)``, what GRADIA and RES train with.
    ``relu``: ``relu(cam) / (max(relu(cam)) + eps)``, the usual Grad-CAM for display.
    ``relu_minmax``: ``relu`` first, then ``minmax`` on the result, what Learning to Look's
    reference code trains with (``scripts/run_guided_CNN.py``, with ``eps = 1e-8``).
    ``eps``: ``None`` takes the mode's own (1e-6; 1e-8 for ``relu_minmax``).
    """
    if mode not in NORMALIZATIONS:
        raise ValueError(f"unknown CAM normalisation {mode!r}; choose one of {NORMALIZATIONS}")
    eps = _EPS[mode] if eps is None else eps
    flat = cam.flatten(1)
    if mode in ("relu", "relu_minmax"):
        flat = torch.relu(flat)
    if mode in ("minmax", "relu_minmax"):
        flat = flat - flat.min(dim=1, keepdim=True).values
    flat = flat / (flat.max(dim=1, keepdim=True).values + eps)
    return flat.view_as(cam)


def upsample_cam(cam: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of [B, h, w] maps to the image size [B, H, W]."""
    if tuple(cam.shape[-2:]) == tuple(size):
        return cam
    return F.interpolate(cam[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


@torch.no_grad()
def feature_stride(model: Classifier, in_channels: int, layer: int = -1, probe: int = 64) -> int:
    """How many image pixels one cell of the CAM feature map spans (4 for ``tiny``, 32 for
    ResNet-18's last stage), measured on a ``probe`` x ``probe`` input in eval mode."""
    front, _ = split_classifier(model, layer)
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        height = front(torch.zeros(1, in_channels, probe, probe, device=device)).shape[-2]
    finally:
        model.train(was_training)
    return max(1, round(probe / height))
