"""From one CT slice in HU to the arrays a cache row holds: window, resize, body mask.

Plain numpy and torch; the slices come in already in the canonical orientation.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

#: Lung window (level -600, width 1500) and abdominal window (level 40, width 400), in HU.
LUNG_WINDOW = (-600.0, 1500.0)
ABDOMEN_WINDOW = (40.0, 400.0)
#: Tissue denser than this (HU) counts as body; air and lung parenchyma are below it.
BODY_THRESHOLD_HU = -500.0


def apply_window(hu: np.ndarray, level: float, width: float) -> np.ndarray:
    """Map ``[level - width / 2, level + width / 2]`` HU onto [0, 1], clipping outside."""
    low = level - width / 2.0
    return np.clip((hu.astype(np.float32) - low) / np.float32(width), 0.0, 1.0)


def resize_plane(plane: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of a 2-D float array to ``size x size``, antialiased when shrinking."""
    if plane.shape == (size, size):
        return plane.astype(np.float32)
    tensor = torch.from_numpy(np.ascontiguousarray(plane, dtype=np.float32))[None, None]
    resized = F.interpolate(tensor, size=(size, size), mode="bilinear", antialias=True)
    return resized[0, 0].numpy()


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Resize a boolean mask by area: a pixel is in where at least half of it was.

    A non-empty mask never comes out empty: if every pixel is under half covered, the most covered
    ones are kept (small nodules survive a large shrink).
    """
    if mask.shape == (size, size):
        return mask.astype(bool)
    tensor = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]
    shrink = size < max(mask.shape)
    fraction = F.interpolate(tensor, size=(size, size), mode="area" if shrink else "bilinear")[0, 0]
    fraction = fraction.numpy()
    resized = fraction >= 0.5
    if mask.any() and not resized.any():
        resized = fraction >= fraction.max() - 1e-6
    return resized


def _dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    kernel = 2 * radius + 1
    return F.max_pool2d(mask[None, None].float(), kernel, stride=1, padding=radius)[0, 0] > 0


def _inside_along(mask: np.ndarray, axis: int) -> np.ndarray:
    """Pixels with a mask pixel on both sides of them along ``axis`` (or in the mask)."""
    before = np.maximum.accumulate(mask, axis=axis)
    after = np.flip(np.maximum.accumulate(np.flip(mask, axis=axis), axis=axis), axis=axis)
    return before & after


def body_mask(hu: np.ndarray, threshold: float = BODY_THRESHOLD_HU, radius: int = 1) -> np.ndarray:
    """Where the body is, from a slice in HU: tissue above ``threshold``, opened by ``radius``
    pixels (drops noise and thin structures), with every pixel enclosed by tissue along both its
    row and its column filled in (the lungs, the bowel gas).

    Conservative: air pockets that a straight line cannot reach from the edge count as body.
    """
    dense = torch.from_numpy(np.ascontiguousarray(hu) > threshold)
    if radius > 0:
        eroded = ~_dilate(~dense, radius)
        dense = _dilate(eroded, radius) & dense
    tissue = dense.numpy()
    return tissue | (_inside_along(tissue, 0) & _inside_along(tissue, 1))


def slice_arrays(
    hu: np.ndarray,
    masks: dict[str, np.ndarray],
    image_size: int,
    window: tuple[float, float],
) -> dict[str, np.ndarray]:
    """The cache row of one canonical slice: ``images`` (float16, windowed to [0, 1]), ``body``
    and every mask in ``masks`` (uint8), all ``image_size`` square."""
    level, width = window
    image = resize_plane(apply_window(hu, level, width), image_size)
    arrays = {
        "images": np.clip(image, 0.0, 1.0).astype(np.float16),
        # At the slice's own resolution: walls a few pixels thick survive the opening.
        "body": resize_mask(body_mask(hu), image_size).astype(np.uint8),
    }
    for name, mask in masks.items():
        if mask.shape != hu.shape:
            raise ValueError(f"mask {name!r} has shape {mask.shape}, the slice {hu.shape}")
        arrays[name] = resize_mask(mask, image_size).astype(np.uint8)
    return arrays
