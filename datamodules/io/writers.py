"""Writers for the formats the readers take: DICOM CT series and NIfTI volumes, from a volume
``[z, y, x]`` in the canonical orientation (:mod:`datamodules.io.orientation`). They make the test
and demo trees (:mod:`datamodules.fixtures`); every tag the readers use is written.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from datamodules.io.orientation import RAS_TO_LPS

#: ImageOrientationPatient of the in-plane layouts the writer supports.
ORIENTATIONS = {
    "standard": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    "flipped": (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0),
    "transposed": (0.0, 1.0, 0.0, 1.0, 0.0, 0.0),
}
PIXEL_MM = 0.7
SLICE_MM = 2.5


def make_uid(*parts: object) -> str:
    return generate_uid(entropy_srcs=[str(p) for p in parts])


def stored_plane(plane: np.ndarray, layout: str) -> np.ndarray:
    """A canonical ``[y, x]`` plane in a file's row / column order for ``layout``."""
    return {"standard": plane, "flipped": plane[::-1, ::-1], "transposed": plane.T}[layout]


def stored_point(y: float, x: float, shape: tuple[int, int], layout: str) -> tuple[float, float]:
    """Canonical pixel (y, x) as (column, row) in the file's pixel array (LIDC's xCoord, yCoord)."""
    height, width = shape
    if layout == "flipped":
        return width - 1 - x, height - 1 - y
    if layout == "transposed":
        return y, x
    return x, y


def write_ct_series(
    directory: Path,
    volume: np.ndarray,
    patient_id: str,
    study_uid: str,
    series_uid: str,
    layout: str = "standard",
    seed: int = 0,
    modality: str = "CT",
) -> list[tuple[Path, str, float]]:
    """Write a canonical HU volume ``[z, y, x]`` as one DICOM file per slice, in shuffled file order.

    Returns ``(path, SOP instance UID, z position)`` per slice, in slice order.
    """
    directory.mkdir(parents=True, exist_ok=True)
    depth, height, width = volume.shape
    names = np.random.default_rng(seed).permutation(depth) + 1
    origin = (-PIXEL_MM * width / 2, -PIXEL_MM * height / 2, -SLICE_MM * depth / 2)
    written = []
    for k in range(depth):
        z = origin[2] + k * SLICE_MM
        position = [origin[0], origin[1], z]
        if layout == "flipped":
            position = [origin[0] + (width - 1) * PIXEL_MM, origin[1] + (height - 1) * PIXEL_MM, z]
        stored = stored_plane(volume[k], layout)
        sop_uid = make_uid(series_uid, k)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.PatientID = patient_id
        ds.Modality = modality
        ds.InstanceNumber = int(names[k])
        ds.ImagePositionPatient = [f"{v:.4f}" for v in position]
        ds.ImageOrientationPatient = list(ORIENTATIONS[layout])
        ds.PixelSpacing = [PIXEL_MM, PIXEL_MM]
        ds.SliceThickness = SLICE_MM
        ds.Rows, ds.Columns = stored.shape
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelData = np.clip(np.rint(stored) + 1024, 0, 4095).astype("<u2").tobytes()
        path = directory / f"1-{names[k]:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        written.append((path, sop_uid, z))
    return written


def write_nifti(path: Path, volume: np.ndarray, flip_y: bool = False) -> Path:
    """Write a canonical volume ``[z, y, x]`` as NIfTI (array ``[x, y, z]``, affine to RAS) on the
    grid :func:`write_ct_series` uses; ``flip_y`` stores the y axis reversed, affine to match."""
    depth, height, width = volume.shape
    data = volume.transpose(2, 1, 0)
    affine_lps = np.diag([PIXEL_MM, PIXEL_MM, SLICE_MM, 1.0])
    affine_lps[:3, 3] = (-PIXEL_MM * width / 2, -PIXEL_MM * height / 2, -SLICE_MM * depth / 2)
    if flip_y:
        data = data[:, ::-1, :]
        affine_lps[1, 3] += (height - 1) * PIXEL_MM
        affine_lps[1, 1] = -PIXEL_MM
    image = nib.Nifti1Image(np.ascontiguousarray(data), RAS_TO_LPS @ affine_lps)
    image.set_qform(image.affine, code=1)
    image.set_sform(image.affine, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, path)
    return path
