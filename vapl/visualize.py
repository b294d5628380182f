"""Prompts as pictures: indispensable in red, precluded in yellow (figures: :mod:`vapl.panels`)."""

from __future__ import annotations

import numpy as np
import torch

from vapl.prompts import INDISPENSABLE, PRECLUDED

RED = (1.0, 0.0, 0.0)
YELLOW = (1.0, 0.85, 0.0)


def gray_image(image: torch.Tensor) -> np.ndarray:
    """[H, W] in [0, 1]: the image ([C, H, W] or [H, W]) averaged over channels, min-max scaled."""
    array = image.detach().float().cpu()
    array = array.mean(dim=0) if array.ndim == 3 else array
    low, high = float(array.min()), float(array.max())
    return ((array - low) / max(high - low, 1e-12)).numpy()


def prompt_overlay(image: torch.Tensor, prompt: torch.Tensor, alpha: float = 0.5) -> np.ndarray:
    """RGB [H, W, 3]: the image in gray, indispensable pixels tinted red, precluded yellow."""
    gray = gray_image(image)
    rgb = np.repeat(gray[..., None], 3, axis=2)
    prompt_np = prompt.detach().cpu().numpy()
    for value, colour in ((INDISPENSABLE, RED), (PRECLUDED, YELLOW)):
        where = prompt_np == value
        rgb[where] = (1 - alpha) * rgb[where] + alpha * np.asarray(colour)
    return rgb
