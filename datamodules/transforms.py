"""Joint transforms: a geometric change moves image, prompt and explanation together."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from datamodules.base import Sample, Transform
from vapl.core.prompts import UNDECIDED

#: Keys whose last two dimensions are the image plane.
SPATIAL_KEYS = ("image", "prompt", "explanation")


class JointRandomFlip:
    """Flip every spatial entry of a sample left-right (and optionally up-down) with probability p."""

    def __init__(self, p: float = 0.5, vertical: bool = False) -> None:
        self.p = p
        self.vertical = vertical

    def __call__(self, sample: Sample) -> Sample:
        dims = [-1] if torch.rand(()) < self.p else []
        if self.vertical and torch.rand(()) < self.p:
            dims.append(-2)
        if not dims:
            return sample
        out = dict(sample)
        for key in SPATIAL_KEYS:
            if key in out:
                out[key] = torch.flip(out[key], dims)
        return out


class JointRandomCrop:
    """Pad every spatial entry by ``padding`` pixels on each side, then cut out a window of the
    original size at a random offset: image, prompt and explanation shift together.

    The border added around the image is ``image_fill`` (0 is the mean after normalisation), around
    the prompt it is undecided and around the explanation 0, so padding never adds an instruction.
    """

    def __init__(self, padding: int, image_fill: float = 0.0) -> None:
        if padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding}")
        self.padding = padding
        self.fills = {"image": image_fill, "prompt": UNDECIDED, "explanation": 0.0}

    def __call__(self, sample: Sample) -> Sample:
        if self.padding == 0:
            return sample
        pad = self.padding
        top, left = torch.randint(0, 2 * pad + 1, (2,)).tolist()
        out = dict(sample)
        for key in SPATIAL_KEYS:
            if key not in out:
                continue
            tensor = out[key]
            height, width = tensor.shape[-2:]
            padded = F.pad(tensor, (pad, pad, pad, pad), value=self.fills[key])
            out[key] = padded[..., top : top + height, left : left + width]
        return out


class JointCompose:
    """Apply joint transforms one after the other."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, sample: Sample) -> Sample:
        for transform in self.transforms:
            sample = transform(sample)
        return sample
