"""Pictures of prompts: image, prompt (indispensable red, precluded yellow), refined prompt."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from vapl.prompts import INDISPENSABLE, PRECLUDED

RED = (1.0, 0.0, 0.0)
YELLOW = (1.0, 0.85, 0.0)


def _gray(image: torch.Tensor) -> np.ndarray:
    array = image.detach().float().cpu()
    array = array.mean(dim=0) if array.ndim == 3 else array
    low, high = float(array.min()), float(array.max())
    return ((array - low) / max(high - low, 1e-12)).numpy()


def prompt_overlay(image: torch.Tensor, prompt: torch.Tensor, alpha: float = 0.5) -> np.ndarray:
    """RGB [H, W, 3]: the image in gray, indispensable pixels tinted red, precluded yellow."""
    gray = _gray(image)
    rgb = np.repeat(gray[..., None], 3, axis=2)
    prompt_np = prompt.detach().cpu().numpy()
    for value, colour in ((INDISPENSABLE, RED), (PRECLUDED, YELLOW)):
        where = prompt_np == value
        rgb[where] = (1 - alpha) * rgb[where] + alpha * np.asarray(colour)
    return rgb


def save_prompt_figure(
    path: str | Path,
    images: torch.Tensor,
    prompts: torch.Tensor,
    refined: torch.Tensor,
    titles: Sequence[str] | None = None,
) -> Path:
    """One row per sample: image, prompt overlay, refined prompt over the image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = len(images)
    figure, axes = plt.subplots(rows, 3, figsize=(7.5, 2.5 * rows), squeeze=False)
    for i in range(rows):
        axes[i, 0].imshow(_gray(images[i]), cmap="gray")
        axes[i, 1].imshow(prompt_overlay(images[i], prompts[i]))
        axes[i, 2].imshow(_gray(images[i]), cmap="gray")
        axes[i, 2].imshow(
            refined[i].detach().cpu().numpy(), cmap="inferno", alpha=0.6, vmin=0, vmax=1
        )
        if titles is not None:
            axes[i, 0].set_ylabel(titles[i], fontsize=8)
    for ax, name in zip(
        axes[0], ("image", "prompt (red: look, yellow: ignore)", "refined prompt A")
    ):
        ax.set_title(name, fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
