"""NIfTI volumes (nibabel), returned in the canonical ``[z, y, x]`` orientation."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from datamodules.io.orientation import (
    canonical_affine_from_ras,
    canonical_shape_of,
    canonical_volume,
)


class NiftiError(ValueError):
    """A NIfTI file that cannot be used; the message names the file and the reason."""


def load_nifti(path: str | Path) -> nib.Nifti1Image:
    """Open a ``.nii`` / ``.nii.gz`` header (pixel data is read later, by :func:`read_nifti`)."""
    path = Path(path)
    if not path.is_file():
        raise NiftiError(f"{path}: file not found")
    try:
        image = nib.load(path)
    except Exception as error:  # nibabel raises several types for damaged headers
        raise NiftiError(f"{path}: not a readable NIfTI file ({error})") from error
    if len(image.shape) != 3:
        raise NiftiError(f"{path}: expected a 3-D volume, got shape {image.shape}")
    return image


def read_nifti(
    path: str | Path, dtype: type = np.float32, image: nib.Nifti1Image | None = None
) -> np.ndarray:
    """Read a volume as ``[z, y, x]`` (see :mod:`datamodules.io.orientation`), scaled by the
    header's slope and intercept. Pass ``dtype=np.uint8`` for label maps (values are rounded)."""
    path = Path(path)
    image = load_nifti(path) if image is None else image
    try:
        data = np.asarray(image.get_fdata(dtype=np.float32))
    except Exception as error:  # truncated gzip streams raise EOFError, zlib.error, OSError
        raise NiftiError(f"{path}: cannot read voxel data ({error})") from error
    if np.issubdtype(dtype, np.integer):
        data = np.rint(data)
    return canonical_volume(data.astype(dtype), canonical_affine_from_ras(image.affine))


def canonical_shape(image: nib.Nifti1Image) -> tuple[int, int, int]:
    """The ``[z, y, x]`` shape :func:`read_nifti` will return, from the header alone."""
    return canonical_shape_of(image.shape, canonical_affine_from_ras(image.affine))
