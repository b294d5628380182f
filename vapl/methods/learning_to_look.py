"""The VLM-guided baseline "Learning to Look" (Yang, Bhusal and Rastogi, 2025).

A vision-language model draws an attention map for every training image from a text prompt
(:mod:`vapl.vlm.maps`); the classifier's Grad-CAM of the true class is aligned with it:

``loss = CE(f(I), y) + lambda * KL(P || softmax(cam))`` with ``P`` the map, brought to the CAM's
resolution by average pooling, as a distribution over cells and ``cam`` the Grad-CAM passed through
a ReLU and then min-max normalised, as the reference code does
(:func:`vapl.core.losses.attention_kl_loss`). Every training image gets a map; no human
annotation (``prompt``) is used.

The maps are computed once per training image before the first epoch and cached on disk
(:mod:`vapl.vlm.cache`, keyed by model, prompts and image), or on the fly (``map_cache=False``).
They are looked up by sample id, so any datamodule of the sample contract works.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from vapl.core.losses import attention_kl_loss
from vapl.core.saliency import feature_map_and_logits
from vapl.methods.cam import CAMGuided
from vapl.vlm.cache import MapCache

if TYPE_CHECKING:
    from vapl.vlm.maps import VLMMapGenerator

log = logging.getLogger(__name__)

SCHEDULES = ("constant", "reference")
#: Where the maps come from: a VLM, or the data's ground-truth ``explanation`` (an oracle VLM).
MAP_SOURCES = ("vlm", "explanation")
WARMUP_PHASES = ("ce", "attention")


def loss_weights(
    epoch: int,
    attention_weight: float,
    schedule: str = "constant",
    warmup_epochs: int = 0,
    warmup_phase: str = "ce",
    growth: float | None = None,
) -> tuple[float, float]:
    """``(weight of CE, lambda)`` for an epoch (0-based).

    ``constant``: ``(1, attention_weight)`` throughout. ``reference``: for ``warmup_epochs`` epochs
    only one term trains (``warmup_phase`` ``ce``: ``(1, 0)``; ``attention``: ``(0,
    attention_weight)``), then ``lambda = attention_weight + growth * (epoch - warmup_epochs)``.
    ``growth=None`` is the reference code's ``attention_weight / 10`` per epoch (its
    ``kl_incr = kl_lambda / 10``, added at each epoch after the attention epoch).
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown lambda schedule {schedule!r}; choose one of {SCHEDULES}")
    if warmup_phase not in WARMUP_PHASES:
        raise ValueError(f"unknown warmup phase {warmup_phase!r}; choose one of {WARMUP_PHASES}")
    if schedule == "constant":
        return 1.0, attention_weight
    if epoch < warmup_epochs:
        return (1.0, 0.0) if warmup_phase == "ce" else (0.0, attention_weight)
    growth = attention_weight / 10 if growth is None else growth
    return 1.0, attention_weight + growth * (epoch - warmup_epochs)


class LearningToLook(CAMGuided):
    """CE plus ``lambda`` times the KL divergence of the Grad-CAM from a VLM's attention map.

    ``attention_weight`` (of :class:`~vapl.methods.cam.CAMGuided`) is ``lambda``.

    Args:
        vlm_model: open_clip architecture of the map generator (``ViT-B-16-quickgelu``, OpenAI's
            weights; ``vapl-tiny-clip`` is a tiny model of ours for tests).
        vlm_weights: its checkpoint file, or a folder holding one; never downloaded.
        vlm_random_init: random generator weights instead (tests and the demo only).
        foreground_prompt: the text of the object to look at
            (:class:`~vapl.vlm.maps.VLMMapGenerator`).
        background_prompts: texts of what is not the object.
        prompt_templates: templates each text is put into (``"a photo of {}."``).
        map_method: ``gradcam`` (CLIP-ES) or ``similarity`` (patch-text similarity).
        map_threshold: post-processing of the maps (:func:`~vapl.vlm.maps.postprocess_maps`):
            the threshold (``None``: none).
        map_dilation: radius in pixels of a grey dilation that widens the region (0: none).
        map_edge_band: keep only a band of ``2 * map_edge_band + 1`` pixels around the region's
            boundary (0: the whole region).
        map_cache: precompute the training maps once and cache them on disk; ``False`` computes
            every batch's maps on the fly.
        map_cache_dir: the cache folder; ``None``: ``vlm_maps`` in the datamodule's cache folder
            (``cache_root``) where it has one, else in the trainer's ``default_root_dir``.
        map_batch_size: images per generator call while precomputing.
        lambda_schedule: ``constant`` or ``reference`` (:func:`loss_weights`).
        warmup_epochs: epochs in which only one term trains (``reference`` schedule).
        warmup_phase: the term that trains during the warm-up, ``ce`` or ``attention``.
        lambda_growth: lambda's growth per epoch after the warm-up (``reference`` schedule);
            ``None``: ``attention_weight / 10``, the reference code's.
        cam_normalization: how the CAM is scaled before the softmax: ``relu_minmax`` (the
            reference code's ReLU, then min-max) or :class:`~vapl.methods.cam.CAMGuided`'s
            ``minmax`` and ``relu``.
        map_source: ``vlm`` (the paper: maps from the VLM above) or ``explanation``: the batch's
            ground-truth explanation is the map, an "oracle VLM" (ours, for comparisons where no
            CLIP weights are at hand; the VLM settings are then unused).
        **kwargs: :class:`~vapl.methods.cam.CAMGuided`'s arguments.
    """

    def __init__(
        self,
        vlm_model: str = "ViT-B-16-quickgelu",
        vlm_weights: str | None = None,
        vlm_random_init: bool = False,
        foreground_prompt: str = "an object",
        background_prompts: Sequence[str] = ("the background",),
        prompt_templates: Sequence[str] = ("a photo of {}.",),
        map_method: str = "gradcam",
        map_threshold: float | None = None,
        map_dilation: int = 0,
        map_edge_band: int = 0,
        map_cache: bool = True,
        map_cache_dir: str | None = None,
        map_batch_size: int = 32,
        lambda_schedule: str = "constant",
        warmup_epochs: int = 0,
        warmup_phase: str = "ce",
        lambda_growth: float | None = None,
        cam_normalization: str = "relu_minmax",
        map_source: str = "vlm",
        **kwargs: Any,
    ) -> None:
        super().__init__(cam_normalization=cam_normalization, **kwargs)
        if map_source not in MAP_SOURCES:
            raise ValueError(f"map_source is one of {MAP_SOURCES}, got {map_source!r}")
        loss_weights(
            0, self.hparams.attention_weight, lambda_schedule, warmup_epochs, warmup_phase
        )  # checks
        # Plain attributes, not submodules: the CLIP weights are neither trained nor checkpointed.
        self.map_generator: VLMMapGenerator | None = None
        self.map_store: MapCache | None = None

    def build_map_generator(self) -> VLMMapGenerator:
        from vapl.vlm.maps import VLMMapGenerator  # open_clip only where maps are made

        hp = self.hparams
        return VLMMapGenerator(
            model_name=hp.vlm_model,
            weights=hp.vlm_weights,
            random_init=hp.vlm_random_init,
            foreground=hp.foreground_prompt,
            background=list(hp.background_prompts),
            templates=list(hp.prompt_templates),
            method=hp.map_method,
            threshold=hp.map_threshold,
            dilation=hp.map_dilation,
            edge_band=hp.map_edge_band,
        )

    def map_cache_root(self) -> Path:
        if self.hparams.map_cache_dir:
            return Path(self.hparams.map_cache_dir).expanduser()
        datamodule = getattr(self.trainer, "datamodule", None)
        data_cache = getattr(datamodule, "cache_root", None)
        if data_cache is not None:
            return Path(data_cache) / "vlm_maps"
        return Path(self.trainer.default_root_dir) / "vlm_maps"

    @property
    def oracle_maps(self) -> bool:
        """The maps are the data's explanations (``map_source="explanation"``)."""
        return self.hparams.get("map_source", "vlm") == "explanation"

    def setup(self, stage: str) -> None:
        if self.oracle_maps:
            return
        if stage == "fit" and self.map_generator is None:
            self.map_generator = self.build_map_generator()  # a missing weights file fails here

    def on_fit_start(self) -> None:
        if self.oracle_maps:
            return
        self.map_generator.to(self.device)
        if not self.hparams.map_cache:
            return
        datasets = getattr(self.trainer.datamodule, "datasets", None)
        if not isinstance(datasets, dict) or "train" not in datasets:
            log.warning("the datamodule has no datasets['train']: maps are computed on the fly")
            return
        self.map_store = MapCache.build(
            self.map_cache_root(),
            self.map_generator,
            datasets["train"],
            batch_size=self.hparams.map_batch_size,
            description="VLM maps (train)",
        )

    def attention_maps(self, batch: dict[str, Any]) -> tuple[torch.Tensor, int]:
        """``(maps [B, H, W] of the batch's images, how many were computed on the fly)``."""
        if self.oracle_maps:
            if batch.get("explanation") is None:
                raise ValueError(
                    "map_source='explanation' needs a data set whose samples have an explanation"
                )
            return batch["explanation"], 0
        if self.map_generator is None:
            self.map_generator = self.build_map_generator().to(self.device)
        images = batch["image"]
        if self.map_store is None:
            return self.map_generator(images).to(images.device), len(images)
        return self.map_store.maps_for(batch["id"], images, self.map_generator)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        hp = self.hparams
        images, labels = batch["image"], batch["label"]
        ce_weight, attention_weight = loss_weights(
            self.current_epoch,
            hp.attention_weight,
            hp.lambda_schedule,
            hp.warmup_epochs,
            hp.warmup_phase,
            hp.lambda_growth,
        )
        feature_map, logits = feature_map_and_logits(self.model, images, self.cam_layer)
        loss_pred = F.cross_entropy(logits, labels)
        maps, on_the_fly = self.attention_maps(batch)
        rows = torch.arange(len(labels), device=labels.device)
        cam = self.training_cam(feature_map, logits, labels, rows)
        target = F.adaptive_avg_pool2d(maps[:, None].to(cam.dtype), tuple(cam.shape[-2:]))[:, 0]
        loss_attention = attention_kl_loss(cam, target)
        loss = ce_weight * loss_pred + attention_weight * loss_attention

        size = len(labels)
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=size)
        self.log("train/loss_pred", loss_pred.detach(), batch_size=size)
        self.log("train/loss_attention", loss_attention.detach(), batch_size=size)
        self.log("train/attention_weight", float(attention_weight), batch_size=size)
        self.log("train/maps_on_the_fly", float(on_the_fly), batch_size=size, reduce_fx="sum")
        self.update_metrics("train", "unprompted", logits.detach().argmax(dim=1), labels)
        return loss
