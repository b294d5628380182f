"""Reading image and explanation files (PNG, JPEG, NPY) into float tensors in [0, 1].

Values are scaled by their storage type: ``uint8`` is divided by 255, ``uint16`` by 65535, ``bool``
becomes 0 / 1, floating-point arrays are kept as they are. Plain torch, numpy and Pillow: no
Lightning import. Every failure raises :class:`ImageFileError` with the reason in plain words.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vapl.core.errors import UserInputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".npy")
EXPLANATION_SUFFIXES = (".png", ".npy")

#: ITU-R BT.601 luma weights (what Pillow's "L" conversion uses): RGB -> one channel.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)

#: Pillow modes read as one grey channel without conversion (16-bit PNGs open as "I;16*" or "I").
_GREY_MODES = ("L", "I;16", "I;16B", "I;16L", "F")


class ImageFileError(UserInputError, ValueError):
    """A file that cannot be used as an image or explanation; the message says why."""


def scale_to_unit(array: np.ndarray) -> np.ndarray:
    """float32 copy of ``array``: uint8 / 255, uint16 / 65535, bool as 0 / 1, floats unchanged."""
    unsigned = array.dtype.kind == "u"  # any byte order
    if unsigned and array.dtype.itemsize == 1:
        return array.astype(np.float32) / 255.0
    if unsigned and array.dtype.itemsize == 2:
        return array.astype(np.float32) / 65535.0
    if array.dtype == np.bool_:
        return array.astype(np.float32)
    if np.issubdtype(array.dtype, np.floating):
        result = array.astype(np.float32)
        if not np.isfinite(result).all():
            raise ImageFileError("contains NaN or infinite values")
        return result
    raise ImageFileError(
        f"unsupported data type {array.dtype}; store uint8, uint16 or float (already scaled)"
    )


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise ImageFileError(f"cannot read NPY file ({error})") from error


def _load_pil(path: Path, grey_only: bool = False) -> np.ndarray:
    """[H, W] or [H, W, 3] array in the file's own integer type."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            if image.mode == "I":  # 16-bit PNGs in some Pillow versions; values fit uint16
                array = np.asarray(image)
                if array.min() < 0 or array.max() > 65535:
                    raise ImageFileError("32-bit integer image; store uint8, uint16 or NPY float")
                return array.astype(np.uint16)
            if image.mode in _GREY_MODES:
                array = np.asarray(image)
            elif image.mode in ("1", "LA"):
                array = np.asarray(image.convert("L"))
            else:
                array = np.asarray(image.convert("RGB"))
    except (OSError, UnidentifiedImageError, SyntaxError, Image.DecompressionBombError) as error:
        raise ImageFileError(f"cannot decode image ({error})") from error
    return array[..., 0] if grey_only and array.ndim == 3 else array


def _channels_last(array: np.ndarray) -> np.ndarray:
    """An NPY image as [H, W, C]: [H, W] is grey; [H, W, C] or [C, H, W] with C in (1, 3)."""
    if array.ndim == 2:
        return array[..., None]
    if array.ndim == 3 and array.shape[-1] in (1, 3):
        return array
    if array.ndim == 3 and array.shape[0] in (1, 3):
        return np.moveaxis(array, 0, -1)
    raise ImageFileError(
        f"NPY image of shape {array.shape}: expected [H, W], [H, W, C] or [C, H, W] with C 1 or 3"
    )


def convert_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    """[C, H, W] with C in (1, 3) to ``channels``: grey is repeated, RGB becomes BT.601 luma."""
    if image.shape[0] == channels:
        return image
    if image.shape[0] == 1 and channels == 3:
        return image.expand(3, -1, -1).clone()
    if image.shape[0] == 3 and channels == 1:
        weights = torch.tensor(LUMA_WEIGHTS, dtype=image.dtype).view(3, 1, 1)
        return (image * weights).sum(dim=0, keepdim=True)
    raise ImageFileError(f"cannot convert {image.shape[0]} channels to {channels}")


def read_image(path: str | Path, channels: int) -> torch.Tensor:
    """Read a PNG, JPEG or NPY image as float32 [channels, H, W], scaled by :func:`scale_to_unit`."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise ImageFileError(f"images are {', '.join(IMAGE_SUFFIXES)}, not {suffix or 'no suffix'}")
    if suffix == ".npy":
        array = _channels_last(_load_npy(path))
    else:
        array = _load_pil(path)
        array = array[..., None] if array.ndim == 2 else array
    if min(array.shape[:2]) < 1:
        raise ImageFileError(f"empty image of shape {array.shape}")
    image = torch.from_numpy(np.ascontiguousarray(scale_to_unit(array))).permute(2, 0, 1)
    return convert_channels(image, channels).contiguous()


def read_explanation(path: str | Path) -> torch.Tensor:
    """Read a ground-truth explanation as float32 [H, W] in [0, 1].

    PNG: the first channel, 0..255 (or 0..65535 for 16-bit) mapped to [0, 1]. NPY: a 2-D array of
    any numeric type whose values already lie in [0, 1].
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in EXPLANATION_SUFFIXES:
        raise ImageFileError(
            f"explanations are {', '.join(EXPLANATION_SUFFIXES)}, not {suffix or 'no suffix'}"
        )
    if suffix == ".npy":
        array = _load_npy(path)
        if array.ndim != 2:
            raise ImageFileError(f"an explanation is 2-D [H, W], got shape {array.shape}")
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
            raise ImageFileError(f"unsupported data type {array.dtype}")
        values = array.astype(np.float32)
        if not np.isfinite(values).all():
            raise ImageFileError("explanation contains NaN or infinite values")
        if values.size and (values.min() < 0.0 or values.max() > 1.0):
            raise ImageFileError(
                f"explanation values must lie in [0, 1]; found {values.min():g} to {values.max():g}"
            )
    else:
        values = scale_to_unit(_load_pil(path, grey_only=True))
    return torch.from_numpy(np.ascontiguousarray(values))


def resize_bilinear(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of [C, H, W] or [H, W] (antialiased when shrinking); same shape is a no-op."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    batch = image[None] if image.ndim == 3 else image[None, None]
    resized = F.interpolate(batch, size=size, mode="bilinear", align_corners=False, antialias=True)
    return resized[0] if image.ndim == 3 else resized[0, 0]
