"""VAPL prompts from text: a wrapper datamodule that replaces every sample's prompt by one drawn
from a vision-language model's attention map (:mod:`vapl.vlm.maps`).

``map >= indispensable_above`` is indispensable, ``map <= precluded_below`` precluded, the rest
undecided (:func:`vapl.vlm.maps.map_to_prompt`); every sample then has a prompt. The maps of each
split are computed once and cached on disk (:mod:`vapl.vlm.cache`) before the first epoch, with
the wrapped data set's augmentation off; the augmentation then runs on the new prompt, so a joint
flip still moves image and prompt together. This goes beyond the Learning to Look paper: a user
with no annotations gets VAPL prompts from a sentence. Example: ``configs/demo_text_prompts.yaml``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.data import AttributeDict
from torch.utils.data import Dataset

from datamodules.base import PromptedDataModule, Sample
from vapl.core.prompts import map_to_prompt
from vapl.vlm.cache import MapCache


def _restore_nested_hparams(datamodule: PromptedDataModule) -> None:
    """LightningCLI hands every datamodule it builds under ``data`` that key's hyperparameters, so
    a datamodule nested in ours receives ours (with its own under ``datamodule``): put back its
    own, which its ``setup`` reads."""
    nested = datamodule.hparams.get("datamodule")
    if isinstance(nested, dict) and isinstance(nested.get("init_args"), dict):
        datamodule._hparams = AttributeDict(nested["init_args"])
        datamodule._hparams_initial = copy.deepcopy(datamodule._hparams)


class TextPromptDataset(Dataset):
    """``dataset``'s samples with the prompt replaced by the thresholded cached map. Takes over
    ``dataset``'s transform, so that it runs after the prompt is replaced."""

    def __init__(
        self,
        dataset: Dataset,
        maps: MapCache,
        indispensable_above: float,
        precluded_below: float,
    ) -> None:
        self.dataset = dataset
        self.transform = getattr(dataset, "transform", None)
        if self.transform is not None:
            dataset.transform = None
        self.maps = maps
        self.indispensable_above = indispensable_above
        self.precluded_below = precluded_below

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Sample:
        sample = dict(self.dataset[index])
        row = self.maps.rows.get(str(sample["id"]))
        if row is None:
            raise KeyError(f"sample {sample['id']!r} has no cached map in {self.maps.directory}")
        attention = torch.from_numpy(self.maps.maps[row].copy())
        sample["prompt"] = map_to_prompt(
            attention, self.indispensable_above, self.precluded_below
        ).to(sample["image"].dtype)
        sample["has_prompt"] = torch.tensor(True)
        return self.transform(sample) if self.transform is not None else sample


class TextPromptDataModule(PromptedDataModule):
    """Any datamodule of the sample contract, with prompts from a text prompt.

    Args:
        datamodule: the wrapped datamodule (its batch size, workers and seed are used).
        vlm_model, vlm_weights, vlm_random_init, foreground_prompt, background_prompts,
            prompt_templates, map_method, map_threshold, map_dilation, map_edge_band: the map
            generator, as for :class:`vapl.methods.LearningToLook`.
        indispensable_above, precluded_below: the two thresholds on the map.
        map_cache_dir: the cache folder; ``None``: ``vlm_maps`` in the wrapped datamodule's
            ``cache_root`` where it has one, else ``runs/vlm_maps``.
        map_batch_size: images per generator call.
    """

    hparams_ignore = ("datamodule",)

    def __init__(
        self,
        datamodule: PromptedDataModule,
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
        indispensable_above: float = 0.7,
        precluded_below: float = 0.2,
        map_cache_dir: str | None = None,
        map_batch_size: int = 32,
    ) -> None:
        super().__init__(
            batch_size=datamodule.batch_size,
            num_workers=datamodule.num_workers,
            seed=datamodule.seed,
            predict_split=datamodule.predict_split,
        )
        map_to_prompt(torch.zeros(1), indispensable_above, precluded_below)  # checks the pair
        _restore_nested_hparams(datamodule)
        self.datamodule = datamodule
        self.num_classes = datamodule.num_classes
        self.in_channels = datamodule.in_channels
        self.generator_args: dict[str, Any] = {
            "model_name": vlm_model,
            "weights": vlm_weights,
            "random_init": vlm_random_init,
            "foreground": foreground_prompt,
            "background": list(background_prompts),
            "templates": list(prompt_templates),
            "method": map_method,
            "threshold": map_threshold,
            "dilation": map_dilation,
            "edge_band": map_edge_band,
        }
        self.indispensable_above = indispensable_above
        self.precluded_below = precluded_below
        self.map_batch_size = map_batch_size
        data_cache = getattr(datamodule, "cache_root", None)
        if map_cache_dir:
            self.map_cache_root = Path(map_cache_dir).expanduser()
        elif data_cache is not None:
            self.map_cache_root = Path(data_cache) / "vlm_maps"
        else:
            self.map_cache_root = Path("runs") / "vlm_maps"

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        from vapl.vlm.maps import VLMMapGenerator  # open_clip only where maps are made

        self.datamodule.setup(stage)
        generator = VLMMapGenerator(**self.generator_args)
        if torch.cuda.is_available():
            generator.to("cuda")
        for split, dataset in self.datamodule.datasets.items():
            maps = MapCache.build(
                self.map_cache_root,
                generator,
                dataset,
                batch_size=self.map_batch_size,
                description=f"VLM maps ({split})",
            )
            self.datasets[split] = TextPromptDataset(
                dataset, maps, self.indispensable_above, self.precluded_below
            )
