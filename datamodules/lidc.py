"""LIDC-IDRI: lung nodule classification on 2-D CT slices, with the readers' contours as prompts.

Reads the archive as TCIA delivers it: ``LIDC-IDRI/<patient>/<study>/<series>/`` folders of DICOM
slices, each CT series folder with one annotation XML (:mod:`datamodules.io.lidc_xml`).

* Positives are slices through a nodule: where at least ``consensus`` of the series' readers drew
  the same pixels. The consensus mask is the explanation.
* Negatives are slices of the surrounding area with no reader's mark: at least ``negative_gap``
  slices from any marked slice and at most ``negative_reach`` from a positive, nearest first,
  ``negatives_per_positive`` per positive. Their explanation, and prompt region, is a positive
  slice's nodule mask at the same place (the area a clinician would look at), the positives' masks
  dealt out in turn (:func:`region_slices`), so that the negatives' regions are the positives'
  regions: a region's size or place does not give the label away.
* The image is the slice in HU through the lung window, resized to ``image_size``.
* The prompt marks the nodule indispensable (incomplete, see :class:`CachedSliceDataset`) and the
  outside of the body precluded.

See docs/data.md ("LIDC-IDRI") for the archive, the command and how this follows the paper.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.cache import CaseIgnored, CaseSkipped, SliceSample
from datamodules.io.dicom import (
    DicomError,
    SliceHeader,
    SortedSeries,
    iter_series_dirs,
    read_header,
    read_hu,
    sort_series,
)
from datamodules.io.lidc_xml import LidcXmlError, consensus_masks, read_lidc_xml
from datamodules.io.orientation import canonical_slice
from datamodules.medical import MedicalSliceDataModule
from datamodules.slices import LUNG_WINDOW, slice_arrays

CACHE_FORMAT = "lidc-2"  # 2: negatives take the positives' regions in turn


@dataclass(frozen=True)
class SeriesCase:
    """One series folder: its DICOM files and the annotation files beside them."""

    directory: Path
    dicom_files: tuple[Path, ...]
    xml_files: tuple[Path, ...]


def choose_negatives(
    n_slices: int,
    positives: list[int],
    marked: set[int],
    count: int,
    gap: int = 2,
    reach: int = 10,
) -> list[tuple[int, int]]:
    """Up to ``count`` unmarked slices near the positives, nearest first.

    A candidate lies at least ``gap`` slices from every marked slice and at most ``reach`` from a
    positive. Returns ``(slice, nearest positive slice)`` pairs in slice order.
    """
    if not positives or count <= 0:
        return []
    marked_array = np.array(sorted(marked | set(positives)))
    positive_array = np.array(positives)
    candidates = []
    for k in range(n_slices):
        to_marked = np.abs(marked_array - k).min()
        to_positive = np.abs(positive_array - k)
        if to_marked >= gap and to_positive.min() <= reach:
            nearest = int(positive_array[to_positive.argmin()])
            candidates.append((int(to_positive.min()), k, nearest))
    chosen = sorted(candidates)[:count]
    return sorted((k, nearest) for _, k, nearest in chosen)


def region_slices(negatives: list[int], positives: list[int]) -> list[int]:
    """The positive slice whose nodule mask is each negative's region: the positives in turn
    (slice order), so that with one negative per positive every mask is used once and the
    negatives' regions have the positives' sizes. The nearest positive would be an end of the
    nodule, where it is smallest: the region's area would tell a negative from a positive."""
    ordered = sorted(positives)
    return [ordered[i % len(ordered)] for i in range(len(negatives))]


class LIDCDataModule(MedicalSliceDataModule):
    """LIDC-IDRI CT slices: nodule (1) or not (0). One channel, two classes.

    Args:
        root: the folder holding ``LIDC-IDRI-NNNN`` patient folders.
        window_level: centre of the CT window in HU (lung window).
        window_width: width of the CT window in HU.
        consensus: share of a series' readers that must draw a pixel for it to be nodule.
        negatives_per_positive: negative slices chosen per positive slice.
        negative_gap: slices a negative keeps from any slice a reader marked.
        negative_reach: slices a negative lies at most from a positive.
        n_train: training samples.
        n_val: validation samples.
        n_test: test samples (``None``: every remaining patient's).
        **kwargs: :class:`~datamodules.medical.MedicalSliceDataModule`'s arguments.
    """

    dataset_name = "lidc"

    def __init__(
        self,
        root: str = "data/LIDC-IDRI",
        window_level: float = LUNG_WINDOW[0],
        window_width: float = LUNG_WINDOW[1],
        consensus: float = 0.5,
        negatives_per_positive: float = 1.0,
        negative_gap: int = 2,
        negative_reach: int = 10,
        n_train: int = 100,
        n_val: int = 1200,
        n_test: int | None = 1200,
        **kwargs: Any,
    ) -> None:
        super().__init__(root=root, n_train=n_train, n_val=n_val, n_test=n_test, **kwargs)
        if not 0.0 < consensus <= 1.0:
            raise ValueError(f"consensus must be in (0, 1], got {consensus}")
        self.window = (window_level, window_width)
        self.consensus = consensus
        self.negatives_per_positive = negatives_per_positive
        self.negative_gap = negative_gap
        self.negative_reach = negative_reach

    def cache_settings(self) -> dict[str, Any]:
        return {
            "format": CACHE_FORMAT,
            "image_size": self.image_size,
            "window": list(self.window),
            "consensus": self.consensus,
            "negatives_per_positive": self.negatives_per_positive,
            "negative_gap": self.negative_gap,
            "negative_reach": self.negative_reach,
        }

    def list_cases(self) -> tuple[list[SeriesCase], list[Path]]:
        cases: list[SeriesCase] = []
        files: list[Path] = []
        for directory, dicom_files in iter_series_dirs(self.root):
            xml_files = tuple(
                sorted(
                    directory / f
                    for f in os.listdir(directory)
                    if f.lower().endswith(".xml") and not f.startswith(".")
                )
            )
            cases.append(SeriesCase(directory, tuple(dicom_files), xml_files))
            files += [*dicom_files, *xml_files]
        return cases, files

    def case_name(self, case: SeriesCase) -> str:
        return self.relative(case.directory)

    # ----- one series ------------------------------------------------------------------------
    def _read_series(self, case: SeriesCase) -> SortedSeries:
        try:
            headers = [read_header(path) for path in case.dicom_files]
        except DicomError as error:
            raise CaseSkipped(str(error)) from error
        modalities = sorted({h.modality for h in headers})
        if modalities != ["CT"]:
            raise CaseIgnored(f"{case.directory}: modality {'/'.join(modalities)}, not CT")
        try:
            return sort_series(headers)
        except DicomError as error:
            raise CaseSkipped(str(error)) from error

    def _sample(
        self,
        case: SeriesCase,
        header: SliceHeader,
        index: int,
        region: np.ndarray,
        label: int,
        extra: dict[str, Any],
    ) -> SliceSample:
        try:
            hu = read_hu(header.path)
        except DicomError as error:
            raise CaseSkipped(str(error)) from error
        if hu.shape != region.shape:
            raise CaseSkipped(f"{header.path}: pixel data {hu.shape}, header {region.shape}")
        orientation = header.orientation  # checked axial by sort_series
        arrays = slice_arrays(
            canonical_slice(hu, orientation),  # type: ignore[arg-type]
            {"explanations": canonical_slice(region, orientation)},  # type: ignore[arg-type]
            self.image_size,
            self.window,
        )
        patient = header.patient_id or self.relative(case.directory).split(os.sep)[0]
        record = {
            "id": f"{patient}/{header.series_uid}/{index:04d}",
            "patient": patient,
            "sources": [self.relative(header.path), *(self.relative(x) for x in case.xml_files)],
            "slice": index,
            "z": header.position[2] if header.position else None,
            **extra,
        }
        return SliceSample(arrays, label, record)

    def process_case(self, case: SeriesCase) -> list[SliceSample]:
        series = self._read_series(case)
        sessions = []
        for xml_file in case.xml_files:
            try:
                read = read_lidc_xml(xml_file)
            except LidcXmlError as error:
                raise CaseSkipped(str(error)) from error
            if read is None:  # a chest-radiograph read
                continue
            folder_series = series.slices[0].series_uid
            if read.series_uid and folder_series and read.series_uid != folder_series:
                raise CaseSkipped(
                    f"{xml_file}: annotates series {read.series_uid}, the folder holds {folder_series}"
                )
            sessions += read.sessions
        if not sessions:
            raise CaseIgnored(f"{case.directory}: no LIDC CT annotation (LidcReadMessage)")
        first = series.slices[0]
        shape = (first.rows, first.columns)
        try:
            nodules, marked = consensus_masks(sessions, series.index_of(), shape, self.consensus)
        except LidcXmlError as error:
            raise CaseSkipped(str(error)) from error
        positives = sorted(nodules)
        if not positives:
            raise CaseIgnored(f"{case.directory}: no nodule reaches the consensus level")
        count = int(round(self.negatives_per_positive * len(positives)))
        negatives = choose_negatives(
            len(series.slices), positives, marked, count, self.negative_gap, self.negative_reach
        )
        samples = [
            self._sample(case, series.slices[k], k, nodules[k], 1, {"readers": len(sessions)})
            for k in positives
        ]
        slices = [k for k, _ in negatives]
        samples += [
            self._sample(case, series.slices[k], k, nodules[near], 0, {"region_from_slice": near})
            for k, near in zip(slices, region_slices(slices, positives))
        ]
        return samples
