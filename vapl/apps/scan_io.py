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
* A DICOM series folder: the ``.dcm`` files of one axial series (in the folder or in its only
  sub-folder holding any), ordered feet to head along the slice normal by
  :func:`datamodules.io.dicom.sort_series` (duplicate positions dropped), the way the LIDC and
  Pancreas datamodules order them; slice ``slice_index`` (default: the middle) is read as a DICOM
  file. Several series in the folder are an error that names them.
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
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from datamodules.io.dicom import (
    DicomError,
    SortedSeries,
    iter_series_dirs,
    read_frame,
    read_header,
    sort_series,
)
from datamodules.io.nifti import NiftiError, read_nifti_volume
from datamodules.io.orientation import OrientationError, canonical_slice
from vapl.core.errors import UserInputError

DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
#: Common CT windows, (centre, width) in Hounsfield units.
WINDOW_PRESETS = {"lung": (-600.0, 1500.0), "soft tissue": (40.0, 400.0), "bone": (400.0, 1800.0)}
NIFTI_SUFFIXES = (".nii", ".nii.gz")


class ScanFileError(UserInputError, ValueError):
    """An image file that cannot be read; the message names the file and the reason."""


@dataclass(frozen=True, eq=False)
class ScanInfo:
    """An image read by :func:`read_scan_info` and what the reader found.

    ``image``: float32 [C, H, W] in [0, 1], finite. ``kind``: ``"dicom"``, ``"series"`` (a DICOM
    series folder), ``"nifti"`` or ``"image"``. ``slice_index`` of ``slices``: the DICOM frame,
    series slice or NIfTI axial slice read, and how many the file or folder has (0 of 1 for other
    images). ``modality``: the DICOM Modality (``"CT"``, ...), else ``None``. ``nonfinite``: NaN and infinite values replaced
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
    modality: str | None = None


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
        modality=frame.modality,
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


def _index(count: int, index: int | None, holder: str = "file") -> int:
    index = count // 2 if index is None else index
    if not 0 <= index < count:
        raise ScanFileError(f"slice {index} is out of range: the {holder} has {count}")
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


def _series_files(folder: Path) -> list[Path]:
    """The ``.dcm`` files of the one series folder at or under ``folder``."""
    found = list(iter_series_dirs(folder))
    if not found:
        raise ScanFileError(f"{folder}: a folder, but no .dcm files in it or below it")
    if len(found) > 1:
        names = ", ".join(str(directory.relative_to(folder)) for directory, _ in found[:6])
        raise ScanFileError(
            f"{folder}: {len(found)} folders hold DICOM files ({names}); open one series folder"
        )
    return found[0][1]


@lru_cache(maxsize=8)
def _sorted_series(folder: Path, stamp: tuple[float, int]) -> SortedSeries:
    """The series in ``folder``, read once per change of the folder (``stamp``: mtime, count)."""
    try:
        headers = [read_header(path) for path in _series_files(folder)]
        uids = sorted({header.series_uid for header in headers})
        if len(uids) > 1:
            raise ScanFileError(
                f"{folder}: files of {len(uids)} series (SeriesInstanceUID {', '.join(uids[:3])}"
                f"{', ...' if len(uids) > 3 else ''}); put each series in a folder of its own"
            )
        return sort_series(headers)
    except DicomError as error:
        raise ScanFileError(f"{folder}: {error}") from error


def series_slices(folder: str | Path) -> SortedSeries:
    """The slices of the DICOM series in ``folder``, feet to head (module docstring)."""
    folder = Path(folder)
    files = _series_files(folder)
    stamp = (max(path.stat().st_mtime for path in files), len(files))
    return _sorted_series(folder, stamp)


def _series_info(
    folder: Path, window: tuple[float, float] | None, slice_index: int | None
) -> ScanInfo:
    series = series_slices(folder)
    try:
        index = _index(len(series.slices), slice_index, "series")
    except ScanFileError as error:
        raise ScanFileError(f"{folder}: {error}") from error
    header = series.slices[index]
    info = _dicom_info(header.path, window, None)
    return replace(info, path=folder, kind="series", slice_index=index, slices=len(series.slices))


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
    if path.is_dir():
        info = _series_info(path, window, slice_index)
        return replace(info, image=convert_channels(info.image, channels).contiguous())
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
