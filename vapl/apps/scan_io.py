"""One image and one drawn prompt from files, for prompted prediction on a new case.

Images become float32 [C, H, W] in [0, 1], always finite (:func:`read_scan`;
:func:`read_scan_info` returns the same image with what the reader found: the frame or slice read
and how many the file has, how many NaN or infinite values were replaced, the window used):

* DICOM (``.dcm``, or any file pydicom reads), decoded by :func:`datamodules.io.dicom.read_frame`
  (compressed transfer syntaxes, multi-frame files, colour depths: see there and docs/data.md).
  Grey images: stored values times ``RescaleSlope`` plus ``RescaleIntercept`` (Hounsfield units
  for CT), then the window ``(centre, width)`` maps ``centre - width / 2 .. centre + width / 2``
  to 0..1 (clipped). The window is the one given, else the file's first
  ``WindowCenter``/``WindowWidth``, else the image's minimum..maximum. ``MONOCHROME1`` is
  inverted. Colour images (RGB, YBR, palette) are RGB scaled by their bits stored; no window.
  Multi-frame files give frame ``slice_index`` (default: the middle).
* NIfTI (``.nii``, ``.nii.gz``): axial slice ``slice_index`` (default: the middle) of the volume
  read by :func:`datamodules.io.nifti.read_nifti_volume` (3-D, or 4-D with one volume; NaN and
  infinite voxels replaced by the volume's minimum); window as for DICOM, else min..max.

DICOM slices and NIfTI volumes come out in the orientation the medical datamodules train on
(:mod:`datamodules.io.orientation`: anterior up, the patient's right on the left), so a model
trained on LIDC or Pancreas sees a new scan the same way round.
* PNG, JPEG, NPY: :func:`datamodules.image_files.read_image` (8-bit / 255, 16-bit / 65535).

Every file that cannot be read raises :class:`ScanFileError` naming the file and the reason.
Prompt files, drawn or gray-coded, are read by :func:`vapl.core.prompt_files.read_prompt`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from datamodules.io.dicom import DicomError, read_frame
from datamodules.io.nifti import NiftiError, read_nifti_volume
from datamodules.io.orientation import OrientationError, canonical_slice
from vapl.core.errors import UserInputError

DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
NIFTI_SUFFIXES = (".nii", ".nii.gz")


class ScanFileError(UserInputError, ValueError):
    """An image file that cannot be read; the message names the file and the reason."""


@dataclass(frozen=True, eq=False)
class ScanInfo:
    """An image read by :func:`read_scan_info` and what the reader found.

    ``image``: float32 [C, H, W] in [0, 1], finite. ``kind``: ``"dicom"``, ``"nifti"`` or
    ``"image"``. ``slice_index`` of ``slices``: the DICOM frame or NIfTI axial slice read, and how
    many the file has (0 of 1 for other images). ``nonfinite``: NaN and infinite values replaced
    (in the decoded DICOM frame, in the whole NIfTI volume). ``window``: the (centre, width)
    applied, ``None`` for the image's own range or a colour image. ``photometric``: the DICOM
    PhotometricInterpretation, else ``None``.
    """

    image: torch.Tensor
    path: Path
    kind: str
    slice_index: int
    slices: int
    nonfinite: int = 0
    window: tuple[float, float] | None = None
    photometric: str | None = None


def _window(values: np.ndarray, window: tuple[float, float] | None) -> np.ndarray:
    if window is None:
        low, high = float(values.min()), float(values.max())
    else:
        centre, width = window
        if width <= 0:
            raise ScanFileError(f"window width must be positive, got {width}")
        low, high = centre - width / 2, centre + width / 2
    return np.clip((values - low) / max(high - low, 1e-12), 0.0, 1.0).astype(np.float32)


def _dicom_info(
    path: Path, window: tuple[float, float] | None, slice_index: int | None
) -> ScanInfo:
    try:
        frame = read_frame(path, slice_index)
    except DicomError as error:
        raise ScanFileError(str(error)) from error
    info = ScanInfo(
        image=torch.empty(0),
        path=path,
        kind="dicom",
        slice_index=frame.frame,
        slices=frame.frames,
        nonfinite=frame.nonfinite,
        photometric=frame.photometric,
    )
    if frame.colour:  # RGB in [0, 1] already
        image = torch.from_numpy(np.ascontiguousarray(frame.values)).permute(2, 0, 1)
        return replace(info, image=image.contiguous())
    values = frame.values
    if frame.orientation is not None:
        try:
            values = canonical_slice(values, frame.orientation)
        except OrientationError as error:
            raise ScanFileError(f"{path}: {error}") from error
    window = window if window is not None else frame.window
    unit = _window(values, window)
    if frame.photometric == "MONOCHROME1":
        unit = 1.0 - unit
    return replace(info, image=torch.from_numpy(unit)[None], window=window)


def read_dicom(
    path: str | Path, window: tuple[float, float] | None = None, slice_index: int | None = None
) -> torch.Tensor:
    """A DICOM image as float32 [C, H, W] in [0, 1] (module docstring)."""
    return _dicom_info(Path(path), window, slice_index).image


def _index(count: int, index: int | None) -> int:
    index = count // 2 if index is None else index
    if not 0 <= index < count:
        raise ScanFileError(f"slice {index} is out of range: the file has {count}")
    return index


def _nifti_info(
    path: Path, window: tuple[float, float] | None, slice_index: int | None
) -> ScanInfo:
    try:
        volume = read_nifti_volume(path)  # [z, y, x], finite
    except (NiftiError, OrientationError) as error:
        raise ScanFileError(str(error)) from error
    try:
        index = _index(volume.data.shape[0], slice_index)
    except ScanFileError as error:
        raise ScanFileError(f"{path}: {error}") from error
    unit = np.ascontiguousarray(_window(volume.data[index], window))
    return ScanInfo(
        image=torch.from_numpy(unit)[None],
        path=path,
        kind="nifti",
        slice_index=index,
        slices=volume.data.shape[0],
        nonfinite=volume.nonfinite,
        window=window,
    )


def read_nifti(
    path: str | Path, window: tuple[float, float] | None = None, slice_index: int | None = None
) -> torch.Tensor:
    """One axial slice of a NIfTI volume as float32 [1, H, W] in [0, 1] (module docstring)."""
    return _nifti_info(Path(path), window, slice_index).image


def read_scan_info(
    path: str | Path,
    channels: int = 1,
    window: tuple[float, float] | None = None,
    slice_index: int | None = None,
) -> ScanInfo:
    """Any supported image file as a :class:`ScanInfo`: the image, float32 [channels, H, W] in
    [0, 1], with the frame or slice read, the count of each and the values replaced."""
    from datamodules.image_files import ImageFileError, convert_channels, read_image

    path = Path(path)
    if not path.is_file():
        raise ScanFileError(f"{path}: file not found")
    name = path.name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        info = _nifti_info(path, window, slice_index)
    elif name.endswith(DICOM_SUFFIXES) or not name.endswith((".png", ".jpg", ".jpeg", ".npy")):
        info = _dicom_info(path, window, slice_index)
    else:
        try:
            image = read_image(path, channels)
        except ImageFileError as error:
            raise ScanFileError(f"{path}: {error}") from error
        return ScanInfo(image=image, path=path, kind="image", slice_index=0, slices=1)
    return replace(info, image=convert_channels(info.image, channels).contiguous())


def read_scan(
    path: str | Path,
    channels: int = 1,
    window: tuple[float, float] | None = None,
    slice_index: int | None = None,
) -> torch.Tensor:
    """Any supported image file as float32 [channels, H, W] in [0, 1] (module docstring)."""
    return read_scan_info(path, channels, window, slice_index).image


def write_dicom(
    path: str | Path,
    values: np.ndarray,
    window: tuple[float, float] | None = None,
    slope: float = 1.0,
    intercept: float = 0.0,
) -> Path:
    """Write a 2-D array of stored int16 values as a minimal CT DICOM file (examples, tests)."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    path = Path(path)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    dataset.SOPClassUID = CTImageStorage
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.Modality = "CT"
    dataset.Rows, dataset.Columns = values.shape
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.BitsAllocated = dataset.BitsStored = 16
    dataset.HighBit = 15
    dataset.PixelRepresentation = 1
    dataset.RescaleSlope = slope
    dataset.RescaleIntercept = intercept
    if window is not None:
        dataset.WindowCenter, dataset.WindowWidth = window
    dataset.PixelData = np.ascontiguousarray(values.astype(np.int16)).tobytes()
    pydicom.dcmwrite(path, dataset, enforce_file_format=True)
    return path
