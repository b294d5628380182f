"""The built-in demo data: CT-like slices with a small lesion and a spurious corner marker.

Generated in memory from a seed; nothing is downloaded or read from disk.

* Each image is smooth random texture inside an elliptical "body" on a dark background.
* A clinician looked at a region of interest (ROI) in every image. In positive images a lesion, a
  small bright blob, sits in the ROI; in negative images the ROI holds only tissue.
* A bright square marker in the top-left corner is the shortcut: in train and validation it is
  present exactly when the image is positive (with probability ``shortcut``); in test it is present
  at random, independent of the label.
* The prompt marks the ROI indispensable (incompletely, as annotators do) and the corner where
  markers appear precluded. The full ROI is the ``explanation``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from datamodules.base import PromptedDataModule, TensorSampleDataset
from datamodules.transforms import JointRandomFlip
from vapl.core.prompts import prompt_from_masks, simulate_incomplete

SPLITS = ("train", "val", "test")


def _smooth_noise(n: int, size: int, generator: torch.Generator, scale: int = 4) -> torch.Tensor:
    coarse = torch.randn(n, 1, size // scale + 2, size // scale + 2, generator=generator)
    fine = F.interpolate(coarse, size=(size + 2 * scale, size + 2 * scale), mode="bicubic")
    fine = fine[:, 0, scale : scale + size, scale : scale + size]
    fine = fine + 0.3 * torch.randn(n, size, size, generator=generator)
    return fine / fine.flatten(1).std(dim=1).view(-1, 1, 1)


def make_synthetic_split(
    n: int,
    image_size: int = 64,
    shortcut: float | None = 1.0,
    lesion_radius: float | None = None,
    lesion_contrast: float = 1.4,
    texture_contrast: float = 0.45,
    marker_size: int | None = None,
    keep_fraction: float = 0.6,
    prompt_fraction: float = 1.0,
    seed: int = 0,
    id_prefix: str = "s",
) -> TensorSampleDataset:
    """Generate one split. ``shortcut`` is P(marker | positive) = P(no marker | negative); ``None``
    draws the marker independently of the label (the test split)."""
    generator = torch.Generator().manual_seed(seed)
    size = image_size
    radius = lesion_radius if lesion_radius is not None else max(2.0, size / 10)
    marker = marker_size if marker_size is not None else max(3, size // 10)
    labels = torch.arange(n) % 2
    labels = labels[torch.randperm(n, generator=generator)]

    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    centre = size / 2 + (torch.rand(n, 2, generator=generator) - 0.5) * size * 0.1
    axes = size * (0.36 + 0.06 * torch.rand(n, 2, generator=generator))
    body = (
        ((yy - centre[:, 0, None, None]) / axes[:, 0, None, None]) ** 2
        + ((xx - centre[:, 1, None, None]) / axes[:, 1, None, None]) ** 2
    ) <= 1.0

    # ROI centres well inside the body.
    angle = torch.rand(n, generator=generator) * 2 * torch.pi
    reach = 0.55 * torch.rand(n, generator=generator).sqrt()
    roi_y = centre[:, 0] + reach * axes[:, 0] * torch.sin(angle)
    roi_x = centre[:, 1] + reach * axes[:, 1] * torch.cos(angle)
    distance = ((yy - roi_y[:, None, None]) ** 2 + (xx - roi_x[:, None, None]) ** 2).sqrt()
    roi = distance <= radius + 1.0
    lesion = torch.exp(-((distance / radius) ** 4)) * labels.view(-1, 1, 1)

    texture = texture_contrast * _smooth_noise(n, size, generator)
    images = torch.where(body, texture, torch.full_like(texture, -1.5))
    images = images + lesion_contrast * lesion

    if shortcut is None:
        has_marker = torch.rand(n, generator=generator) < 0.5
    else:
        agree = torch.rand(n, generator=generator) < shortcut
        has_marker = torch.where(agree, labels.bool(), ~labels.bool())
    corner = torch.zeros(size, size, dtype=torch.bool)
    corner[1 : 1 + marker + 2, 1 : 1 + marker + 2] = True
    marker_area = torch.zeros(size, size, dtype=torch.bool)
    marker_area[2 : 2 + marker, 2 : 2 + marker] = True
    images[has_marker] = torch.where(marker_area, torch.tensor(2.5), images[has_marker])

    with_prompt = torch.rand(n, generator=generator) < prompt_fraction
    prompts = []
    for i in range(n):
        if not with_prompt[i]:
            prompts.append(prompt_from_masks(shape=(size, size)))
            continue
        kept = simulate_incomplete(roi[i], keep_fraction, jitter=1, generator=generator)
        prompts.append(prompt_from_masks(kept, corner))
    return TensorSampleDataset(
        images=images.unsqueeze(1),
        prompts=torch.stack(prompts),
        has_prompt=with_prompt,
        labels=labels,
        ids=[f"{id_prefix}{i:05d}" for i in range(n)],
        explanations=roi.float(),
    )


class SyntheticDataModule(PromptedDataModule):
    """The embedded demo data set (see the module docstring). One channel, two classes.

    Args:
        n_train: training images.
        n_val: validation images (the shortcut holds, as in training).
        n_test: test images (the marker is independent of the label).
        image_size: side of the square images in pixels.
        shortcut: probability that the corner marker agrees with the label in train and
            validation.
        lesion_contrast: brightness of the lesion over the tissue (0: invisible).
        texture_contrast: strength of the tissue texture.
        keep_fraction: share of the region of interest the incomplete prompt keeps.
        prompt_fraction: share of the samples that carry a prompt.
        augment: random joint flips of image, prompt and explanation (train only).
        **kwargs: the settings every datamodule shares (:class:`~datamodules.base.PromptedDataModule`).
    """

    def __init__(
        self,
        n_train: int = 200,
        n_val: int = 100,
        n_test: int = 200,
        image_size: int = 64,
        shortcut: float = 1.0,
        lesion_contrast: float = 1.4,
        texture_contrast: float = 0.45,
        keep_fraction: float = 0.6,
        prompt_fraction: float = 1.0,
        augment: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.num_classes = 2
        self.in_channels = 1

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        hp = self.hparams
        sizes = {"train": hp.n_train, "val": hp.n_val, "test": hp.n_test}
        for offset, split in enumerate(SPLITS):
            self.datasets[split] = make_synthetic_split(
                sizes[split],
                image_size=hp.image_size,
                shortcut=None if split == "test" else hp.shortcut,
                lesion_contrast=hp.lesion_contrast,
                texture_contrast=hp.texture_contrast,
                keep_fraction=hp.keep_fraction,
                prompt_fraction=hp.prompt_fraction,
                seed=hp.seed * 10 + offset,
                id_prefix=f"{split}-",
            )
        if hp.augment:
            self.datasets["train"].transform = JointRandomFlip()
