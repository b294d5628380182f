"""Figures of samples: prompts as pictures (indispensable red, precluded yellow) and panels of
image, prompt, refined prompt and the Grad-CAM of each model.

Used by the W&B dashboard callback (every few validation epochs) and by prompted prediction on
one image. Plain torch and numpy: no Lightning import.

Grad-CAM comes from :mod:`vapl.core.saliency`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from vapl.core.backbones import Classifier
from vapl.core.prompts import INDISPENSABLE, PRECLUDED
from vapl.core.saliency import grad_cam, normalize_cam, upsample_cam

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


#: Smallest side of a panel tile in pixels: small images are enlarged (nearest) to be readable.
MIN_TILE = 96


def grad_cam_maps(model: Classifier, images: torch.Tensor) -> torch.Tensor:
    """Grad-CAM of the predicted class, scaled to [0, 1] per image and resized to the images'
    size, [B, H, W]. The model is put in eval mode for the call and restored after."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(False), torch.enable_grad():
            images = images.detach().clone()
            raw, _ = grad_cam(model, images, create_graph=False)
            cam = upsample_cam(normalize_cam(raw.detach(), "relu"), images.shape[-2:])
    finally:
        model.train(was_training)
    return cam.clamp(0, 1).detach()


def panel_networks(
    module: Any, batch: Mapping[str, Any], refined: torch.Tensor | None
) -> dict[str, tuple[Classifier, torch.Tensor]]:
    """``name -> (network, the images it sees)`` for a method's Grad-CAM tiles.

    A method with ``explanation_heads(batch, outputs)`` says it itself; otherwise VAPL-like
    modules show ``prompted`` (f_m on ``I * A``) and ``unprompted`` (f_o on ``I``), and modules
    with one ``model`` (the Baseline, the CAM family) show it as ``unprompted``, on ``I``.
    """
    images = batch["image"]
    if hasattr(module, "explanation_heads"):
        outputs = {"refined_prompt": refined} if refined is not None else None
        heads = module.explanation_heads(batch, outputs)
        return {name: (net, imgs) for name, (net, imgs, *_) in heads.items()}
    networks: dict[str, tuple[Classifier, torch.Tensor]] = {}
    prompted = getattr(module, "prompted_model", None)
    if isinstance(prompted, Classifier):
        seen = images if refined is None else images * refined[:, None]
        networks["prompted"] = (prompted, seen)
    for attribute in ("unprompted_model", "model"):
        network = getattr(module, attribute, None)
        if isinstance(network, Classifier) and "unprompted" not in networks:
            networks["unprompted"] = (network, images)
    return networks


def _heat(image: torch.Tensor, heat: torch.Tensor, colormap: str = "inferno") -> np.ndarray:
    """RGB [H, W, 3]: a [0, 1] map in ``colormap`` blended over the image in gray."""
    from matplotlib import colormaps

    gray = gray_image(image)[..., None]
    colours = colormaps[colormap](heat.detach().float().cpu().clamp(0, 1).numpy())[..., :3]
    return 0.45 * gray + 0.55 * colours


def sample_tiles(
    image: torch.Tensor,
    prompt: torch.Tensor,
    refined: torch.Tensor | None = None,
    cams: Mapping[str, torch.Tensor] | None = None,
) -> list[tuple[str, np.ndarray]]:
    """``(title, RGB [H, W, 3] in [0, 1])`` tiles of one sample: image, prompt (indispensable
    red, precluded yellow), refined prompt when given, and one Grad-CAM per model."""
    gray = gray_image(image)
    tiles = [
        ("image", np.repeat(gray[..., None], 3, axis=2)),
        ("prompt", prompt_overlay(image, prompt)),
    ]
    if refined is not None:
        tiles.append(("refined prompt", _heat(image, refined)))
    for name, cam in (cams or {}).items():
        tiles.append((f"Grad-CAM {name}", _heat(image, cam, "jet")))
    return tiles


def tile_strip(tiles: Sequence[tuple[str, np.ndarray]], min_size: int = MIN_TILE) -> np.ndarray:
    """The tiles side by side as one uint8 RGB image, each enlarged by an integer factor to at
    least ``min_size`` pixels high, with a 2-pixel white gap between them."""
    height = tiles[0][1].shape[0]
    factor = max(1, -(-min_size // height))
    parts = []
    for _, tile in tiles:
        big = np.kron(tile, np.ones((factor, factor, 1)))
        parts += [big, np.ones((big.shape[0], 2, 3))]
    strip = np.concatenate(parts[:-1], axis=1)
    return (np.clip(strip, 0, 1) * 255).round().astype(np.uint8)


def save_panel_figure(
    path: Any,
    rows: Sequence[Sequence[tuple[str, np.ndarray]]],
    row_titles: Sequence[str] | None = None,
    title: str | None = None,
) -> Any:
    """A matplotlib figure of tile rows (one row per sample, titled columns), saved as PNG."""
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = max(len(r) for r in rows)
    figure, axes = plt.subplots(
        len(rows), columns, figsize=(2.4 * columns, 2.5 * len(rows) + 0.4), squeeze=False
    )
    for i, row in enumerate(rows):
        for j in range(columns):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(row):
                ax.axis("off")
                continue
            name, tile = row[j]
            ax.imshow(tile, interpolation="nearest")
            ax.set_title(name, fontsize=8)
        if row_titles is not None:
            axes[i, 0].set_ylabel(row_titles[i], fontsize=8)
    if title:
        figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
