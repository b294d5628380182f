"""The CAM-guided baselines of the RES paper (Gao et al., KDD 2022): GRADIA, HAICS, RES-G, RES-L.

Each is the Baseline plus an attention loss on its differentiable Grad-CAM: for the training samples
that carry a prompt, the Grad-CAM of the true class on the last convolutional stage is min-max
normalised and compared with the prompt brought to the CAM's resolution (see ``vapl/core/losses.py``
and docs/method.md for the losses as implemented and where they differ from the reference code).

``loss = CE(f(I), y) + attention_weight * L_attention``. Validation and test report the same
metrics as every other method (cross-entropy, classification, explanation metrics).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from vapl.core.losses import (
    RES_FACTUAL,
    FactualImputation,
    coarse_annotation,
    gradia_loss,
    haics_loss,
    res_encoding,
    res_g_loss,
    res_l_loss,
)
from vapl.core.saliency import (
    CAM_METHODS,
    NORMALIZATIONS,
    body_index,
    cam_from_features,
    feature_map_and_logits,
    feature_stride,
    grad_cam_from_features,
    normalize_cam,
)
from vapl.methods.base import Baseline


class CAMGuided(Baseline):
    """Shared training step of the CAM-guided methods; subclasses define :meth:`attention_loss`.

    Args:
        attention_weight: weight of the attention loss (the reference code adds it with weight 1).
        cam_layer: index of the ``body`` child whose output is the CAM feature map (-1: last stage).
        cam_method: ``gradcam`` or ``cam`` (plain CAM; only on the last stage of a GAP head).
        cam_normalization: ``minmax`` (the RES reference's), ``relu`` or ``relu_minmax``.
        second_order: take the Grad-CAM gradient with ``create_graph=True``, so the channel weights
            are trained too; ``False`` treats them as constants, as the reference code does.
        **kwargs: the settings every method shares (:class:`~vapl.methods.base.MethodModule`).
    """

    def __init__(
        self,
        attention_weight: float = 1.0,
        cam_layer: int = -1,
        cam_method: str = "gradcam",
        cam_normalization: str = "minmax",
        second_order: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if cam_method not in CAM_METHODS:
            raise ValueError(f"unknown cam_method {cam_method!r}; choose one of {CAM_METHODS}")
        if cam_normalization not in NORMALIZATIONS:
            raise ValueError(
                f"unknown cam_normalization {cam_normalization!r}; choose one of {NORMALIZATIONS}"
            )
        layer = body_index(self.model, cam_layer)
        if cam_method == "cam" and layer != len(self.model.body) - 1:
            raise ValueError("cam_method='cam' needs the last stage (cam_layer=-1)")
        self.cam_layer = layer

    # ----- the attention loss -----------------------------------------------------------------
    def attention_loss(
        self,
        cam: torch.Tensor,
        factual: torch.Tensor,
        counterfactual: torch.Tensor,
        res_map: torch.Tensor,
    ) -> torch.Tensor:
        """The method's loss on normalised CAMs [b, h, w]. ``factual``/``counterfactual`` are the
        annotation's area fractions per CAM cell; ``res_map`` the full-size RES map [b, H, W]."""
        raise TypeError(f"{type(self).__name__} defines no attention loss of the RES family")

    def training_cam(
        self,
        feature_map: torch.Tensor,
        logits: torch.Tensor,
        labels: torch.Tensor,
        rows: torch.Tensor,
    ) -> torch.Tensor:
        """Normalised CAM [b, h, w] of the true class for the selected rows, in the graph."""
        hp = self.hparams
        if hp.cam_method == "cam":
            raw = cam_from_features(feature_map[rows], self.model.fc.weight, labels[rows])
        else:
            # Between the last stage and the logits samples are independent, so the selected rows'
            # maps do not depend on the other rows' scores joining the sum (on an earlier stage in
            # training mode, batch norm couples the samples of a batch either way).
            raw = grad_cam_from_features(feature_map, logits, labels, create_graph=hp.second_order)
            raw = raw[rows]
        return normalize_cam(raw, hp.cam_normalization)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        images, labels = batch["image"], batch["label"]
        feature_map, logits = feature_map_and_logits(self.model, images, self.cam_layer)
        loss_pred = F.cross_entropy(logits, labels)
        rows = torch.nonzero(batch["has_prompt"], as_tuple=True)[0]
        if rows.numel():
            cam = self.training_cam(feature_map, logits, labels, rows)
            res_map = res_encoding(batch["prompt"][rows])
            factual, counterfactual = coarse_annotation(res_map, tuple(cam.shape[-2:]))
            loss_attention = self.attention_loss(cam, factual, counterfactual, res_map)
        else:
            loss_attention = (logits * 0).sum()
        loss = loss_pred + self.hparams.attention_weight * loss_attention

        size = len(labels)
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=size)
        self.log("train/loss_pred", loss_pred.detach(), batch_size=size)
        self.log("train/loss_attention", loss_attention.detach(), batch_size=size)
        self.update_metrics("train", "unprompted", logits.detach().argmax(dim=1), labels)
        return loss


class GRADIA(CAMGuided):
    """GRADIA (Gao et al., 2022): mean absolute error of the CAM to the positive map."""

    def attention_loss(
        self,
        cam: torch.Tensor,
        factual: torch.Tensor,
        counterfactual: torch.Tensor,
        res_map: torch.Tensor,
    ) -> torch.Tensor:
        return gradia_loss(cam, factual)


class HAICS(CAMGuided):
    """HAICS (Shen et al., 2021): binary cross-entropy to the positive map on annotated cells."""

    def attention_loss(
        self,
        cam: torch.Tensor,
        factual: torch.Tensor,
        counterfactual: torch.Tensor,
        res_map: torch.Tensor,
    ) -> torch.Tensor:
        return haics_loss(cam, factual, counterfactual)


class RESG(CAMGuided):
    """RES-G: the robust term plus the distance to a Gaussian-smoothed positive map.

    Args:
        eta: tolerance of the robust term (RES default 0).
        sharpness: sharpness of the robust term's tanh (RES default 5).
        smoothing_kernel: size of the Gaussian kernel that smooths the positive map (3).
        smoothing_sigma: its sigma; ``None``: what the reference's ``cv2.GaussianBlur(..., 0)``
            uses, ``[1, 2, 1] / 4`` for size 3.
        **kwargs: :class:`CAMGuided`'s arguments.
    """

    def __init__(
        self,
        eta: float = 0.0,
        sharpness: float = 5.0,
        smoothing_kernel: int = 3,
        smoothing_sigma: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)

    def attention_loss(
        self,
        cam: torch.Tensor,
        factual: torch.Tensor,
        counterfactual: torch.Tensor,
        res_map: torch.Tensor,
    ) -> torch.Tensor:
        hp = self.hparams
        return res_g_loss(
            cam,
            factual,
            counterfactual,
            eta=hp.eta,
            sharpness=hp.sharpness,
            kernel_size=hp.smoothing_kernel,
            sigma=hp.smoothing_sigma,
        )


class RESL(CAMGuided):
    """RES-L: the robust term plus the distance to a learned imputation of the positive map.

    Args:
        eta: tolerance of the robust term (RES default 0).
        sharpness: sharpness of the robust term's tanh (RES default 5).
        imputation_stride: the imputation convolution's stride; ``None``: the CAM layer's
            feature stride, measured.
        imputation_reg: weight of the imputation's squared error to the positive map (RES
            default 0).
        **kwargs: :class:`CAMGuided`'s arguments.
    """

    def __init__(
        self,
        eta: float = 0.0,
        sharpness: float = 5.0,
        imputation_stride: int | None = None,
        imputation_reg: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if imputation_stride is None:
            imputation_stride = feature_stride(self.model, self.hparams.in_channels, self.cam_layer)
        self.imputation = FactualImputation(imputation_stride)

    def attention_loss(
        self,
        cam: torch.Tensor,
        factual: torch.Tensor,
        counterfactual: torch.Tensor,
        res_map: torch.Tensor,
    ) -> torch.Tensor:
        hp = self.hparams
        imputed = self.imputation((res_map == RES_FACTUAL).float(), tuple(cam.shape[-2:]))
        return res_l_loss(
            cam,
            factual,
            counterfactual,
            imputed,
            eta=hp.eta,
            sharpness=hp.sharpness,
            imputation_reg=hp.imputation_reg,
        )
