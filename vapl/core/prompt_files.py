"""Prompt files: one reader for every entry point (training data, ``vapl predict-image``, the app).

A prompt file is read by one of two conventions, chosen by the file's content:

* **Gray code** (what :func:`write_prompt` writes and the folder format uses): a pixel at or
  above :data:`GRAY_INDISPENSABLE` (240 of 255) is indispensable, at or below
  :data:`GRAY_PRECLUDED` (15) precluded, anything between undecided (``write_prompt`` writes 255,
  0 and 128). A colour file whose channels are equal everywhere (gray saved as RGB) is gray code.
* **Colour drawing** (a paint program, or the browser app): red is indispensable, yellow is
  precluded, anything else undecided: the image underneath, white, black, other colours and
  transparent pixels. Tolerance for anti-aliased edges: a pixel with alpha of at least 128 is
  red when ``R >= 128`` and ``G, B <= R / 2``, yellow when ``R >= 128``, ``G >= 0.6 R`` and
  ``B <= min(R, G) / 2``; a half-transparent or half-blended edge pixel is undecided.

A PNG or JPEG is a colour drawing when at least one of its opaque pixels has channels that differ by
more than :data:`COLOUR_SPREAD` (48 of 255), else gray code; ``kind="gray"`` or ``kind="colour"``
forces either reading. NPY files hold the values themselves: -1 undecided, 0 precluded, 1
indispensable.

A file in which no pixel is indispensable or precluded (a drawing in green, say) is almost
certainly a mistake: ``on_empty="warn"`` (default) warns with the file's name, ``"error"`` raises
:class:`~vapl.core.prompts.PromptError`, ``"ignore"`` returns the all-undecided prompt silently.
Plain numpy and torch: no Lightning import.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from vapl.core.prompts import (
    INDISPENSABLE,
    PRECLUDED,
    UNDECIDED,
    PromptError,
    prompt_from_masks,
    validate_prompt,
)

PROMPT_SUFFIXES = (".png", ".jpg", ".jpeg", ".npy")
PROMPT_KINDS = ("auto", "gray", "colour")
ON_EMPTY = ("warn", "error", "ignore")
GRAY_INDISPENSABLE = 240
GRAY_PRECLUDED = 15
COLOUR_SPREAD = 48


class EmptyPromptWarning(UserWarning):
    """A prompt file with no indispensable and no precluded pixel."""


def prompt_from_gray(array: np.ndarray) -> torch.Tensor:
    """A prompt from gray values [H, W] in 0..255 (module docstring: gray code)."""
    values = np.asarray(array, dtype=np.float32)
    prompt = np.full(values.shape, UNDECIDED, dtype=np.float32)
    prompt[values >= GRAY_INDISPENSABLE] = INDISPENSABLE
    prompt[values <= GRAY_PRECLUDED] = PRECLUDED
    return torch.from_numpy(prompt)


def prompt_from_colours(rgba: np.ndarray) -> torch.Tensor:
    """A prompt from an RGB or RGBA uint8 array [H, W, 3 or 4]: red indispensable, yellow
    precluded, everything else undecided (module docstring: colour drawing)."""
    rgba = _as_rgba(rgba)
    r, g, b, a = (rgba[..., i].astype(np.float32) for i in range(4))
    opaque = a >= 128
    red = opaque & (r >= 128) & (g <= r / 2) & (b <= r / 2)
    yellow = opaque & (r >= 128) & (g >= 0.6 * r) & (b <= np.minimum(r, g) / 2)
    return prompt_from_masks(red, yellow)


def is_colour_drawing(rgba: np.ndarray) -> bool:
    """True when an opaque pixel's channels differ by more than :data:`COLOUR_SPREAD`."""
    rgba = _as_rgba(rgba)
    rgb = rgba[..., :3].astype(np.int16)
    spread = rgb.max(axis=-1) - rgb.min(axis=-1)
    return bool(((spread > COLOUR_SPREAD) & (rgba[..., 3] >= 128)).any())


def prompt_from_picture(
    picture: np.ndarray, kind: str = "auto", source: str = "prompt"
) -> tuple[torch.Tensor, str]:
    """A prompt and the convention it was read by (``"gray"`` or ``"colour"``) from a picture:
    [H, W] gray values, or [H, W, 3 or 4] uint8 colour."""
    if kind not in PROMPT_KINDS:
        raise ValueError(f"prompt kind is one of {', '.join(PROMPT_KINDS)}, not {kind!r}")
    picture = np.asarray(picture)
    if picture.ndim == 2:
        if kind == "colour":
            raise PromptError(f"{source}: a colour drawing was expected, the picture is gray")
        return prompt_from_gray(picture), "gray"
    if picture.ndim != 3 or picture.shape[-1] not in (3, 4):
        raise PromptError(
            f"{source}: a prompt picture is [H, W] or [H, W, 3|4], got {picture.shape}"
        )
    if kind == "colour" or (kind == "auto" and is_colour_drawing(picture)):
        return prompt_from_colours(picture), "colour"
    return prompt_from_gray(picture[..., 0]), "gray"


def read_prompt(
    path: str | Path,
    shape: tuple[int, int] | None = None,
    kind: str = "auto",
    on_empty: str = "warn",
) -> torch.Tensor:
    """Read a prompt file (PNG, JPEG or NPY) as float32 [H, W] in {-1, 0, 1}.

    Args:
        path: the file.
        shape: the image's (height, width): a prompt of another size is an error.
        kind: ``auto`` (by the file's content), ``gray`` or ``colour`` (module docstring).
        on_empty: what a file without any indispensable or precluded pixel does: ``warn``,
            ``error`` or ``ignore``.
    """
    if on_empty not in ON_EMPTY:
        raise ValueError(f"on_empty is one of {', '.join(ON_EMPTY)}, not {on_empty!r}")
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in PROMPT_SUFFIXES:
        raise PromptError(
            f"{path}: prompt files are {', '.join(PROMPT_SUFFIXES)}, not {suffix or 'no suffix'}"
        )
    if not path.is_file():
        raise PromptError(f"{path}: file not found")
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise PromptError(f"{path}: cannot read prompt ({error})") from error
        prompt, convention = validate_prompt(array.astype(np.float32), source=str(path)), "npy"
    else:
        prompt, convention = prompt_from_picture(_load_picture(path), kind, str(path))
    if shape is not None and tuple(prompt.shape) != tuple(shape):
        raise PromptError(
            f"{path}: prompt is {prompt.shape[0]} x {prompt.shape[1]} pixels and does not match "
            f"the image ({shape[0]} x {shape[1]}); draw on a copy of the image at its size "
            "(vapl predict-image --save-image writes one)"
        )
    if on_empty != "ignore" and bool((prompt == UNDECIDED).all()):
        message = (
            f"{path}: no indispensable or precluded pixel (read as {convention}: "
            + (
                "red and yellow mark them"
                if convention == "colour"
                else "255 and 0 mark them"
                if convention == "gray"
                else "1 and 0 mark them"
            )
            + "); the prompt says nothing"
        )
        if on_empty == "error":
            raise PromptError(message)
        warnings.warn(message, EmptyPromptWarning, stacklevel=2)
    return prompt


def write_prompt(prompt: torch.Tensor | np.ndarray, path: str | Path) -> Path:
    """Write a prompt as gray-code PNG (255 / 0 / 128) or NPY (-1 / 0 / 1), by the suffix."""
    path = Path(path)
    tensor = validate_prompt(prompt, source=str(path))
    suffix = path.suffix.lower()
    if suffix == ".npy":
        np.save(path, tensor.numpy())
    elif suffix == ".png":
        from PIL import Image

        array = np.full(tensor.shape, 128, dtype=np.uint8)
        array[tensor.numpy() == INDISPENSABLE] = 255
        array[tensor.numpy() == PRECLUDED] = 0
        Image.fromarray(array).save(path)
    else:
        raise PromptError(f"{path}: prompts are written as .png or .npy, not {suffix or 'none'}")
    return path


def _as_rgba(picture: np.ndarray) -> np.ndarray:
    picture = np.asarray(picture)
    if picture.ndim != 3 or picture.shape[-1] not in (3, 4):
        raise PromptError(f"a colour picture is [H, W, 3|4], got shape {picture.shape}")
    if picture.shape[-1] == 3:
        alpha = np.full(picture.shape[:2] + (1,), 255, dtype=picture.dtype)
        picture = np.concatenate([picture, alpha], axis=-1)
    return picture


def _load_picture(path: Path) -> np.ndarray:
    """[H, W] gray values 0..255, or [H, W, 4] uint8 RGBA."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            if image.mode in ("L", "1", "P", "LA", "RGB", "RGBA", "PA"):
                if image.mode in ("L", "1"):
                    return np.asarray(image.convert("L"))
                return np.asarray(image.convert("RGBA"))
            array = np.asarray(image)  # 16-bit or float gray
    except OSError as error:
        raise PromptError(f"{path}: cannot read prompt ({error})") from error
    if array.ndim != 2:
        raise PromptError(f"{path}: unsupported prompt image mode with shape {array.shape}")
    peak = 65535.0 if array.dtype == np.uint16 or array.max() > 255 else 255.0
    return np.asarray(array, dtype=np.float32) * (255.0 / peak)
