"""Figures of samples, in one panel style for every figure (the demo's examples, a prediction on
one image, the W&B sample panels).

A panel is one row per sample with the same columns in the same order (:data:`COLUMN_ORDER`):
the image; the prompt over it (indispensable red, precluded yellow, undecided untouched, with a
legend); the refined prompt ``A`` in [0, 1] (colour map :data:`REFINED_CMAP`, neither red nor
yellow, with a colour bar); then the Grad-CAM of each model, the prompted one first (over the image
in :data:`CAM_CMAP`, with a colour bar). A column is left out only when no row has it. Rows carry a
title (the sample and its predictions) and the figure a title of its own.

Plain torch, numpy and matplotlib: no Lightning import. Grad-CAM comes from
:mod:`vapl.core.saliency`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vapl.core.backbones import Classifier
from vapl.core.prompts import INDISPENSABLE, PRECLUDED
from vapl.core.saliency import grad_cam, normalize_cam, upsample_cam

RED = (1.0, 0.0, 0.0)
YELLOW = (1.0, 0.85, 0.0)
#: The refined prompt's colour map: white (0, the pixel is removed) to dark blue (1, kept).
REFINED_CMAP = "Blues"
#: Grad-CAM's colour map, blended over the image in gray.
CAM_CMAP = "jet"
#: Grad-CAM columns first in this order (by the name of the model), then any others as given.
CAM_ORDER = ("prompted", "unprompted")


def gray_image(image: torch.Tensor) -> np.ndarray:
    """[H, W] in [0, 1]: the image ([C, H, W] or [H, W]) averaged over channels, min-max scaled."""
    array = image.detach().float().cpu()
    array = array.mean(dim=0) if array.ndim == 3 else array
    low, high = float(array.min()), float(array.max())
    return ((array - low) / max(high - low, 1e-12)).numpy()


def prompt_overlay(image: torch.Tensor, prompt: torch.Tensor, alpha: float = 0.6) -> np.ndarray:
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


def _heat(image: torch.Tensor, heat: torch.Tensor, colormap: str = CAM_CMAP) -> np.ndarray:
    """RGB [H, W, 3]: a [0, 1] map in ``colormap`` blended over the image in gray."""
    from matplotlib import colormaps

    gray = gray_image(image)[..., None]
    colours = colormaps[colormap](heat.detach().float().cpu().clamp(0, 1).numpy())[..., :3]
    return 0.45 * gray + 0.55 * colours


def refined_tile(refined: torch.Tensor) -> np.ndarray:
    """RGB [H, W, 3]: the refined prompt ``A`` in [0, 1] in :data:`REFINED_CMAP` (what multiplies
    the image for the prompted model: white pixels are removed, dark blue ones kept)."""
    from matplotlib import colormaps

    values = refined.detach().float().cpu().clamp(0, 1).numpy()
    return colormaps[REFINED_CMAP](values)[..., :3]


def cam_title(name: str) -> str:
    return f"Grad-CAM {name}"


@dataclass
class PanelRow:
    """One sample of a panel: the image [C, H, W], its prompt [H, W], the refined prompt [H, W]
    (VAPL, when the sample has a prompt) and a Grad-CAM [H, W] per model; ``title`` says which
    sample it is and what the models predict."""

    image: torch.Tensor
    prompt: torch.Tensor
    refined: torch.Tensor | None = None
    cams: Mapping[str, torch.Tensor] = field(default_factory=dict)
    title: str = ""

    def tiles(self) -> dict[str, np.ndarray]:
        """Column title -> RGB [H, W, 3] in [0, 1], for the columns this row has."""
        gray = gray_image(self.image)
        tiles = {
            "image": np.repeat(gray[..., None], 3, axis=2),
            "prompt": prompt_overlay(self.image, self.prompt),
        }
        if self.refined is not None:
            tiles["refined prompt"] = refined_tile(self.refined)
        for name, cam in self.cams.items():
            tiles[cam_title(name)] = _heat(self.image, cam)
        return tiles


def ordered_cams(cams: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``cams`` with the names in :data:`CAM_ORDER` first, in that order, then the others."""
    first = [name for name in CAM_ORDER if name in cams]
    return {name: cams[name] for name in [*first, *(n for n in cams if n not in first)]}


def panel_columns(rows: Sequence[PanelRow]) -> list[str]:
    """The column titles of a panel: image, prompt, refined prompt, then the Grad-CAMs (prompted,
    unprompted, others), each present when at least one row has it."""
    names: list[str] = []
    for row in rows:
        names += [name for name in ordered_cams(row.cams) if name not in names]
    columns = ["image", "prompt"]
    if any(row.refined is not None for row in rows):
        columns.append("refined prompt")
    return columns + [cam_title(name) for name in ordered_cams(dict.fromkeys(names))]


def sample_tiles(
    image: torch.Tensor,
    prompt: torch.Tensor,
    refined: torch.Tensor | None = None,
    cams: Mapping[str, torch.Tensor] | None = None,
) -> list[tuple[str, np.ndarray]]:
    """``(title, RGB [H, W, 3] in [0, 1])`` tiles of one sample in the panel's column order."""
    row = PanelRow(image, prompt, refined, ordered_cams(cams or {}))
    tiles = row.tiles()
    return [(name, tiles[name]) for name in panel_columns([row])]


def tile_strip(tiles: Sequence[tuple[str, np.ndarray]], min_size: int = MIN_TILE) -> np.ndarray:
    """The tiles side by side as one uint8 RGB image, each enlarged by an integer factor to at
    least ``min_size`` pixels high, with a 2-pixel white gap between them (no titles: the panel
    figures of :func:`draw_panel` have them)."""
    height = tiles[0][1].shape[0]
    factor = max(1, -(-min_size // height))
    parts = []
    for _, tile in tiles:
        big = np.kron(tile, np.ones((factor, factor, 1)))
        parts += [big, np.ones((big.shape[0], 2, 3))]
    strip = np.concatenate(parts[:-1], axis=1)
    return (np.clip(strip, 0, 1) * 255).round().astype(np.uint8)


# ----- the panel figure --------------------------------------------------------------------------
def draw_panel(rows: Sequence[PanelRow], title: str | None = None) -> Any:
    """The matplotlib figure of a panel (module docstring): one row per sample, titled columns,
    and under them a key row: the prompt colours' legend under the prompt column, colour bars
    under the refined prompt and the Grad-CAM columns."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.patches import Patch

    columns = panel_columns(rows)
    key_height = 0.42
    figure = plt.figure(
        figsize=(
            2.2 * len(columns) + 0.7,
            2.2 * (len(rows) + key_height) + (0.5 if title else 0.2),
        ),
        layout="constrained",
    )
    grid = figure.add_gridspec(
        len(rows) + 1, len(columns), height_ratios=[1] * len(rows) + [key_height]
    )
    for i, row in enumerate(rows):
        tiles = row.tiles()
        for j, column in enumerate(columns):
            ax = figure.add_subplot(grid[i, j])
            ax.set_xticks([])
            ax.set_yticks([])
            if column in tiles:
                ax.imshow(tiles[column], interpolation="nearest")
            else:
                ax.set_facecolor("0.92")
                ax.text(0.5, 0.5, "none", ha="center", va="center", fontsize=8, color="0.4")
            if i == 0:
                ax.set_title(column, fontsize=9)
            if j == 0 and row.title:
                ax.set_ylabel(row.title.replace(" | ", "\n"), fontsize=8)

    def key_axes(first: int, last: int) -> Any:
        ax = figure.add_subplot(grid[len(rows), first : last + 1])
        ax.axis("off")
        return ax

    def colour_bar(first: int, last: int, cmap: str, label: str) -> None:
        cax = key_axes(first, last).inset_axes((0.04, 0.62, 0.92, 0.2))
        bar = figure.colorbar(
            ScalarMappable(Normalize(0.0, 1.0), cmap), cax=cax, orientation="horizontal"
        )
        bar.set_ticks([0, 0.5, 1])
        bar.ax.tick_params(labelsize=7)
        bar.set_label(label, fontsize=8)

    key_axes(1, 1).legend(
        handles=[
            Patch(facecolor=RED, alpha=0.6, label="indispensable"),
            Patch(facecolor=YELLOW, alpha=0.6, label="precluded"),
            Patch(facecolor="0.75", label="undecided"),
        ],
        loc="upper center",
        fontsize=7,
        frameon=False,
        handlelength=1.2,
        borderaxespad=0.0,
    )
    if "refined prompt" in columns:
        j = columns.index("refined prompt")
        colour_bar(j, j, REFINED_CMAP, "A: 0 removed, 1 kept")
    cams = [j for j, column in enumerate(columns) if column.startswith("Grad-CAM")]
    if cams:
        colour_bar(cams[0], cams[-1], CAM_CMAP, "Grad-CAM, each map scaled to [0, 1]")
    if title:
        figure.suptitle(title, fontsize=10)
    return figure


def save_panel_figure(path: str | Path, rows: Sequence[PanelRow], title: str | None = None) -> Path:
    """:func:`draw_panel` saved as a PNG at ``path`` (folders created); returns the path."""
    import matplotlib.pyplot as plt

    figure = draw_panel(rows, title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def panel_image(rows: Sequence[PanelRow], title: str | None = None, dpi: int = 90) -> np.ndarray:
    """:func:`draw_panel` as a uint8 RGB array [H, W, 3] (for a W&B image)."""
    import matplotlib.pyplot as plt

    figure = draw_panel(rows, title)
    figure.set_dpi(dpi)
    figure.canvas.draw()
    pixels = np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()
    plt.close(figure)
    return pixels
