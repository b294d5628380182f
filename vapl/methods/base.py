"""What every method shares: metrics under the common keys, the optimizer, and the Baseline."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import nn
from torchmetrics import MeanMetric

from vapl.core.backbones import Classifier, build_backbone
from vapl.core.metrics import EXPLANATION_METRICS, classification_metrics, explanation_scores
from vapl.core.optim import adam

STAGES = ("train", "val", "test")
EXPLANATION_STAGES = ("val", "test")


class MethodModule(LightningModule):
    """Base of every method's LightningModule.

    A method reports one or more *heads* (``prompted``, ``unprompted``); each head's metrics are
    logged as ``{stage}/{head}/{metric}`` at the end of every epoch. A single-model method also logs
    its ``unprompted`` head as ``{stage}/{metric}``.

    Where a validation or test batch has an ``explanation``, each head's Grad-CAM is scored against
    it (``{stage}/{head}/iou`` and ``{stage}/{head}/pointing``, see :mod:`vapl.core.metrics`)
    unless ``explanation_metrics=False``. :meth:`explanation_heads` says which network explains
    which head; by default a method's ``self.model`` explains ``unprompted``.

    :attr:`selection_metric` is the validation key that chooses the checkpoint a run is tested
    with (:class:`vapl.training.checkpoints.RunCheckpoint`; ``--checkpoint.monitor`` overrides it).
    """

    heads: tuple[str, ...] = ("unprompted",)
    single_model: bool = True
    #: The validation metric whose best epoch is kept and tested.
    selection_metric: str = "val/acc"

    def __init__(
        self,
        num_classes: int = 2,
        in_channels: int = 3,
        backbone: str = "resnet18",
        backbone_weights: str | None = None,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        explanation_metrics: bool = True,
    ) -> None:
        """Settings every method shares; subclasses take their own and forward these by keyword.

        Args:
            num_classes: number of classes (the CLI links it to the datamodule's).
            in_channels: image channels (the CLI links it to the datamodule's).
            backbone: ``resnet18`` or ``tiny`` (a small CNN for tests and the demo).
            backbone_weights: a local file of pretrained weights for the backbone; ``None``:
                random initialisation. Never downloaded.
            lr: Adam's learning rate.
            weight_decay: Adam's weight decay.
            explanation_metrics: score each head's Grad-CAM against the batch's explanation in
                validation and test (IoU and pointing game), where the data set has one.
        """
        super().__init__()
        # Every subclass's arguments too: this collects the __init__ frames of the whole chain.
        self.save_hyperparameters()
        self.metrics = nn.ModuleDict(
            {
                f"{stage}_{head}": classification_metrics(num_classes)
                for stage in STAGES
                for head in self.heads
            }
        )
        self.explanation_scores = nn.ModuleDict(
            {
                f"{stage}_{head}_{name}": MeanMetric()
                for stage in EXPLANATION_STAGES
                for head in self.heads
                for name in EXPLANATION_METRICS
            }
        )

    def make_backbone(self) -> Classifier:
        hp = self.hparams
        return build_backbone(
            hp.backbone,
            num_classes=hp.num_classes,
            in_channels=hp.in_channels,
            weights=hp.backbone_weights,
        )

    # ----- metrics -------------------------------------------------------------------------
    def update_metrics(
        self, stage: str, head: str, predictions: torch.Tensor, labels: torch.Tensor
    ) -> None:
        """Add a batch of predicted classes to ``{stage}/{head}``'s metrics."""
        self.metrics[f"{stage}_{head}"].update(predictions, labels)

    def _log_epoch_metrics(self, stage: str) -> None:
        for head in self.heads:
            collection = self.metrics[f"{stage}_{head}"]
            if not any(m.update_count for m in collection.values()):
                continue
            values = collection.compute()  # synced across DDP processes by torchmetrics
            for name, value in values.items():
                self.log(f"{stage}/{head}/{name}", value, sync_dist=True)
                if self.single_model and head == "unprompted":
                    self.log(f"{stage}/{name}", value, sync_dist=True)
            collection.reset()
        self._log_explanation_metrics(stage)

    # ----- explanation metrics -------------------------------------------------------------
    def explanation_heads(
        self, batch: dict[str, Any], outputs: Any
    ) -> dict[str, tuple[Classifier, torch.Tensor, torch.Tensor | None]]:
        """``head -> (network, the images it sees, rows or None for all)`` whose Grad-CAM is
        scored against the batch's explanation. ``outputs`` is what the step returned; where it
        holds ``outputs["feature_maps"][head]`` (the network's last-stage feature maps of those
        rows' images, from the step's own forward pass) Grad-CAM reuses them instead of running
        the network again."""
        model = getattr(self, "model", None)
        return (
            {"unprompted": (model, batch["image"], None)} if isinstance(model, Classifier) else {}
        )

    def _update_explanation_metrics(self, stage: str, batch: Any, outputs: Any) -> None:
        if not self.hparams.explanation_metrics or not isinstance(batch, dict):
            return
        if batch.get("explanation") is None:
            return
        computed = outputs.get("feature_maps", {}) if isinstance(outputs, dict) else {}
        for head, (model, images, rows) in self.explanation_heads(batch, outputs).items():
            explanation = batch["explanation"]
            if rows is not None:
                images, explanation = images[rows], explanation[rows]
            scores = explanation_scores(model, images, explanation, feature_map=computed.get(head))
            for name, values in scores.items():
                if values.numel():
                    self.explanation_scores[f"{stage}_{head}_{name}"].update(values)

    def _log_explanation_metrics(self, stage: str) -> None:
        if stage not in EXPLANATION_STAGES:
            return
        for head in self.heads:
            for name in EXPLANATION_METRICS:
                metric = self.explanation_scores[f"{stage}_{head}_{name}"]
                if not metric.update_count:
                    continue
                value = metric.compute()
                self.log(f"{stage}/{head}/{name}", value)
                if self.single_model and head == "unprompted":
                    self.log(f"{stage}/{name}", value)
                metric.reset()

    def on_validation_batch_end(
        self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._update_explanation_metrics("val", batch, outputs)

    def on_test_batch_end(
        self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._update_explanation_metrics("test", batch, outputs)

    def on_train_epoch_end(self) -> None:
        self._log_epoch_metrics("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    # ----- optimisation --------------------------------------------------------------------
    def make_optimizer(self, parameters: Any, lr: float | None = None) -> torch.optim.Optimizer:
        """Adam, fused where the device supports it (:func:`vapl.core.optim.adam`)."""
        hp = self.hparams
        return adam(parameters, lr=hp.lr if lr is None else lr, weight_decay=hp.weight_decay)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.make_optimizer(self.parameters())


class Baseline(MethodModule):
    """The backbone trained with cross-entropy only: the reference every method is compared with."""

    def __init__(self, **kwargs: Any) -> None:
        """Args: those of :class:`MethodModule`."""
        super().__init__(**kwargs)
        self.model = self.make_backbone()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def _shared_step(self, batch: dict[str, Any], stage: str) -> dict[str, Any]:
        feature_map = self.model.feature_map(batch["image"])
        logits = self.model.fc(self.model.pool(feature_map))
        loss = F.cross_entropy(logits, batch["label"])
        self.log(
            f"{stage}/loss",
            loss,
            prog_bar=stage == "train",
            batch_size=len(logits),
            sync_dist=stage != "train",  # epoch means over all processes
        )
        self.update_metrics(stage, "unprompted", logits.argmax(dim=1), batch["label"])
        return {"loss": loss, "feature_maps": {"unprompted": feature_map}}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")["loss"]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return self._shared_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return self._shared_step(batch, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        probs = torch.softmax(self.model(batch["image"]), dim=1)
        return {
            "id": list(batch["id"]),
            "unprompted_pred": probs.argmax(dim=1),
            "unprompted_probs": probs,
        }
