"""One convention for every volume, whatever file it came from: axis order and finite values.

Volumes are arrays ``[z, y, x]`` in the DICOM patient frame (LPS): the index along the first axis
grows towards the head, rows grow towards the patient's back, columns towards the patient's left.
Shown with row 0 at the top, an axial slice is the radiologist's view: anterior up, the patient's
right on the left of the screen.

DICOM gives each slice's row and column directions (ImageOrientationPatient) in LPS; NIfTI gives an
affine from voxel indices to RAS, whose first two axes point the other way. Both are turned into
the convention above here, and nowhere else.

Values: the readers (:mod:`.dicom`, :mod:`.nifti`) pass what they decode through
:func:`replace_nonfinite`, so no NaN or infinity leaves them (resampled NIfTI volumes hold NaN
outside the field of view; float DICOM pixel data and overflowing rescales can too).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from nibabel.orientations import apply_orientation, io_orientation

from vapl.core.errors import UserInputError

#: Converts RAS world coordinates (NIfTI) to LPS (DICOM) and back.
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


class OrientationError(UserInputError, ValueError):
    """A volume or slice whose orientation the readers do not handle (e.g. not axial)."""


def replace_nonfinite(values: np.ndarray) -> tuple[np.ndarray, int]:
    """``values`` with every NaN, +inf and -inf replaced by the smallest finite value, and how many
    were replaced. With no finite value at all, everything becomes 0 and the count is the size
    (callers refuse such data). Integer arrays hold neither and come back as they are."""
    if not np.issubdtype(values.dtype, np.floating):
        return values, 0
    finite = np.isfinite(values)
    count = int(values.size - np.count_nonzero(finite))
    if count == 0:
        return values, 0
    fill = values[finite].min() if count < values.size else 0
    return np.where(finite, values, fill).astype(values.dtype, copy=False), count


def canonical_volume(volume: np.ndarray, affine_lps: np.ndarray) -> np.ndarray:
    """Reorder a 3-D array whose voxel-to-LPS affine is ``affine_lps`` into ``[z, y, x]``.

    Only axis permutations and flips are applied (the nearest world axis of each voxel axis), so
    values are never resampled.
    """
    if volume.ndim != 3:
        raise OrientationError(f"expected a 3-D volume, got shape {volume.shape}")
    orientation = io_orientation(affine_lps)
    xyz = apply_orientation(volume, orientation)
    return np.ascontiguousarray(xyz.transpose(2, 1, 0))


def canonical_shape_of(shape: Sequence[int], affine_lps: np.ndarray) -> tuple[int, int, int]:
    """The shape :func:`canonical_volume` gives an array of ``shape``, without the array."""
    world = [0, 0, 0]
    for size, (axis, _flip) in zip(shape, io_orientation(affine_lps)):
        world[int(axis)] = int(size)
    return world[2], world[1], world[0]


def canonical_affine_from_ras(affine_ras: np.ndarray) -> np.ndarray:
    """The LPS affine of a NIfTI volume whose affine maps voxels to RAS."""
    return RAS_TO_LPS @ np.asarray(affine_ras, dtype=np.float64)


def slice_normal(orientation: Sequence[float]) -> np.ndarray:
    """The unit normal (LPS) of a slice with DICOM ImageOrientationPatient ``orientation``."""
    column_direction = np.asarray(orientation[:3], dtype=np.float64)
    row_direction = np.asarray(orientation[3:6], dtype=np.float64)
    normal = np.cross(column_direction, row_direction)
    return normal / np.linalg.norm(normal)


def check_axial(orientation: Sequence[float], source: str = "slice") -> None:
    """Raise :class:`OrientationError` unless the slice plane is (nearly) axial."""
    if len(orientation) != 6:
        raise OrientationError(
            f"{source}: ImageOrientationPatient needs 6 values, got {orientation}"
        )
    if abs(slice_normal(orientation)[2]) < 0.8:
        raise OrientationError(
            f"{source}: not an axial slice (ImageOrientationPatient {list(orientation)})"
        )


def canonical_slice(array: np.ndarray, orientation: Sequence[float]) -> np.ndarray:
    """Reorder a DICOM slice ``[rows, columns]`` into ``[y, x]`` (rows posterior, columns left).

    DICOM's ImageOrientationPatient holds the LPS direction of increasing column index (first
    three values) and of increasing row index (last three).
    """
    if array.ndim != 2:
        raise OrientationError(f"expected a 2-D slice, got shape {array.shape}")
    check_axial(orientation)
    column_direction = np.asarray(orientation[:3], dtype=np.float64)
    row_direction = np.asarray(orientation[3:6], dtype=np.float64)
    # Affine from (row, column) indices to in-plane world (x, y).
    affine = np.eye(3)
    affine[:2, 0] = row_direction[:2]
    affine[:2, 1] = column_direction[:2]
    xy = apply_orientation(array, io_orientation(affine))
    return np.ascontiguousarray(xy.T)
