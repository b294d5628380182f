"""Joint transforms: a geometric change moves image, prompt and explanation together."""

from __future__ import annotations

import torch

from datamodules.base import Sample

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
