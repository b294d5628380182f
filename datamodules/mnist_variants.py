"""DecoyMNIST and ColorMNIST, built in memory from the MNIST IDX files the user already has.

Nothing is downloaded: ``root`` holds the four standard files (gzipped or not), directly or in
torchvision's ``MNIST/raw`` folder. The validation set is a seeded ``val_fraction`` of the MNIST
training file, as CDEP does; the test set is the MNIST test file.

* DecoyMNIST (1 channel): a gray square in a random corner whose shade encodes the label in train
  (``255 - 25 y``) and not in test. ``construction="rrr"`` (Ross et al. 2017): a 4 x 4 square, test
  shade ``255 - 25 r`` for a random digit r. ``construction="cdep"`` (Rieger et al. 2020): a 5 x 5
  square, test shade ``25 y``, so the shortcut points to a wrong class.
* ColorMNIST (3 channels, CDEP): the digit is coloured ``palette[y]`` in train and
  ``palette[9 - y]`` in test, the palette running from red to purple in 10 steps.

Pixels are in [0, 1] (zero is the black background, so a masked-out pixel reads as background).
Prompts: the digit strokes indispensable, incompletely (``keep_fraction``, ``jitter``, as
:func:`vapl.core.prompts.simulate_incomplete`), the decoy square precluded (DecoyMNIST) or the background
away from the strokes precluded (ColorMNIST: the colour lies on the strokes themselves, so no pixel
prompt can preclude it; see docs/data.md). The stroke mask is the ``explanation``.
"""

from __future__ import annotations

import colorsys
from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from datamodules.base import PromptedDataModule, TensorSampleDataset
from datamodules.idx import read_mnist
from datamodules.transforms import JointRandomCrop
from vapl.core.progress import progress
from vapl.core.prompts import empty_prompt, prompt_from_masks, simulate_incomplete

SIZE = 28
SPLITS = ("train", "val", "test")
RULES = ("train", "test")

#: Decoy square side and test rule of each published construction.
DECOY_CONSTRUCTIONS = {"rrr": (4, "random"), "cdep": (5, "ascending")}
DECOY_STEP = 25


def decoy_squares(n: int, side: int, generator: torch.Generator) -> torch.Tensor:
    """Boolean [n, 28, 28]: a ``side`` x ``side`` square in a corner drawn uniformly per sample."""
    starts = torch.randint(0, 2, (n, 2), generator=generator) * (SIZE - side)
    coords = torch.arange(SIZE)
    rows = (coords >= starts[:, :1]) & (coords < starts[:, :1] + side)
    cols = (coords >= starts[:, 1:]) & (coords < starts[:, 1:] + side)
    return rows[:, :, None] & cols[:, None, :]


def decoy_shades(
    labels: torch.Tensor, rule: str, construction: str, generator: torch.Generator
) -> torch.Tensor:
    """Shades 0..255 of the decoy squares: ``255 - 25 y`` under the train rule; under the test
    rule ``255 - 25 r`` with r a random digit (RRR) or ``25 y`` (CDEP)."""
    if rule == "train":
        return 255 - DECOY_STEP * labels
    if DECOY_CONSTRUCTIONS[construction][1] == "random":
        return 255 - DECOY_STEP * torch.randint(0, 10, labels.shape, generator=generator)
    return DECOY_STEP * labels


def add_decoy(
    digits: torch.Tensor,
    labels: torch.Tensor,
    rule: str,
    construction: str,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """DecoyMNIST images [N, 1, 28, 28] in [0, 1] and the squares [N, 28, 28] from uint8 digits."""
    side = DECOY_CONSTRUCTIONS[construction][0]
    squares = decoy_squares(len(digits), side, generator)
    shades = decoy_shades(labels, rule, construction, generator).float()
    images = torch.where(squares, shades.view(-1, 1, 1), digits.float()) / 255.0
    return images.unsqueeze(1), squares


def color_palette() -> torch.Tensor:
    """The 10 ColorMNIST colours [10, 3] in [0, 1]: red to purple, linear in hue, saturation and
    lightness (what CDEP gets from ``Color("red").range_to(Color("purple"), 10)``)."""
    red, purple = (0.0, 1.0, 0.5), (300.0 / 360.0, 1.0, 128.0 / 255.0 / 2.0)
    colours = []
    for step in np.linspace(0.0, 1.0, 10):
        hue, saturation, lightness = (a + (b - a) * step for a, b in zip(red, purple))
        colours.append(colorsys.hls_to_rgb(hue, lightness, saturation))
    return torch.tensor(colours, dtype=torch.float32)


def colorize(digits: torch.Tensor, labels: torch.Tensor, rule: str) -> torch.Tensor:
    """ColorMNIST images [N, 3, 28, 28]: colour ``y`` under the train rule, ``9 - y`` under test."""
    index = labels if rule == "train" else 9 - labels
    return digits.float().unsqueeze(1) / 255.0 * color_palette()[index].view(-1, 3, 1, 1)


def dilate(masks: torch.Tensor, radius: int) -> torch.Tensor:
    """Grow boolean masks [N, H, W] by ``radius`` pixels (a square neighbourhood)."""
    if radius <= 0:
        return masks
    grown = F.max_pool2d(masks[:, None].float(), 2 * radius + 1, stride=1, padding=radius)
    return grown[:, 0] > 0


def _count(n: int, available: int) -> int:
    return available if n < 0 else min(n, available)


class MnistVariantDataModule(PromptedDataModule, ABC):
    """Shared reading, splitting and prompting; a subclass defines :meth:`construct`.

    Args:
        root: the folder holding the MNIST IDX files (or torchvision's ``MNIST/raw``).
        n_train: training images (-1: all).
        n_val: validation images (-1: all of the validation share).
        n_test: test images (-1: all).
        val_fraction: share of the MNIST training file held out for validation.
        val_rule: ``train`` (validation built like training: the shortcut holds) or ``test``.
        n_prompted_train: training images that carry a prompt (-1: all).
        eval_prompts: validation and test images carry prompts.
        keep_fraction: share of the strokes the incomplete prompt keeps.
        jitter: pixels of random jitter along the kept prompt's border.
        stroke_threshold: share of full intensity above which a pixel is a stroke.
        augment: random joint shifts of image, prompt and explanation (train only).
        crop_padding: the largest shift of the augmentation, in pixels.
        batch_size: samples per batch.
        **kwargs: the settings every datamodule shares (:class:`~datamodules.base.PromptedDataModule`).
    """

    all_means = ("n_train", "n_val", "n_test")  # -1: all the images there are

    in_channels_of_variant = 1

    def __init__(
        self,
        root: str,
        n_train: int = -1,
        n_val: int = -1,
        n_test: int = -1,
        val_fraction: float = 0.1,
        val_rule: str = "train",
        n_prompted_train: int = -1,
        eval_prompts: bool = True,
        keep_fraction: float = 0.5,
        jitter: int = 0,
        stroke_threshold: float = 0.2,
        augment: bool = False,
        crop_padding: int = 2,
        batch_size: int = 64,
        **kwargs: Any,
    ) -> None:
        super().__init__(batch_size=batch_size, **kwargs)
        if val_rule not in RULES:
            raise ValueError(f"val_rule is 'train' or 'test', got {val_rule!r}")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        self.num_classes = 10
        self.in_channels = self.in_channels_of_variant

    @abstractmethod
    def construct(
        self, digits: torch.Tensor, labels: torch.Tensor, rule: str, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Images [N, C, 28, 28] in [0, 1] and the precluded region [N, 28, 28] under ``rule``."""

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        hp = self.hparams
        train_digits, train_labels = read_mnist(hp.root, "train")
        test_digits, test_labels = read_mnist(hp.root, "test")
        generator = torch.Generator().manual_seed(hp.seed)
        order = torch.randperm(len(train_labels), generator=generator)
        n_val_all = max(1, int(round(hp.val_fraction * len(order))))
        val_index = order[: _count(hp.n_val, n_val_all)]
        train_index = order[n_val_all:][: _count(hp.n_train, len(order) - n_val_all)]
        test_index = torch.randperm(len(test_labels), generator=generator)
        test_index = test_index[: _count(hp.n_test, len(test_index))]
        parts = {
            "train": (train_digits, train_labels, train_index, "train"),
            "val": (train_digits, train_labels, val_index, hp.val_rule),
            "test": (test_digits, test_labels, test_index, "test"),
        }
        for offset, split in enumerate(SPLITS):
            digits, labels, index, rule = parts[split]
            index = index.sort().values
            n_prompted = _count(hp.n_prompted_train, len(index)) if split == "train" else None
            self.datasets[split] = self._build(
                split,
                torch.from_numpy(digits[index.numpy()]),
                torch.from_numpy(labels[index.numpy()]),
                index.tolist(),
                rule,
                n_prompted,
                torch.Generator().manual_seed(hp.seed * 1000 + offset + 1),
            )
        if hp.augment:  # shifts only: a mirrored digit is another glyph
            self.datasets["train"].transform = JointRandomCrop(hp.crop_padding)

    def _build(
        self,
        split: str,
        digits: torch.Tensor,
        labels: torch.Tensor,
        source_index: list[int],
        rule: str,
        n_prompted: int | None,
        generator: torch.Generator,
    ) -> TensorSampleDataset:
        hp = self.hparams
        images, precluded = self.construct(digits, labels, rule, generator)
        strokes = (digits.float() / 255.0 > hp.stroke_threshold) & ~precluded
        n = len(labels)
        if n_prompted is None:
            n_prompted = n if hp.eval_prompts else 0
        # The first n_prompted of a seeded random draw carry prompts.
        has_prompt = torch.zeros(n, dtype=torch.bool)
        has_prompt[torch.randperm(n, generator=generator)[:n_prompted]] = True
        prompts = torch.empty(n, SIZE, SIZE)
        for i in progress(range(n), desc=f"prompting {split}", leave=False, disable=n < 2000):
            if has_prompt[i]:
                kept = simulate_incomplete(strokes[i], hp.keep_fraction, hp.jitter, generator)
                prompts[i] = prompt_from_masks(kept, precluded[i])
            else:
                prompts[i] = empty_prompt(SIZE, SIZE)
        file = "train" if split != "test" else "test"
        return TensorSampleDataset(
            images=images,
            prompts=prompts,
            has_prompt=has_prompt,
            labels=labels,
            ids=[f"{file}-{i}" for i in source_index],
            explanations=strokes.float(),
        )


class DecoyMNISTDataModule(MnistVariantDataModule):
    """DecoyMNIST (see the module docstring).

    Args:
        root: the folder holding the MNIST IDX files.
        construction: ``rrr`` (RRR's decoy squares) or ``cdep`` (CDEP's).
        **kwargs: :class:`MnistVariantDataModule`'s arguments.
    """

    in_channels_of_variant = 1

    def __init__(
        self,
        root: str,
        construction: str = "rrr",
        **kwargs: Any,
    ) -> None:
        super().__init__(root=root, **kwargs)
        if construction not in DECOY_CONSTRUCTIONS:
            raise ValueError(
                f"construction is one of {', '.join(DECOY_CONSTRUCTIONS)}, got {construction!r}"
            )

    def construct(
        self, digits: torch.Tensor, labels: torch.Tensor, rule: str, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return add_decoy(digits, labels, rule, self.hparams.construction, generator)


class ColorMNISTDataModule(MnistVariantDataModule):
    """ColorMNIST (CDEP; see the module docstring).

    Args:
        root: the folder holding the MNIST IDX files.
        precluded_region: ``background`` (pixels farther than ``background_margin`` from every
            stroke are precluded) or ``none``.
        background_margin: pixels around the strokes that are not background.
        **kwargs: :class:`MnistVariantDataModule`'s arguments.
    """

    in_channels_of_variant = 3

    def __init__(
        self,
        root: str,
        precluded_region: str = "background",
        background_margin: int = 2,
        **kwargs: Any,
    ) -> None:
        super().__init__(root=root, **kwargs)
        if precluded_region not in ("background", "none"):
            raise ValueError(
                f"precluded_region is 'background' or 'none', got {precluded_region!r}"
            )

    def construct(
        self, digits: torch.Tensor, labels: torch.Tensor, rule: str, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hp = self.hparams
        images = colorize(digits, labels, rule)
        strokes = digits.float() / 255.0 > hp.stroke_threshold
        if hp.precluded_region == "none":
            return images, torch.zeros_like(strokes)
        return images, ~dilate(strokes, hp.background_margin)
