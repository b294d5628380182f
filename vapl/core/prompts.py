"""Visual attention prompts: encoding, validation, construction and incompleteness (files:
:mod:`vapl.core.prompt_files`).

A prompt ``D`` has the image's height and width; each pixel is

* ``INDISPENSABLE`` (+1): the prediction must look here,
* ``PRECLUDED`` (0): the prediction must not look here,
* ``UNDECIDED`` (-1): no instruction.

A sample without a prompt carries an all-undecided prompt and ``has_prompt = False``.
Plain torch and numpy: no Lightning import.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from vapl.core.errors import UserInputError

INDISPENSABLE = 1.0
PRECLUDED = 0.0
UNDECIDED = -1.0


class PromptError(UserInputError, ValueError):
    """A prompt that does not follow the encoding, with the sample or file it came from."""


def empty_prompt(height: int, width: int) -> torch.Tensor:
    """An all-undecided prompt: what a sample without a prompt carries."""
    return torch.full((height, width), UNDECIDED, dtype=torch.float32)


def validate_prompt(
    prompt: torch.Tensor | np.ndarray,
    shape: tuple[int, int] | None = None,
    source: str = "prompt",
) -> torch.Tensor:
    """Return ``prompt`` as float32 [H, W] after checking it; raise :class:`PromptError` naming ``source``."""
    tensor = torch.as_tensor(np.asarray(prompt) if not torch.is_tensor(prompt) else prompt)
    if tensor.ndim != 2:
        raise PromptError(f"{source}: a prompt is 2-D [H, W], got shape {tuple(tensor.shape)}")
    if shape is not None and tuple(tensor.shape) != tuple(shape):
        raise PromptError(
            f"{source}: prompt shape {tuple(tensor.shape)} does not match the image {tuple(shape)}"
        )
    tensor = tensor.to(torch.float32)
    valid = (tensor == INDISPENSABLE) | (tensor == PRECLUDED) | (tensor == UNDECIDED)
    if not bool(valid.all()):
        bad = torch.unique(tensor[~valid])[:5].tolist()
        raise PromptError(
            f"{source}: prompt values must be -1 (undecided), 0 (precluded) or 1 (indispensable); "
            f"found {bad}"
        )
    return tensor


def prompt_from_masks(
    indispensable: torch.Tensor | np.ndarray | None = None,
    precluded: torch.Tensor | np.ndarray | None = None,
    shape: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Build a prompt from boolean masks. Where both are set, precluded wins (the safer instruction)."""
    masks = [
        torch.as_tensor(np.asarray(m)).bool() for m in (indispensable, precluded) if m is not None
    ]
    if shape is None:
        if not masks:
            raise PromptError("prompt_from_masks needs a mask or a shape")
        shape = tuple(masks[0].shape)
    prompt = empty_prompt(*shape)
    if indispensable is not None:
        prompt[torch.as_tensor(np.asarray(indispensable)).bool()] = INDISPENSABLE
    if precluded is not None:
        prompt[torch.as_tensor(np.asarray(precluded)).bool()] = PRECLUDED
    return prompt


def resize_prompt(prompt: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize, so the three values stay the only values."""
    if tuple(prompt.shape[-2:]) == tuple(size):
        return prompt
    return F.interpolate(prompt[None, None], size=size, mode="nearest")[0, 0]


def _dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    if radius <= 0:
        return mask
    kernel = 2 * radius + 1
    return F.max_pool2d(mask[None, None].float(), kernel, stride=1, padding=radius)[0, 0] > 0


def _erode(mask: torch.Tensor, radius: int) -> torch.Tensor:
    return ~_dilate(~mask, radius)


def simulate_incomplete(
    region: torch.Tensor,
    keep_fraction: float = 0.5,
    jitter: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Simulate an incomplete annotation of ``region`` (a boolean [H, W] mask), as the paper does.

    A random fraction ``keep_fraction`` of the region's area is kept: a half-plane through the
    region at a random angle is swept until that fraction of the pixels lies on the kept side
    (annotators miss a connected part, not scattered pixels). The border of what is kept is then
    jittered: every pixel within ``jitter`` of that border is kept or dropped by a fair coin. The
    result never reaches outside ``region`` grown by ``jitter``. An empty region stays empty.
    """
    region = region.bool()
    if not bool(region.any()) or keep_fraction >= 1.0 and jitter <= 0:
        return region.clone()
    ys, xs = torch.nonzero(region, as_tuple=True)
    angle = torch.rand((), generator=generator) * 2 * torch.pi
    projection = ys.float() * torch.cos(angle) + xs.float() * torch.sin(angle)
    n_keep = max(1, int(round(keep_fraction * len(ys))))
    order = torch.argsort(projection)[:n_keep]
    kept = torch.zeros_like(region)
    kept[ys[order], xs[order]] = True
    if jitter > 0:
        grown = _dilate(kept, jitter)
        shrunk = _erode(kept, jitter)
        coin = torch.rand(region.shape, generator=generator) < 0.5
        border = grown & ~shrunk
        kept = shrunk | (border & coin)
        if not bool(kept.any()):
            kept[ys[order[0]], xs[order[0]]] = True
    return kept


def map_to_prompt(
    maps: torch.Tensor, indispensable_above: float = 0.7, precluded_below: float = 0.2
) -> torch.Tensor:
    """Attention maps [..., H, W] in [0, 1] as VAPL prompts: ``map >= indispensable_above`` ->
    indispensable (1), ``map <= precluded_below`` -> precluded (0), the rest undecided (-1)."""
    if not 0.0 <= precluded_below < indispensable_above <= 1.0:
        raise ValueError(
            "need 0 <= precluded_below < indispensable_above <= 1, got "
            f"{precluded_below} and {indispensable_above}"
        )
    prompt = torch.full_like(maps, float(UNDECIDED))
    prompt = torch.where(maps <= precluded_below, torch.full_like(maps, float(PRECLUDED)), prompt)
    return torch.where(
        maps >= indispensable_above, torch.full_like(maps, float(INDISPENSABLE)), prompt
    )
