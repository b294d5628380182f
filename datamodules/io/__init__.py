"""Small readers for the formats clinicians and archives use: DICOM files and series, NIfTI
volumes and LIDC-IDRI annotation XML. Each returns arrays in one orientation, with finite values
(:mod:`.orientation`)."""

from datamodules.io.dicom import (
    DicomError,
    DicomFrame,
    SliceHeader,
    SortedSeries,
    iter_series_dirs,
    read_canonical_slice,
    read_frame,
    read_header,
    read_hu,
    read_series,
    sort_series,
)
from datamodules.io.lidc_xml import (
    LidcRead,
    LidcXmlError,
    consensus_masks,
    rasterise_contour,
    read_lidc_xml,
    reader_masks,
)
from datamodules.io.nifti import (
    NiftiError,
    NiftiVolume,
    canonical_shape,
    load_nifti,
    read_nifti,
    read_nifti_volume,
)
from datamodules.io.orientation import (
    OrientationError,
    canonical_slice,
    canonical_volume,
    replace_nonfinite,
)

__all__ = [
    "DicomError",
    "DicomFrame",
    "LidcRead",
    "LidcXmlError",
    "NiftiError",
    "NiftiVolume",
    "OrientationError",
    "SliceHeader",
    "SortedSeries",
    "canonical_shape",
    "canonical_slice",
    "canonical_volume",
    "consensus_masks",
    "iter_series_dirs",
    "load_nifti",
    "rasterise_contour",
    "read_canonical_slice",
    "read_frame",
    "read_header",
    "read_hu",
    "read_lidc_xml",
    "read_nifti",
    "read_nifti_volume",
    "read_series",
    "reader_masks",
    "replace_nonfinite",
    "sort_series",
]
