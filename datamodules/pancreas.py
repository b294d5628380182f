"""Pancreas: tumour (1) or normal (0) on 2-D CT slices through the pancreas.

Two archives under one root (folder names configurable):

* ``Task07_Pancreas/``: the Medical Segmentation Decathlon's pancreas task, the abnormal cases.
  Cases are enumerated from ``dataset.json`` (``training`` entries: ``imagesTr`` / ``labelsTr``
  NIfTI, label 1 pancreas, 2 tumour), so stray files such as ``._pancreas_001.nii.gz`` are never
  read. Positives are slices through the tumour.
* ``Pancreas-CT/PANCREAS_NNNN/.../*.dcm`` with ``TCIA_pancreas_labels-02-05-2017/labelNNNN.nii.gz``:
  the NIH Pancreas-CT set from TCIA, the normal cases. Negatives are slices through the pancreas.

The pancreas (tumour included) is the explanation; the prompt comes from the pancreas in both classes
(``prompt_source="pancreas"``, the default) or from the tumour where the slice has one
(``"tumour"``, the paper's reading: an inaccurate prompt). The tumour source gives the label away:
positives are prompted with a small lesion, negatives (no tumour) with the whole organ, so a model
can read the class from the prompt's shape at test time; it warns when chosen. Both sources are turned into the canonical orientation of
:mod:`datamodules.io.orientation` before anything else, so a slice comes out the same way round.

See docs/data.md ("Pancreas") for the archives, the command and how this follows the paper.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.cache import CaseSkipped, DataError, SliceSample
from datamodules.io.dicom import (
    DicomError,
    SortedSeries,
    iter_series_dirs,
    read_canonical_slice,
    read_header,
    sort_series,
)
from datamodules.io.nifti import NiftiError, canonical_shape, load_nifti, read_nifti
from datamodules.io.orientation import canonical_slice
from datamodules.medical import MedicalSliceDataModule
from datamodules.slices import ABDOMEN_WINDOW, slice_arrays

CACHE_FORMAT = "pancreas-1"
PANCREAS, TUMOUR = 1, 2
PROMPT_SOURCES = ("pancreas", "tumour")
LEAKING_SOURCE_WARNING = (
    "Pancreas: prompt_source='tumour' prompts positive slices with the tumour and negative slices "
    "with the pancreas, so the prompt's shape gives the label away at test time. It is the "
    "paper's reading; prompt_source='pancreas' (the default) prompts both classes alike."
)


@dataclass(frozen=True)
class PancreasCase:
    """An abnormal MSD case (NIfTI image and label) or a normal TCIA case (DICOM and label)."""

    kind: str  # "msd" or "tcia"
    name: str
    label_file: Path
    image_file: Path | None = None
    dicom_files: tuple[Path, ...] = ()
    problem: str | None = None  # found while listing: reported when the case is processed


class PancreasDataModule(MedicalSliceDataModule):
    """Pancreas CT slices: tumour (1) or normal pancreas (0). One channel, two classes.

    Args:
        root: the folder holding the three folders below.
        msd_dir: the Medical Segmentation Decathlon's Task07 (abnormal cases, NIfTI).
        normal_dir: TCIA Pancreas-CT (normal cases, DICOM).
        normal_label_dir: the TCIA pancreas labels (NIfTI).
        window_level: centre of the CT window in HU (abdomen window).
        window_width: width of the CT window in HU.
        min_region_pixels: pixels of tumour (or pancreas) a slice needs to be used.
        prompt_source: the region the prompt marks (docs/data.md).
        n_train: training samples.
        n_val: validation samples.
        n_test: test samples (``None``: every remaining patient's).
        **kwargs: :class:`~datamodules.medical.MedicalSliceDataModule`'s arguments.
    """

    dataset_name = "pancreas"

    def __init__(
        self,
        root: str = "data/pancreas",
        msd_dir: str = "Task07_Pancreas",
        normal_dir: str = "Pancreas-CT",
        normal_label_dir: str = "TCIA_pancreas_labels-02-05-2017",
        window_level: float = ABDOMEN_WINDOW[0],
        window_width: float = ABDOMEN_WINDOW[1],
        min_region_pixels: int = 1,
        prompt_source: str = "pancreas",
        n_train: int = 30,
        n_val: int = 30,
        n_test: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(root=root, n_train=n_train, n_val=n_val, n_test=n_test, **kwargs)
        if prompt_source not in PROMPT_SOURCES:
            raise ValueError(
                f"prompt_source must be one of {PROMPT_SOURCES}, got {prompt_source!r}"
            )
        if prompt_source == "tumour":
            warnings.warn(LEAKING_SOURCE_WARNING, UserWarning, stacklevel=2)
        self.msd_dir = self.root / msd_dir
        self.normal_dir = self.root / normal_dir
        self.normal_label_dir = self.root / normal_label_dir
        self.window = (window_level, window_width)
        self.min_region_pixels = min_region_pixels
        self.region_key = "lesions" if prompt_source == "tumour" else None

    def cache_settings(self) -> dict[str, Any]:
        return {
            "format": CACHE_FORMAT,
            "image_size": self.image_size,
            "window": list(self.window),
            "min_region_pixels": self.min_region_pixels,
            "folders": [
                self.relative(d) for d in (self.msd_dir, self.normal_dir, self.normal_label_dir)
            ],
        }

    # ----- listing ---------------------------------------------------------------------------
    def _msd_cases(self) -> list[PancreasCase]:
        index = self.msd_dir / "dataset.json"
        try:
            entries = json.loads(index.read_text())["training"]
            # pathlib drops the "./" the index writes before each path
            pairs = [(self.msd_dir / e["image"], self.msd_dir / e["label"]) for e in entries]
        except FileNotFoundError as error:
            raise DataError(f"{index}: not found; the abnormal cases are listed there") from error
        except (ValueError, KeyError, TypeError) as error:
            raise DataError(f"{index}: not a Decathlon dataset.json ({error!r})") from error
        return [
            PancreasCase("msd", image.name.removesuffix(".gz").removesuffix(".nii"), label, image)
            for image, label in pairs
        ]

    def _tcia_cases(self) -> list[PancreasCase]:
        if not self.normal_dir.is_dir():
            raise DataError(f"{self.normal_dir}: not found; the normal cases are read from there")
        cases = []
        for patient in sorted(
            p for p in self.normal_dir.iterdir() if p.is_dir() and p.name[0] != "."
        ):
            number = re.search(r"(\d+)$", patient.name)
            label = (
                self.normal_label_dir / f"label{int(number.group(1)) if number else 0:04d}.nii.gz"
            )
            series = list(iter_series_dirs(patient))
            problem = None
            if len(series) != 1:
                problem = f"{patient}: {len(series)} DICOM series, expected one"
            files = tuple(f for _, found in series for f in found)
            cases.append(
                PancreasCase("tcia", patient.name, label, dicom_files=files, problem=problem)
            )
        return cases

    def list_cases(self) -> tuple[list[PancreasCase], list[Path]]:
        cases = self._msd_cases() + self._tcia_cases()
        files = [self.msd_dir / "dataset.json"]
        for case in cases:
            files += [
                f for f in (case.image_file, case.label_file) if f is not None and f.is_file()
            ]
            files += list(case.dicom_files)
        return cases, files

    def case_name(self, case: PancreasCase) -> str:
        return f"{case.kind}:{case.name}"

    # ----- one case --------------------------------------------------------------------------
    def _label_volume(self, case: PancreasCase, expected: tuple[int, ...], what: str) -> np.ndarray:
        try:
            header = load_nifti(case.label_file)
            shape = canonical_shape(header)
            if shape != expected:
                raise CaseSkipped(
                    f"{case.label_file}: label shape {shape} (z, y, x) does not match the {what} "
                    f"shape {expected}"
                )
            labels = read_nifti(case.label_file, np.uint8, header)
        except NiftiError as error:
            raise CaseSkipped(str(error)) from error
        unknown = sorted(set(np.unique(labels).tolist()) - {0, PANCREAS, TUMOUR})
        if unknown:
            raise CaseSkipped(f"{case.label_file}: unexpected label values {unknown}")
        return labels

    def _samples(
        self,
        case: PancreasCase,
        hu: np.ndarray,
        labels: np.ndarray,
        k: int,
        label: int,
        source: list,
    ) -> SliceSample:
        masks = {"explanations": labels >= PANCREAS, "lesions": labels == TUMOUR}
        arrays = slice_arrays(hu, masks, self.image_size, self.window)
        record = {
            "id": f"{case.name}/{k:04d}",
            "patient": case.name,
            "sources": source,
            "slice": k,
            "tumour_pixels": int(masks["lesions"].sum()),
        }
        return SliceSample(arrays, label, record)

    def _process_msd(self, case: PancreasCase) -> list[SliceSample]:
        assert case.image_file is not None
        try:
            image = load_nifti(case.image_file)
            volume_shape = canonical_shape(image)
            labels = self._label_volume(case, volume_shape, f"image {case.image_file.name}")
            volume = read_nifti(case.image_file, np.float32, image)
        except NiftiError as error:
            raise CaseSkipped(str(error)) from error
        sources = [self.relative(case.image_file), self.relative(case.label_file)]
        tumour_pixels = (labels == TUMOUR).sum(axis=(1, 2))
        return [
            self._samples(case, volume[k], labels[k], int(k), 1, sources)
            for k in np.flatnonzero(tumour_pixels >= self.min_region_pixels)
        ]

    def _series(self, case: PancreasCase) -> SortedSeries:
        if case.problem:
            raise CaseSkipped(case.problem)
        try:
            series = sort_series([read_header(p) for p in case.dicom_files])
        except DicomError as error:
            raise CaseSkipped(str(error)) from error
        return series

    def _process_tcia(self, case: PancreasCase) -> list[SliceSample]:
        series = self._series(case)
        first = series.slices[0]
        plane = canonical_slice(np.zeros((first.rows, first.columns)), first.orientation)  # type: ignore[arg-type]
        expected = (len(series.slices), *plane.shape)
        labels = self._label_volume(case, expected, f"DICOM series {case.dicom_files[0].parent}")
        pancreas_pixels = (labels >= PANCREAS).sum(axis=(1, 2))
        samples = []
        for k in np.flatnonzero(pancreas_pixels >= self.min_region_pixels):
            header = series.slices[k]
            try:
                hu = read_canonical_slice(header)
            except DicomError as error:
                raise CaseSkipped(str(error)) from error
            sources = [self.relative(header.path), self.relative(case.label_file)]
            samples.append(self._samples(case, hu, labels[k], int(k), 0, sources))
        return samples

    def process_case(self, case: PancreasCase) -> list[SliceSample]:
        if not case.label_file.is_file():
            raise CaseSkipped(f"{case.label_file}: label file not found for {case.name}")
        if case.kind == "msd":
            return self._process_msd(case)
        return self._process_tcia(case)
