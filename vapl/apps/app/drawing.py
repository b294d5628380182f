"""Between the browser's drawing canvas and a prompt tensor (no Gradio import).

The canvas shows the image as read (:mod:`vapl.apps.scan_io`) enlarged by an integer factor
(:func:`display_zoom`, nearest neighbour) so that small images can be drawn on. The brush paints
pure red (:data:`RED_HEX`, indispensable) or pure yellow (:data:`YELLOW_HEX`, precluded) on layers
above the image; the eraser makes layer pixels transparent. :func:`prompt_from_layers` turns the
layers into a prompt at the image's own size:

1. the layers are stacked (alpha compositing, later layers on top) into one RGBA picture;
2. that picture is read by :func:`vapl.core.prompt_files.prompt_from_colours`, the reader of every
   drawn prompt (red, yellow, everything else undecided; half-transparent edges undecided);
3. each image pixel covers a ``zoom x zoom`` block of the canvas: it is indispensable when at least
   half of its block is red (and no more of it yellow), precluded when at least half is yellow
   (and more of it yellow than red), else undecided. With ``zoom == 1`` the canvas pixel is the
   image pixel.

The image underneath never counts: a colour photograph with red in it is not a prompt.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from vapl.core.errors import UserInputError
from vapl.core.prompt_files import prompt_from_colours
from vapl.core.prompts import INDISPENSABLE, PRECLUDED, UNDECIDED

#: The brush colours: exactly what :func:`prompt_from_colours` reads as red and yellow.
RED_HEX = "#ff0000"
YELLOW_HEX = "#ffff00"
RED_RGBA = (255, 0, 0, 255)
YELLOW_RGBA = (255, 255, 0, 255)
#: The canvas shows an image at least this many pixels on its longer side.
MIN_DISPLAY = 384


class DrawingError(UserInputError, ValueError):
    """A drawing that cannot become a prompt (no image under it, or a canvas of another size)."""


def display_zoom(shape: Sequence[int], min_display: int = MIN_DISPLAY) -> int:
    """The integer factor that shows an image of ``shape`` (height, width) at least
    ``min_display`` pixels on its longer side (1 for images that large already)."""
    longest = max(int(shape[-2]), int(shape[-1]))
    return max(1, -(-min_display // max(longest, 1)))


def display_image(image: torch.Tensor, zoom: int = 1) -> np.ndarray:
    """uint8 RGB [zoom H, zoom W, 3] of an image [C, H, W] in [0, 1] (1 or 3 channels), each
    pixel a ``zoom x zoom`` block. The values are ``round(255 x)``, as ``--save-image`` writes."""
    array = image.detach().float().cpu().clamp(0, 1).numpy()
    if array.ndim == 2:
        array = array[None]
    if array.shape[0] == 1:
        array = np.repeat(array, 3, axis=0)
    rgb = (array[:3].transpose(1, 2, 0) * 255).round().astype(np.uint8)
    return np.ascontiguousarray(np.repeat(np.repeat(rgb, zoom, axis=0), zoom, axis=1))


def _rgba(layer: np.ndarray) -> np.ndarray:
    layer = np.asarray(layer)
    if layer.ndim == 2:  # a grey layer: opaque grey
        layer = np.repeat(layer[..., None], 3, axis=2)
    if layer.ndim != 3 or layer.shape[-1] not in (3, 4):
        raise DrawingError(f"a drawing layer is [H, W, 3|4], got shape {layer.shape}")
    if layer.shape[-1] == 3:
        layer = np.concatenate([layer, np.full(layer.shape[:2] + (1,), 255, layer.dtype)], -1)
    return layer.astype(np.uint8)


def compose_layers(layers: Sequence[np.ndarray] | None) -> np.ndarray | None:
    """uint8 RGBA [H, W, 4]: ``layers`` stacked bottom to top ("over" compositing); ``None`` when
    there is no layer. Every layer must have the same size."""
    layers = [layer for layer in (layers or []) if layer is not None]
    if not layers:
        return None
    rgbas = [_rgba(layer) for layer in layers]
    shape = rgbas[0].shape
    if any(rgba.shape != shape for rgba in rgbas):
        sizes = ", ".join(f"{r.shape[1]} x {r.shape[0]}" for r in rgbas)
        raise DrawingError(f"the drawing's layers differ in size ({sizes})")
    colour = np.zeros(shape[:2] + (3,))
    alpha = np.zeros(shape[:2] + (1,))
    for rgba in rgbas:
        top_alpha = rgba[..., 3:] / 255.0
        top = rgba[..., :3] / 255.0
        out_alpha = top_alpha + alpha * (1 - top_alpha)
        blended = top * top_alpha + colour * alpha * (1 - top_alpha)
        colour = np.where(out_alpha > 0, blended / np.maximum(out_alpha, 1e-12), 0.0)
        alpha = out_alpha
    stacked = np.concatenate([colour, alpha], axis=-1)
    return (stacked * 255).round().clip(0, 255).astype(np.uint8)


def block_vote(canvas_prompt: torch.Tensor, zoom: int) -> torch.Tensor:
    """A canvas-size prompt [zoom H, zoom W] to the image's size [H, W] (module docstring, 3)."""
    if zoom == 1:
        return canvas_prompt.clone()
    height, width = canvas_prompt.shape[0] // zoom, canvas_prompt.shape[1] // zoom
    blocks = canvas_prompt[: height * zoom, : width * zoom].reshape(height, zoom, width, zoom)
    red = (blocks == INDISPENSABLE).sum(dim=(1, 3))
    yellow = (blocks == PRECLUDED).sum(dim=(1, 3))
    half = zoom * zoom / 2
    prompt = torch.full((height, width), float(UNDECIDED))
    prompt[(red >= half) & (red >= yellow)] = float(INDISPENSABLE)
    prompt[(yellow >= half) & (yellow > red)] = float(PRECLUDED)
    return prompt


def prompt_from_layers(
    layers: Sequence[np.ndarray] | None, image_shape: Sequence[int]
) -> torch.Tensor | None:
    """The prompt [H, W] drawn on the canvas layers over an image of ``image_shape`` (H, W), or
    ``None`` when nothing is drawn (no layer, or only transparent pixels)."""
    composed = compose_layers(layers)
    if composed is None or not composed[..., 3].any():
        return None
    height, width = int(image_shape[-2]), int(image_shape[-1])
    zoom = display_zoom((height, width))
    if composed.shape[:2] != (height * zoom, width * zoom):
        raise DrawingError(
            f"the drawing is {composed.shape[1]} x {composed.shape[0]} pixels but the image is "
            f"shown at {width * zoom} x {height * zoom}; clear the prompt and draw again"
        )
    return block_vote(prompt_from_colours(composed), zoom)


def prompt_layer(prompt: torch.Tensor, zoom: int = 1) -> np.ndarray:
    """uint8 RGBA [zoom H, zoom W, 4]: a prompt as a canvas layer (red, yellow, transparent), the
    inverse of :func:`prompt_from_layers`."""
    values = prompt.detach().cpu().numpy()
    layer = np.zeros(values.shape + (4,), dtype=np.uint8)
    layer[values == INDISPENSABLE] = RED_RGBA
    layer[values == PRECLUDED] = YELLOW_RGBA
    return np.ascontiguousarray(np.repeat(np.repeat(layer, zoom, axis=0), zoom, axis=1))


def editor_value(image: torch.Tensor, prompt: torch.Tensor | None = None) -> dict:
    """The drawing widget's value: the image enlarged as background and, when given, ``prompt``
    as the one layer to go on drawing on."""
    zoom = display_zoom(image.shape)
    layers = [] if prompt is None else [prompt_layer(prompt, zoom)]
    return {"background": display_image(image, zoom), "layers": layers, "composite": None}


def has_marks(prompt: torch.Tensor | None) -> bool:
    """Whether a prompt marks any pixel indispensable or precluded."""
    return prompt is not None and bool((prompt != UNDECIDED).any())
