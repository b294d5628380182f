"""The Yes-No baselines (CRAYON, 2024): fine-tune a trained model with yes/no answers.

* :class:`CRAYONAttention`: ``CE + alpha / n_yes * sum_yes relevant + beta / n_no * sum_no
  irrelevant`` on the current Grad-CAM against the stored Grad-CAM of the original model
  (:mod:`vapl.core.yesno`); all parameters are fine-tuned.
* :class:`CRAYONPruning`: the neurons of the last convolutional stage answered "no" are masked in
  the feature map (training, validation, test, predict); only the FC layer is retrained with CE.
* :class:`CRAYON`: both: the mask applied (so the Grad-CAM of a pruned channel is zero) and all
  parameters fine-tuned with the attention loss.

Each starts from ``init_checkpoint`` (a Baseline checkpoint or a classifier state dict). The
answers CSV and the stored maps (``maps``, default ``maps.pt`` next to the answers) come from
``vapl crayon export`` and ``vapl crayon answer`` (see :mod:`vapl.apps.crayon_annotation` and docs/method.md); they
are read when fitting starts, so a saved checkpoint (which holds the mask) tests and predicts
without them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from vapl.core.backbones import Classifier
from vapl.core.errors import MissingPathError
from vapl.core.saliency import feature_map_and_logits, grad_cam_from_features
from vapl.core.yesno import (
    MAYBE,
    NO,
    YES,
    NeuronMask,
    read_answers,
    scale_to_max,
    yesno_attention_loss,
)
from vapl.methods.base import Baseline

MAPS_FILE = "maps.pt"


def load_classifier_state(model: Classifier, path: str | Path) -> None:
    """Load a Lightning checkpoint of a single-model method (its ``model.*`` weights) or a plain
    :class:`Classifier` state dict into ``model``; only a pruning mask may be missing."""
    path = Path(path)
    if not path.is_file():
        raise MissingPathError(f"init checkpoint {path} does not exist")
    # A trusted local file: Lightning checkpoints hold more than tensors.
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: neither a Lightning checkpoint nor a state dict")
    if any(key.startswith("model.") for key in state):
        state = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [key for key in missing if not key.endswith(".mask")]
    if missing or unexpected:
        raise ValueError(
            f"{path}: does not fit the {type(model).__name__} "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}); same backbone and classes?"
        )


class YesNoGuided(Baseline):
    """Shared wiring of the three CRAYON variants (set by the class attributes).

    Args:
        answers: the answers CSV (``vapl crayon answer`` or a human's, see docs/method.md).
        maps: the stored Grad-CAMs of the original model (``maps.pt`` of ``vapl crayon export``);
            default: ``maps.pt`` in the answers file's folder. Only the attention variants read it.
        init_checkpoint: the original model, a Baseline checkpoint or a classifier state dict.
        alpha: weight of the relevant-image term, divided by the number of "yes" images.
        beta: weight of the irrelevant-image term, divided by the number of "no" images.
        second_order: differentiate through the Grad-CAM channel weights (the reference does).
        **kwargs: the settings every method shares (:class:`~vapl.methods.base.MethodModule`).
    """

    use_attention: bool = True
    use_pruning: bool = False
    train_only_fc: bool = False

    def __init__(
        self,
        answers: str | None = None,
        maps: str | None = None,
        init_checkpoint: str | None = None,
        alpha: float = 100.0,
        beta: float = 10.0,
        second_order: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # The mask is the last child of the body: every feature map (training, Grad-CAM, metrics)
        # is the masked one, and its buffer travels in the checkpoint.
        self.model.body.append(NeuronMask(self.model.num_features))
        if self.train_only_fc:
            for parameter in self.model.body.parameters():
                parameter.requires_grad_(False)
        self.alpha_per_answer = 0.0
        self.beta_per_answer = 0.0
        self.map_rows: dict[str, int] = {}
        self.stored_maps = torch.zeros(0)
        self.image_answers = torch.zeros(0, dtype=torch.int8)

    @property
    def neuron_mask(self) -> NeuronMask:
        """The pruning mask: the last child of ``model.body`` (saved as ``model.body.N.mask``)."""
        return self.model.body[-1]

    # ----- set-up from the export and the answers ---------------------------------------------
    def setup(self, stage: str) -> None:
        if stage != "fit":
            return
        hp = self.hparams
        if hp.init_checkpoint:
            load_classifier_state(self.model, hp.init_checkpoint)
        if not hp.answers:
            raise ValueError(f"{type(self).__name__} needs answers=<answers CSV> to fit")
        maps = None
        if self.use_attention:
            maps_path = Path(hp.maps) if hp.maps else Path(hp.answers).parent / MAPS_FILE
            if not maps_path.is_file():
                raise MissingPathError(f"stored Grad-CAMs {maps_path} do not exist (maps=...)")
            maps = torch.load(maps_path, map_location="cpu", weights_only=True)
        answers = read_answers(
            hp.answers,
            image_ids=None if maps is None else maps["ids"],
            num_neurons=self.model.num_features,
        )
        if self.use_pruning:
            self.neuron_mask.mask.copy_(answers.neuron_mask(self.model.num_features))
        if maps is not None:
            self.map_rows = {key: row for row, key in enumerate(maps["ids"])}
            self.stored_maps = maps["maps"].float()
            self.image_answers = answers.image_codes(maps["ids"])
            counts = answers.counts("image")
            self.alpha_per_answer = hp.alpha / max(counts["yes"], 1)
            self.beta_per_answer = hp.beta / max(counts["no"], 1)

    def stored_for(self, ids: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Answers int8 [B] (maybe where an id was not exported) and stored maps [B, h, w]."""
        rows = torch.tensor([self.map_rows.get(key, -1) for key in ids], dtype=torch.long)
        known = rows >= 0
        codes = torch.full((len(ids),), MAYBE, dtype=torch.int8)
        codes[known] = self.image_answers[rows[known]]
        maps = self.stored_maps[rows.clamp_min(0)] if len(self.stored_maps) else None
        return codes.to(self.device), maps

    # ----- training ----------------------------------------------------------------------------
    def train(self, mode: bool = True) -> YesNoGuided:
        super().train(mode)
        if self.train_only_fc:
            self.model.body.eval()  # frozen: batch-norm statistics stay the original model's
        return self

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.train_only_fc:
            return self.make_optimizer(self.model.fc.parameters())
        return self.make_optimizer(self.parameters())

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        images, labels = batch["image"], batch["label"]
        if self.train_only_fc:
            # Lightning restores each submodule's mode after validation: set it here, each step.
            self.model.body.eval()
            with torch.no_grad():
                feature_map = self.model.body(images)
            logits = self.model.fc(self.model.pool(feature_map))
        else:
            feature_map, logits = feature_map_and_logits(self.model, images)
        loss_pred = F.cross_entropy(logits, labels)
        loss_yes = loss_no = logits.sum() * 0
        if self.use_attention:
            codes, stored = self.stored_for(list(batch["id"]))
            rows = torch.nonzero((codes == YES) | (codes == NO), as_tuple=True)[0]
            if rows.numel():
                stored = stored[rows.cpu()].to(feature_map)
                if stored.shape[-2:] != feature_map.shape[-2:]:
                    raise ValueError(
                        f"stored Grad-CAMs are {tuple(stored.shape[-2:])}, the feature map is "
                        f"{tuple(feature_map.shape[-2:])}: export at the same image size"
                    )
                raw = grad_cam_from_features(
                    feature_map, logits, labels, create_graph=self.hparams.second_order
                )
                loss_yes, loss_no = yesno_attention_loss(
                    scale_to_max(raw[rows]),
                    stored,
                    codes[rows],
                    self.alpha_per_answer,
                    self.beta_per_answer,
                )
        loss = loss_pred + loss_yes + loss_no

        size = len(labels)
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=size)
        self.log("train/loss_pred", loss_pred.detach(), batch_size=size)
        if self.use_attention:
            self.log("train/loss_yes", loss_yes.detach(), batch_size=size)
            self.log("train/loss_no", loss_no.detach(), batch_size=size)
        self.update_metrics("train", "unprompted", logits.detach().argmax(dim=1), labels)
        return loss


class CRAYONAttention(YesNoGuided):
    """CRAYON-Attention: CE plus the yes/no attention terms; all parameters fine-tuned."""

    use_attention = True
    use_pruning = False
    train_only_fc = False


class CRAYONPruning(YesNoGuided):
    """CRAYON-Pruning: "no" neurons masked, the FC layer retrained with CE (body frozen)."""

    use_attention = False
    use_pruning = True
    train_only_fc = True


class CRAYON(YesNoGuided):
    """CRAYON-Attention+Pruning: the mask applied and the attention loss on the masked Grad-CAM."""

    use_attention = True
    use_pruning = True
    train_only_fc = False
