"""Metrics under the names every method logs (see docs/architecture.md).

Classification: acc, precision, recall and f1 (:func:`classification_metrics`).

Explanation: how well a model's Grad-CAM matches a ground-truth explanation.
* IoU: the Grad-CAM, min-max normalised, upsampled to the image and thresholded (at 0.5, as the
  RES evaluation does), against the explanation (> 0.5); one value per sample.
* Pointing game (Zhang et al., 2018): 1 if the Grad-CAM's maximum lies inside the explanation.

Samples whose explanation is empty have neither (there is nothing to point at). Every method is
scored the same way, on its last convolutional stage and for the class it predicts, so the numbers
compare across methods. Plain torch, no Lightning import.
"""

from __future__ import annotations

import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryF1Score,
    BinaryPrecision,
    BinaryRecall,
    MulticlassAccuracy,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from vapl.core.backbones import Classifier
from vapl.core.saliency import grad_cam, grad_cam_from_features, normalize_cam, upsample_cam

METRIC_NAMES = ("acc", "precision", "recall", "f1")


def classification_metrics(num_classes: int) -> MetricCollection:
    """acc, precision, recall and f1 of predicted classes: binary (class 1 positive) for two
    classes, macro averages for more. Updated with ``(predicted class, label)``."""
    if num_classes == 2:
        return MetricCollection(
            {
                "acc": BinaryAccuracy(),
                "precision": BinaryPrecision(),
                "recall": BinaryRecall(),
                "f1": BinaryF1Score(),
            }
        )
    kwargs = {"num_classes": num_classes, "average": "macro"}
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes=num_classes, average="micro"),
            "precision": MulticlassPrecision(**kwargs),
            "recall": MulticlassRecall(**kwargs),
            "f1": MulticlassF1Score(**kwargs),
        }
    )


IOU_THRESHOLD = 0.5
EXPLANATION_METRICS = ("iou", "pointing")


def explanation_present(explanation: torch.Tensor) -> torch.Tensor:
    """Bool [B]: the sample's explanation marks at least one pixel."""
    return (explanation > 0.5).flatten(1).any(dim=1)


def saliency_iou(
    saliency: torch.Tensor, explanation: torch.Tensor, threshold: float = IOU_THRESHOLD
) -> torch.Tensor:
    """IoU [B] of ``saliency > threshold`` with ``explanation > 0.5`` (both [B, H, W]).

    Zero where both are empty; callers keep only samples with an explanation.
    """
    predicted = (saliency > threshold).flatten(1)
    truth = (explanation > 0.5).flatten(1)
    intersection = (predicted & truth).sum(dim=1).float()
    union = (predicted | truth).sum(dim=1).float()
    return intersection / union.clamp_min(1.0)


def pointing_game(saliency: torch.Tensor, explanation: torch.Tensor) -> torch.Tensor:
    """1.0 where the saliency's maximum (the first one, in row-major order) lies in the
    explanation, else 0.0; [B]."""
    peak = saliency.flatten(1).argmax(dim=1, keepdim=True)
    return (explanation.flatten(1) > 0.5).gather(1, peak)[:, 0].float()


def explanation_scores(
    model: Classifier,
    images: torch.Tensor,
    explanation: torch.Tensor,
    targets: torch.Tensor | None = None,
    layer: int = -1,
    threshold: float = IOU_THRESHOLD,
    feature_map: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """``{"iou": [b], "pointing": [b]}`` over the ``b`` samples that have an explanation.

    Explains ``targets`` (default: the predicted class). Works wherever it is called: inside
    ``torch.no_grad()`` or ``torch.inference_mode()`` (Lightning's validation and test) it leaves
    them for the Grad-CAM pass. The returned values are detached. ``feature_map``: the model's
    last-stage feature map of ``images`` from a forward pass already made (``layer=-1`` only);
    Grad-CAM then runs the head alone instead of the whole network again.
    """
    rows = explanation_present(explanation)
    if not bool(rows.any()):
        empty = explanation.new_zeros(0)
        return {"iou": empty, "pointing": empty.clone()}
    with torch.inference_mode(False), torch.enable_grad():
        # Tensors made under inference mode cannot enter autograd; their clones can.
        if targets is not None:
            targets = targets[rows].clone()
        if feature_map is None:
            cam, _ = grad_cam(model, images[rows].clone(), targets, layer=layer, create_graph=False)
        else:
            if layer != -1:
                raise ValueError("a feature map given is the last stage's: layer must be -1")
            leaf = feature_map[rows].detach().clone().requires_grad_(True)
            logits = model.fc(model.pool(leaf))
            if targets is None:
                targets = logits.detach().argmax(dim=1)
            cam = grad_cam_from_features(leaf, logits, targets, create_graph=False)
        saliency = upsample_cam(normalize_cam(cam.detach()), tuple(explanation.shape[-2:]))
    truth = explanation[rows]
    return {
        "iou": saliency_iou(saliency, truth, threshold),
        "pointing": pointing_game(saliency, truth),
    }
