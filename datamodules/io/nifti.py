"""NIfTI volumes (nibabel), returned in the canonical ``[z, y, x]`` orientation.

A volume is 3-D. A 4-D file whose fourth axis has length 1 (and any further axes too), a frequent
export, is read as the 3-D volume it holds; a series of several volumes (fMRI, diffusion) is
refused with :class:`NiftiError`. NaN and infinite voxels (resampled volumes hold NaN outside the
field of view) are replaced by the volume's smallest finite value and counted
(:func:`datamodules.io.orientation.replace_nonfinite`); a volume with no finite voxel is refused.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from datamodules.io.orientation import (
    canonical_affine_from_ras,
    canonical_shape_of,
    canonical_volume,
    replace_nonfinite,
)
from vapl.core.errors import UserInputError

log = logging.getLogger(__name__)


class NiftiError(UserInputError, ValueError):
    """A NIfTI file that cannot be used; the message names the file and the reason."""


@dataclass(frozen=True, eq=False)
class NiftiVolume:
    """A volume read by :func:`read_nifti_volume`: ``data`` ``[z, y, x]``, the number of NaN or
    infinite voxels replaced, and the shape stored in the file (4-D for a single-volume series)."""

    data: np.ndarray
    nonfinite: int
    file_shape: tuple[int, ...]


def check_volume_shape(path: str | Path, shape: Sequence[int]) -> None:
    """:class:`NiftiError` unless ``shape`` is 3-D, or 3-D followed by axes of length 1."""
    shape = tuple(int(s) for s in shape)
    if len(shape) >= 3 and all(s == 1 for s in shape[3:]):
        return
    if len(shape) >= 4:
        raise NiftiError(
            f"{path}: expected a 3-D volume, got shape {shape}: a series of "
            f"{int(np.prod(shape[3:]))} volumes; extract the one to use (e.g. nibabel's "
            "four_to_three)"
        )
    raise NiftiError(f"{path}: expected a 3-D volume, got shape {shape}")


def load_nifti(path: str | Path) -> nib.Nifti1Image:
    """Open a ``.nii`` / ``.nii.gz`` header (pixel data is read later, by :func:`read_nifti`)."""
    path = Path(path)
    if not path.is_file():
        raise NiftiError(f"{path}: file not found")
    try:
        image = nib.load(path)
    except Exception as error:  # nibabel raises several types for damaged headers
        raise NiftiError(f"{path}: not a readable NIfTI file ({error})") from error
    check_volume_shape(path, image.shape)
    return image


def read_nifti_volume(
    path: str | Path, dtype: type = np.float32, image: nib.Nifti1Image | None = None
) -> NiftiVolume:
    """Read a volume as ``[z, y, x]`` (see :mod:`datamodules.io.orientation`), scaled by the
    header's slope and intercept, with non-finite voxels replaced and counted (module docstring).
    Pass ``dtype=np.uint8`` for label maps (values are rounded)."""
    path = Path(path)
    image = load_nifti(path) if image is None else image
    check_volume_shape(path, image.shape)
    try:
        data = np.asarray(image.get_fdata(dtype=np.float32))
    except Exception as error:  # truncated gzip streams raise EOFError, zlib.error, OSError
        raise NiftiError(f"{path}: cannot read voxel data ({error})") from error
    file_shape = tuple(int(s) for s in data.shape)
    data = data.reshape(file_shape[:3])
    data, nonfinite = replace_nonfinite(data)
    if nonfinite == data.size:
        raise NiftiError(f"{path}: no finite voxel (all {data.size} are NaN or infinite)")
    if nonfinite:
        log.warning(
            "%s: %d NaN or infinite voxels of %d replaced by the minimum %g",
            path,
            nonfinite,
            data.size,
            float(data.min()),
        )
    if np.issubdtype(dtype, np.integer):
        data = np.rint(data)
    volume = canonical_volume(data.astype(dtype), canonical_affine_from_ras(image.affine))
    return NiftiVolume(volume, nonfinite, file_shape)


def read_nifti(
    path: str | Path, dtype: type = np.float32, image: nib.Nifti1Image | None = None
) -> np.ndarray:
    """The ``[z, y, x]`` array of :func:`read_nifti_volume` (finite, canonical orientation)."""
    return read_nifti_volume(path, dtype, image).data


def canonical_shape(image: nib.Nifti1Image) -> tuple[int, int, int]:
    """The ``[z, y, x]`` shape :func:`read_nifti` will return, from the header alone."""
    return canonical_shape_of(image.shape[:3], canonical_affine_from_ras(image.affine))
