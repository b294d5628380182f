"""What the LIDC-IDRI and Pancreas datamodules share: the cache step, splits by patient, and a
dataset that serves samples from the cached arrays (no DICOM or NIfTI is read while training)."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from datamodules.base import PromptedDataModule, Sample
from datamodules.cache import (
    DataError,
    SliceCache,
    SliceSample,
    build_cache,
    cache_is_current,
    settings_hash,
    source_fingerprint,
)
from datamodules.splits import split_by_patient
from datamodules.transforms import JointRandomFlip
from vapl.core.errors import require_folder
from vapl.core.prompts import empty_prompt, prompt_from_masks, simulate_incomplete

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
#: The cache folder used when ``cache_dir`` is not given, inside the data root.
DEFAULT_CACHE_NAME = ".vapl_cache"


class CachedSliceDataset(Dataset):
    """Samples of the contract from a :class:`SliceCache`'s memory-mapped rows.

    The image is the windowed slice mapped from [0, 1] to [-1, 1]. The prompt marks the prompt
    region indispensable, made incomplete by :func:`vapl.core.prompts.simulate_incomplete` with a
    generator seeded by ``(seed, row)`` (the same prompt every epoch, as a clinician's would be),
    and everything outside the body precluded. The prompt region is ``region_key``'s mask where that
    is not empty, else the explanation.
    """

    def __init__(
        self,
        cache: SliceCache,
        rows: np.ndarray,
        keep_fraction: float = 0.5,
        jitter: int = 1,
        prompt_fraction: float = 1.0,
        region_key: str | None = None,
        seed: int = 0,
        transform: Any = None,
    ) -> None:
        self.cache = cache
        self.rows = np.asarray(rows, dtype=np.int64)
        self.keep_fraction = keep_fraction
        self.jitter = jitter
        self.region_key = region_key
        self.seed = seed
        self.transform = transform
        draw = np.random.default_rng([seed, 7]).random(len(cache))
        self.with_prompt = draw[self.rows] < prompt_fraction
        self.ids = [cache.manifest["samples"][r]["id"] for r in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def _mask(self, key: str, row: int) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.cache.arrays[key][row]) > 0)

    def __getitem__(self, index: int) -> Sample:
        row = int(self.rows[index])
        image = torch.from_numpy(np.asarray(self.cache.arrays["images"][row], dtype=np.float32))
        explanation = self._mask("explanations", row)
        size = tuple(explanation.shape)
        has_prompt = bool(self.with_prompt[index])
        if has_prompt:
            region = explanation
            if self.region_key is not None:
                lesion = self._mask(self.region_key, row)
                region = lesion if bool(lesion.any()) else explanation
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + row)
            kept = simulate_incomplete(region, self.keep_fraction, self.jitter, generator)
            prompt = prompt_from_masks(kept, ~self._mask("body", row))
        else:
            prompt = empty_prompt(*size)
        sample: Sample = {
            "image": (image * 2.0 - 1.0).unsqueeze(0),
            "prompt": prompt,
            "has_prompt": torch.tensor(has_prompt),
            "label": torch.tensor(int(self.cache.labels[row]), dtype=torch.long),
            "explanation": explanation.float(),
            "id": self.ids[index],
        }
        return self.transform(sample) if self.transform is not None else sample


class MedicalSliceDataModule(PromptedDataModule, ABC):
    """2-D CT slices from a one-time cache, split by patient; subclasses read the archives.

    A subclass defines ``dataset_name``, :meth:`cache_settings` (everything that changes the cached
    arrays), :meth:`list_cases` (cases and their source files, found without reading pixels),
    :meth:`case_name` and :meth:`process_case` (one case's samples, or ``CaseSkipped`` /
    ``CaseIgnored``).

    Args:
        root: the archive's root folder.
        n_train: training samples (split by patient, see docs/data.md).
        n_val: validation samples.
        n_test: test samples (``None``: every remaining patient's).
        cache_dir: the cache folder (``None``: a folder inside ``root``).
        image_size: side of the square slices in pixels.
        balanced: balance the two classes in every split.
        keep_fraction: share of the region the incomplete prompt keeps.
        jitter: pixels of random jitter along the kept prompt's border.
        prompt_fraction: share of the samples that carry a prompt.
        augment: random joint left-right flips (train only).
        strict: stop at the first bad file instead of skipping its case.
        **kwargs: the settings every datamodule shares (:class:`~datamodules.base.PromptedDataModule`).
    """

    dataset_name = "medical"
    #: The cached mask the prompt comes from when not empty (else the explanation).
    region_key: str | None = None

    def __init__(
        self,
        root: str,
        n_train: int,
        n_val: int,
        n_test: int | None,
        cache_dir: str | None = None,
        image_size: int = 224,
        balanced: bool = True,
        keep_fraction: float = 0.5,
        jitter: int = 1,
        prompt_fraction: float = 1.0,
        augment: bool = False,
        strict: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.num_classes = 2
        self.in_channels = 1
        self.root = Path(root).expanduser()
        self.cache_root = (
            Path(cache_dir).expanduser() if cache_dir else self.root / DEFAULT_CACHE_NAME
        )
        self.image_size = image_size
        self.sizes = {"train": n_train, "val": n_val, "test": n_test}
        self.balanced = balanced
        self.keep_fraction = keep_fraction
        self.jitter = jitter
        self.prompt_fraction = prompt_fraction
        self.augment = augment
        self.strict = strict
        self.cache: SliceCache | None = None
        self._cache_directory: Path | None = None

    # ----- what a subclass provides ----------------------------------------------------------
    @abstractmethod
    def cache_settings(self) -> dict[str, Any]: ...

    @abstractmethod
    def list_cases(self) -> tuple[list[Any], list[Path]]:
        """The cases to process and every source file they read (for the fingerprint)."""

    @abstractmethod
    def case_name(self, case: Any) -> str: ...

    @abstractmethod
    def process_case(self, case: Any) -> list[SliceSample]: ...

    # ----- the cache step --------------------------------------------------------------------
    def relative(self, path: Path) -> str:
        """A source path as the manifest records it: relative to the data root."""
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    def cache_directory(self) -> Path:
        """One folder per data root and settings, so two archives never share a cache."""
        key = {**self.cache_settings(), "root": str(self.root.resolve())}
        return self.cache_root / f"{self.dataset_name}-{settings_hash(key)}"

    def build_cache(self) -> Path:
        """Write the cache unless a current one exists; return its folder. Reads the archive."""
        if self._cache_directory is not None:
            return self._cache_directory
        require_folder(
            self.root,
            f"{self.dataset_name} root folder",
            " (data.init_args.root; see docs/data.md, or generate a small tree with "
            f"python -m datamodules.fixtures {self.dataset_name} OUT_DIR)",
        )
        settings = self.cache_settings()
        directory = self.cache_directory()
        cases, files = self.list_cases()
        if not cases:
            raise DataError(
                f"{self.dataset_name}: found no cases under {self.root}; is it the data's root "
                "folder? (docs/data.md shows the expected layout)"
            )
        sources = source_fingerprint(files, self.root)
        if cache_is_current(directory, settings, sources):
            log.info("%s: reusing cache %s", self.dataset_name, directory)
        else:
            build_cache(
                directory,
                settings,
                sources,
                cases,
                self.process_case,
                self.case_name,
                strict=self.strict,
                description=f"{self.dataset_name} cache",
            )
        self._cache_directory = directory
        return directory

    def prepare_data(self) -> None:
        self.build_cache()

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        self.cache = SliceCache.open(self.build_cache())
        rows = split_by_patient(
            self.cache.patients, self.cache.labels, self.sizes, self.seed, self.balanced
        )
        for split in SPLITS:
            if len(rows[split]) == 0:
                raise DataError(
                    f"{self.dataset_name}: the {split} split is empty "
                    f"({len(set(self.cache.patients))} patients in {self.cache.directory})"
                )
            self.datasets[split] = CachedSliceDataset(
                self.cache,
                rows[split],
                keep_fraction=self.keep_fraction,
                jitter=self.jitter,
                prompt_fraction=self.prompt_fraction,
                region_key=self.region_key,
                seed=self.seed,
                transform=JointRandomFlip() if self.augment and split == "train" else None,
            )
        counts = {s: np.bincount(self.cache.labels[rows[s]], minlength=2).tolist() for s in SPLITS}
        log.info("%s splits (negatives, positives): %s", self.dataset_name, counts)
        lacking = [s for s in SPLITS if min(counts[s]) == 0]
        if lacking:
            log.warning(
                "%s: split(s) %s lack a class (negatives, positives: %s): too few patients",
                self.dataset_name,
                ", ".join(lacking),
                counts,
            )
