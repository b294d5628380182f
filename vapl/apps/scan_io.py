"""One image and one drawn prompt from files, for prompted prediction on a new case.

Images become float32 [C, H, W] in [0, 1]:

* DICOM (``.dcm``, or any file pydicom reads): stored values times ``RescaleSlope`` plus
  ``RescaleIntercept`` (Hounsfield units for CT), then the window ``(centre, width)`` maps
  ``centre - width / 2 .. centre + width / 2`` to 0..1 (clipped). The window is the one given, else
  the file's first ``WindowCenter``/``WindowWidth``, else the slice's minimum..maximum.
  ``MONOCHROME1`` is inverted; multi-frame files give frame ``slice_index`` (default: the middle).
* NIfTI (``.nii``, ``.nii.gz``): axial slice ``slice_index`` (default: the middle) of the volume
  read by :func:`datamodules.io.nifti.read_nifti`; window as for DICOM, else min..max.

DICOM slices and NIfTI volumes come out in the orientation the medical datamodules train on
(:mod:`datamodules.io.orientation`: anterior up, the patient's right on the left), so a model
trained on LIDC or Pancreas sees a new scan the same way round.
* PNG, JPEG, NPY: :func:`datamodules.image_files.read_image` (8-bit / 255, 16-bit / 65535).

Prompts drawn in a paint program (:func:`read_drawn_prompt`): in a colour PNG, red pixels are
indispensable, yellow precluded and everything else (the image underneath, white, transparency)
undecided, so you can paint straight onto a copy of the image. A grayscale PNG or an NPY file is
read by :func:`vapl.core.prompts.read_prompt` (255 / 0 / other; -1 / 0 / 1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from datamodules.io.nifti import NiftiError
from datamodules.io.nifti import read_nifti as read_nifti_volume
from datamodules.io.orientation import OrientationError, canonical_slice
from vapl.core.prompts import PromptError, prompt_from_masks, read_prompt

DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
NIFTI_SUFFIXES = (".nii", ".nii.gz")


class ScanFileError(ValueError):
    """An image file that cannot be read; the message names the file and the reason."""


def _window(values: np.ndarray, window: tuple[float, float] | None) -> np.ndarray:
    if window is None:
        low, high = float(values.min()), float(values.max())
    else:
        centre, width = window
        if width <= 0:
            raise ScanFileError(f"window width must be positive, got {width}")
        low, high = centre - width / 2, centre + width / 2
    return np.clip((values - low) / max(high - low, 1e-12), 0.0, 1.0).astype(np.float32)


def _first(value: object) -> float:
    try:
        return float(value[0])  # type: ignore[index]  # pydicom MultiValue
    except TypeError:
        return float(value)  # type: ignore[arg-type]


def read_dicom(
    path: str | Path, window: tuple[float, float] | None = None, slice_index: int | None = None
) -> torch.Tensor:
    """A DICOM image as float32 [C, H, W] in [0, 1] (module docstring)."""
    import pydicom

    path = Path(path)
    try:
        dataset = pydicom.dcmread(path)
        pixels = dataset.pixel_array
    except Exception as error:  # noqa: BLE001 - pydicom raises many kinds
        raise ScanFileError(f"{path}: cannot read DICOM ({error})") from error
    if int(getattr(dataset, "SamplesPerPixel", 1)) == 3:  # colour (e.g. a screenshot)
        frame = pixels[_index(pixels.shape[0], slice_index)] if pixels.ndim == 4 else pixels
        return torch.from_numpy(frame.astype(np.float32) / 255.0).permute(2, 0, 1).contiguous()
    if pixels.ndim == 3:
        pixels = pixels[_index(pixels.shape[0], slice_index)]
    values = pixels.astype(np.float32) * float(getattr(dataset, "RescaleSlope", 1.0))
    values = values + float(getattr(dataset, "RescaleIntercept", 0.0))
    if "ImageOrientationPatient" in dataset:
        try:
            values = canonical_slice(values, [float(v) for v in dataset.ImageOrientationPatient])
        except OrientationError as error:
            raise ScanFileError(f"{path}: {error}") from error
    if window is None and "WindowCenter" in dataset and "WindowWidth" in dataset:
        window = (_first(dataset.WindowCenter), _first(dataset.WindowWidth))
    unit = _window(values, window)
    if getattr(dataset, "PhotometricInterpretation", "MONOCHROME2") == "MONOCHROME1":
        unit = 1.0 - unit
    return torch.from_numpy(unit)[None]


def _index(count: int, index: int | None) -> int:
    index = count // 2 if index is None else index
    if not 0 <= index < count:
        raise ScanFileError(f"slice {index} is out of range: the file has {count}")
    return index


def read_nifti(
    path: str | Path, window: tuple[float, float] | None = None, slice_index: int | None = None
) -> torch.Tensor:
    """One axial slice of a NIfTI volume as float32 [1, H, W] in [0, 1] (module docstring)."""
    try:
        volume = read_nifti_volume(path)  # [z, y, x]
    except (NiftiError, OrientationError) as error:
        raise ScanFileError(str(error)) from error
    axial = volume[_index(volume.shape[0], slice_index)]
    return torch.from_numpy(np.ascontiguousarray(_window(axial, window)))[None]


def read_scan(
    path: str | Path,
    channels: int = 1,
    window: tuple[float, float] | None = None,
    slice_index: int | None = None,
) -> torch.Tensor:
    """Any supported image file as float32 [channels, H, W] in [0, 1] (module docstring)."""
    from datamodules.image_files import ImageFileError, convert_channels, read_image

    path = Path(path)
    if not path.is_file():
        raise ScanFileError(f"{path}: file not found")
    name = path.name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        image = read_nifti(path, window, slice_index)
    elif name.endswith(DICOM_SUFFIXES) or not name.endswith((".png", ".jpg", ".jpeg", ".npy")):
        image = read_dicom(path, window, slice_index)
    else:
        try:
            return read_image(path, channels)
        except ImageFileError as error:
            raise ScanFileError(f"{path}: {error}") from error
    return convert_channels(image, channels).contiguous()


def colour_prompt(rgba: np.ndarray) -> torch.Tensor:
    """A prompt from an RGBA uint8 array [H, W, 4]: red indispensable, yellow precluded.

    Red: R >= 128, G and B at most R / 2. Yellow: R >= 128, G >= 0.6 R, B at most half of
    min(R, G). Pixels with alpha < 128, and every gray pixel, are undecided.
    """
    r, g, b, a = (rgba[..., i].astype(np.float32) for i in range(4))
    opaque = a >= 128
    red = opaque & (r >= 128) & (g <= r / 2) & (b <= r / 2)
    yellow = opaque & (r >= 128) & (g >= 0.6 * r) & (b <= np.minimum(r, g) / 2)
    return prompt_from_masks(red, yellow)


def read_drawn_prompt(
    path: str | Path, shape: tuple[int, int] | None = None, kind: str = "auto"
) -> torch.Tensor:
    """A prompt from a file: a colour drawing (``kind="colour"``), a grayscale or NPY prompt
    (``"gray"``), or by the file (``"auto"``: colour PNG/JPEG images are drawings)."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise PromptError(f"{path}: file not found")
    if kind not in ("auto", "colour", "gray"):
        raise ValueError(f"prompt kind is auto, colour or gray, not {kind!r}")
    if path.suffix.lower() == ".npy" or kind == "gray":
        return read_prompt(path, shape)
    try:
        with Image.open(path) as image:
            colour = image.mode not in ("L", "I", "I;16", "I;16B", "I;16L", "F", "1")
            rgba = np.asarray(image.convert("RGBA")) if colour or kind == "colour" else None
    except OSError as error:
        raise PromptError(f"{path}: cannot read prompt ({error})") from error
    if rgba is None:
        return read_prompt(path, shape)
    prompt = colour_prompt(rgba)
    if shape is not None and tuple(prompt.shape) != tuple(shape):
        raise PromptError(
            f"{path}: prompt is {prompt.shape[0]} x {prompt.shape[1]} pixels, the image "
            f"{shape[0]} x {shape[1]}; draw on a copy of the image (vapl predict-image --save-image)"
        )
    return prompt


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
