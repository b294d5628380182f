"""DICOM files and series: one frame's pixels, headers, position sorting, Hounsfield units.

Only the tags the datamodules use are read. Headers are read without pixel data, so a series can
be indexed and sorted cheaply, and pixels are then read one slice at a time.

:func:`read_frame` is the one place where DICOM pixel data is decoded (the LIDC-IDRI and Pancreas
caches through :func:`read_hu`, ``vapl predict-image`` and the app through ``vapl.apps.scan_io``):

* every transfer syntax pydicom has a decoder for here: uncompressed, deflated, RLE, JPEG baseline,
  extended (12-bit) and lossless, JPEG-LS, JPEG 2000 and HTJ2K (the decoder packages are
  dependencies; docs/data.md lists them);
* one frame of a multi-frame file is decoded, and the number of frames is reported;
* grey images in the modality's units (``RescaleSlope``, ``RescaleIntercept``: HU for CT);
* colour images as RGB in [0, 1]: YBR photometric interpretations converted, samples divided by
  ``2 ** BitsStored - 1`` (so 16- and 32-bit colour scale as 8-bit does), palettes applied;
* NaN and infinite values replaced by the smallest finite one and counted;
* every failure is a :class:`DicomError` that names the file and the reason (no pixel data,
  truncated, no file meta information, an unreadable value, a decoder's refusal).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, pixel_array

from datamodules.io.orientation import (
    OrientationError,
    canonical_slice,
    check_axial,
    replace_nonfinite,
    slice_normal,
)
from vapl.core.errors import UserInputError

log = logging.getLogger(__name__)

DICOM_SUFFIX = ".dcm"
#: Two slices closer than this along the normal (mm) are duplicates of one position.
DUPLICATE_TOLERANCE_MM = 0.01


class DicomError(UserInputError, ValueError):
    """A DICOM file or series that cannot be used; the message names the file and the reason."""


@dataclass(frozen=True)
class SliceHeader:
    """The tags of one DICOM file that the readers use."""

    path: Path
    sop_uid: str
    series_uid: str
    patient_id: str
    modality: str
    instance_number: int | None
    position: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None
    pixel_spacing: tuple[float, float] | None
    rows: int
    columns: int


def _floats(value: object) -> tuple[float, ...] | None:
    if value is None:
        return None
    return tuple(float(v) for v in value)  # type: ignore[union-attr]


def read_header(path: str | Path) -> SliceHeader:
    """Read one file's header (no pixel data); :class:`DicomError` if it is not usable DICOM."""
    path = Path(path)
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, EOFError, ValueError, TypeError) as error:
        raise DicomError(f"{path}: not a readable DICOM file ({error})") from error
    missing = [tag for tag in ("SOPInstanceUID", "Modality", "Rows", "Columns") if tag not in ds]
    if missing:
        raise DicomError(f"{path}: truncated or incomplete DICOM, missing {', '.join(missing)}")
    try:
        instance = ds.get("InstanceNumber")
        return SliceHeader(
            path=path,
            sop_uid=str(ds.SOPInstanceUID),
            series_uid=str(ds.get("SeriesInstanceUID", "")),
            patient_id=str(ds.get("PatientID", "")),
            modality=str(ds.Modality).upper(),
            instance_number=None if instance in (None, "") else int(instance),
            position=_floats(ds.get("ImagePositionPatient")),  # type: ignore[arg-type]
            orientation=_floats(ds.get("ImageOrientationPatient")),
            pixel_spacing=_floats(ds.get("PixelSpacing")),  # type: ignore[arg-type]
            rows=int(ds.Rows),
            columns=int(ds.Columns),
        )
    except (TypeError, ValueError) as error:
        raise DicomError(f"{path}: malformed tag value ({error})") from error


PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
#: Tags pydicom needs to decode pixel data (Image Pixel module).
IMAGE_TAGS = ("Rows", "Columns", "BitsAllocated", "SamplesPerPixel", "PhotometricInterpretation")


@dataclass(frozen=True, eq=False)
class DicomFrame:
    """One decoded frame of a DICOM file (:func:`read_frame`).

    ``values`` is float32, finite: ``[rows, columns]`` in the modality's units for a grey image,
    ``[rows, columns, 3]`` RGB in [0, 1] for a colour one. ``frame`` is the index decoded, of
    ``frames``; ``nonfinite`` counts NaN and infinite values replaced. ``photometric`` is the
    PhotometricInterpretation as stored (colour values are RGB whatever it says). ``window`` is the
    file's first (WindowCenter, WindowWidth), ``orientation`` its ImageOrientationPatient,
    ``modality`` its Modality (``"CT"``, ``"MR"``, ...), if any.
    """

    path: Path
    values: np.ndarray
    frame: int
    frames: int
    photometric: str
    transfer_syntax: str
    nonfinite: int
    window: tuple[float, float] | None
    orientation: tuple[float, ...] | None
    modality: str | None = None

    @property
    def colour(self) -> bool:
        return self.values.ndim == 3


def _number(ds: pydicom.Dataset, keyword: str, kind: type, default: float | None) -> float | None:
    """A numeric tag's (first) value; ``default`` when absent or empty; DicomError if unreadable."""
    value = ds.get(keyword)
    if value is None or value == "":
        return default
    if isinstance(value, MultiValue):
        value = value[0] if len(value) else default
    try:
        return kind(value)
    except (TypeError, ValueError) as error:
        raise DicomError(f"{ds.filename}: unreadable {keyword} value {value!r}") from error


def _short(error: BaseException, limit: int = 400) -> str:
    text = re.sub(r"\s+", " ", str(error)).strip() or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _open(path: Path) -> pydicom.Dataset:
    try:
        return pydicom.dcmread(path)
    except InvalidDicomError as error:
        raise DicomError(
            f"{path}: not a readable DICOM file (no File Meta Information: no 'DICM' header; "
            f"{_short(error, 160)})"
        ) from error
    except Exception as error:  # pydicom raises many types for damaged files
        raise DicomError(f"{path}: not a readable DICOM file ({_short(error)})") from error


def _check_image(path: Path, ds: pydicom.Dataset) -> str:
    """The transfer syntax's name, after checking the file holds an image pydicom can decode."""
    if not any(tag in ds for tag in PIXEL_TAGS):
        sop = ds.get("SOPClassUID")
        what = getattr(sop, "name", None) or "no SOP class"
        raise DicomError(f"{path}: no pixel data ({what}: not an image)")
    missing = [tag for tag in IMAGE_TAGS if tag not in ds]
    if missing:
        raise DicomError(f"{path}: incomplete image description, missing {', '.join(missing)}")
    meta = getattr(ds, "file_meta", None)
    syntax = None if meta is None else meta.get("TransferSyntaxUID")
    if syntax is None:
        raise DicomError(f"{path}: the File Meta Information has no TransferSyntaxUID")
    return getattr(syntax, "name", None) or str(syntax)


def _grey(ds: pydicom.Dataset, pixels: np.ndarray) -> np.ndarray:
    slope = _number(ds, "RescaleSlope", float, 1.0) or 1.0  # 0 is not a valid slope
    intercept = _number(ds, "RescaleIntercept", float, 0.0)
    values = pixels.astype(np.float32) * np.float32(slope)
    return values + np.float32(intercept)


def _colour(path: Path, ds: pydicom.Dataset, pixels: np.ndarray, photometric: str) -> np.ndarray:
    if photometric == "PALETTE COLOR":
        try:
            pixels = apply_color_lut(pixels, ds)
            bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
        except Exception as error:  # missing or inconsistent lookup tables
            raise DicomError(f"{path}: unreadable colour palette ({_short(error)})") from error
    else:  # RGB, or YBR that pydicom (or the JPEG decoder) has converted to RGB
        bits = int(_number(ds, "BitsStored", int, 8))  # type: ignore[arg-type]
    scale = float(2**bits - 1) if bits > 0 else 255.0
    return np.clip(pixels.astype(np.float64) / scale, 0.0, 1.0).astype(np.float32)


def _window(ds: pydicom.Dataset) -> tuple[float, float] | None:
    try:
        centre = _number(ds, "WindowCenter", float, None)
        width = _number(ds, "WindowWidth", float, None)
    except DicomError:  # an unreadable display hint: fall back to the image's range
        return None
    if centre is None or width is None or not (np.isfinite(centre) and width > 0):
        return None
    return centre, width


#: Transfer syntaxes only the GPL-3.0 decoder pylibjpeg-libjpeg reads here (JPEG extended 12-bit,
#: JPEG lossless): installed by the extra ``vapl[dicom-jpeg]``.
LIBJPEG_SYNTAXES = ("1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70")


def _hint(ds: pydicom.Dataset) -> str:
    """What to install when a JPEG syntax failed for want of its decoder."""
    import importlib.util

    syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", ""))
    if syntax in LIBJPEG_SYNTAXES and importlib.util.find_spec("libjpeg") is None:
        return (
            "; its decoder is the extra vapl[dicom-jpeg] (GPL-3.0): pip install 'vapl[dicom-jpeg]'"
        )
    return ""


def read_frame(path: str | Path, frame: int | None = None) -> DicomFrame:
    """Decode frame ``frame`` (default: the middle one) of a DICOM file (module docstring)."""
    path = Path(path)
    ds = _open(path)
    syntax = _check_image(path, ds)
    frames = int(_number(ds, "NumberOfFrames", int, 1) or 1)  # type: ignore[arg-type]
    index = frames // 2 if frame is None else frame
    if not 0 <= index < frames:
        raise DicomError(f"{path}: frame {index} is out of range: the file has {frames}")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    samples = _number(ds, "SamplesPerPixel", int, 1)
    if samples not in (1, 3):
        raise DicomError(f"{path}: {samples} samples per pixel, expected 1 (grey) or 3 (colour)")
    try:
        pixels = pixel_array(ds, index=index if frames > 1 else None)
    except Exception as error:  # decoders raise many types for damaged or unsupported data
        text = _short(error)
        if "bytes of pixel data is less than expected" in text or "truncated" in text.lower():
            raise DicomError(f"{path}: cannot read pixel data (truncated: {text})") from error
        raise DicomError(f"{path}: cannot read pixel data ({syntax}: {text}){_hint(ds)}") from error
    colour = samples == 3 or photometric == "PALETTE COLOR"
    if pixels.ndim != (3 if samples == 3 else 2):
        raise DicomError(f"{path}: pixel array of shape {pixels.shape}, expected one image")
    values = _colour(path, ds, pixels, photometric) if colour else _grey(ds, pixels)
    values, nonfinite = replace_nonfinite(values)
    if nonfinite == values.size:
        raise DicomError(f"{path}: no finite pixel value (all {values.size} are NaN or infinite)")
    if nonfinite:
        log.warning(
            "%s: %d NaN or infinite values replaced by the minimum %g",
            path,
            nonfinite,
            float(values.min()),
        )
    try:
        orientation = _floats(ds.get("ImageOrientationPatient"))
    except (TypeError, ValueError) as error:
        raise DicomError(f"{path}: unreadable ImageOrientationPatient ({error})") from error
    modality = str(ds.get("Modality", "")).strip().upper() or None
    return DicomFrame(
        path,
        values,
        index,
        frames,
        photometric,
        syntax,
        nonfinite,
        _window(ds),
        orientation,
        modality,
    )


def read_hu(path: str | Path) -> np.ndarray:
    """The stored pixels of one file in Hounsfield units (RescaleSlope and RescaleIntercept),
    float32 ``[rows, columns]`` in the file's own row and column order, finite
    (:func:`read_frame`)."""
    frame = read_frame(path)
    if frame.frames != 1 or frame.colour:
        shape = (frame.frames, *frame.values.shape)
        raise DicomError(f"{path}: expected a single 2-D frame, got pixel array {shape}")
    return frame.values


def read_canonical_slice(header: SliceHeader) -> np.ndarray:
    """One slice in HU, reordered to ``[y, x]`` (see :mod:`datamodules.io.orientation`)."""
    hu = read_hu(header.path)
    if header.orientation is None:
        raise DicomError(f"{header.path}: no ImageOrientationPatient")
    try:
        return canonical_slice(hu, header.orientation)
    except OrientationError as error:
        raise DicomError(f"{header.path}: {error}") from error


@dataclass(frozen=True)
class SortedSeries:
    """The slices of one series ordered foot to head, with duplicate positions set apart.

    ``duplicates`` maps the SOP instance UID of each dropped file to the index of the kept slice at
    the same position, so references to either file find the slice.
    """

    slices: tuple[SliceHeader, ...]
    duplicates: dict[str, int]

    def index_of(self) -> dict[str, int]:
        """SOP instance UID -> slice index, dropped duplicates included."""
        index = {header.sop_uid: k for k, header in enumerate(self.slices)}
        index.update(self.duplicates)
        return index

    @property
    def positions(self) -> np.ndarray:
        """Each slice's position (mm) along the axial direction, ascending."""
        return np.array([h.position[2] for h in self.slices])  # type: ignore[index]


def sort_series(headers: Sequence[SliceHeader]) -> SortedSeries:
    """Sort an axial series by position along the slice normal, feet first, and drop duplicate
    positions (the file with the lowest InstanceNumber is kept). :class:`DicomError` names the
    file when a slice lacks geometry, is not axial, or differs in orientation or size."""
    if not headers:
        raise DicomError("empty series")
    first = headers[0]
    for header in headers:
        if header.position is None or header.orientation is None:
            raise DicomError(f"{header.path}: no ImagePositionPatient/ImageOrientationPatient")
        try:
            check_axial(header.orientation, str(header.path))
        except OrientationError as error:
            raise DicomError(str(error)) from error
        if not np.allclose(header.orientation, first.orientation, atol=1e-3):  # type: ignore[arg-type]
            raise DicomError(f"{header.path}: orientation differs from {first.path}")
        if (header.rows, header.columns) != (first.rows, first.columns):
            raise DicomError(
                f"{header.path}: size {header.rows}x{header.columns} differs from "
                f"{first.rows}x{first.columns} in {first.path}"
            )
    normal = slice_normal(first.orientation)  # type: ignore[arg-type]
    if normal[2] < 0:  # order feet to head whichever way the normal points
        normal = -normal
    distance = np.array([np.dot(h.position, normal) for h in headers])  # type: ignore[arg-type]
    instance = [h.instance_number if h.instance_number is not None else 0 for h in headers]
    order = sorted(
        range(len(headers)), key=lambda i: (distance[i], instance[i], str(headers[i].path))
    )
    kept: list[SliceHeader] = []
    kept_distance: list[float] = []
    duplicates: dict[str, int] = {}
    for i in order:
        if kept and abs(distance[i] - kept_distance[-1]) < DUPLICATE_TOLERANCE_MM:
            duplicates[headers[i].sop_uid] = len(kept) - 1
            continue
        kept.append(headers[i])
        kept_distance.append(float(distance[i]))
    return SortedSeries(tuple(kept), duplicates)


def iter_series_dirs(root: str | Path) -> Iterator[tuple[Path, list[Path]]]:
    """Every folder under ``root`` holding ``.dcm`` files, with those files, in sorted order.

    Hidden folders (a cache, macOS metadata) and hidden files (``._x.dcm``) are left out.
    """
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        dicom = sorted(
            Path(directory) / f
            for f in files
            if f.lower().endswith(DICOM_SUFFIX) and not f.startswith(".")
        )
        if dicom:
            yield Path(directory), dicom


def read_series(paths: Iterable[str | Path]) -> tuple[np.ndarray, SortedSeries]:
    """Read a whole axial series as HU ``[z, y, x]`` in the canonical orientation.

    For small series and tests: the datamodules read only the slices they need.
    """
    series = sort_series([read_header(p) for p in paths])
    volume = np.stack([read_canonical_slice(h) for h in series.slices])
    return volume, series
