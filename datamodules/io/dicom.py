"""DICOM series: headers, position sorting, Hounsfield units, the slices of one series.

Only the tags the datamodules use are read. Headers are read without pixel data, so a series can
be indexed and sorted cheaply, and pixels are then read one slice at a time.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from datamodules.io.orientation import OrientationError, canonical_slice, check_axial, slice_normal

DICOM_SUFFIX = ".dcm"
#: Two slices closer than this along the normal (mm) are duplicates of one position.
DUPLICATE_TOLERANCE_MM = 0.01


class DicomError(ValueError):
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


def read_hu(path: str | Path) -> np.ndarray:
    """The stored pixels of one file in Hounsfield units (RescaleSlope and RescaleIntercept),
    float32 ``[rows, columns]`` in the file's own row and column order."""
    path = Path(path)
    try:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array
    except Exception as error:  # pydicom raises several types for damaged pixel data
        raise DicomError(f"{path}: cannot read pixel data ({error})") from error
    if pixels.ndim != 2:
        raise DicomError(f"{path}: expected a single 2-D frame, got pixel array {pixels.shape}")
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    return pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)


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
