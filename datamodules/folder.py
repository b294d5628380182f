"""A user's own images: ``root/labels.csv`` lists every sample (see docs/data.md).

Columns ``image``, ``label`` and ``split`` are required, ``prompt`` and ``explanation`` optional;
paths are relative to ``root``. Images are PNG, JPEG or NPY, grey or RGB; prompts PNG or NPY (as
:func:`vapl.core.prompt_files.read_prompt` reads them); explanations PNG or NPY in [0, 1].

The CSV is read in ``__init__`` (text only: the class count must be known when the CLI builds the
model). The first ``setup`` decodes every file once to check it and raises one
:class:`FolderDataError` listing every bad row; afterwards samples are decoded lazily in
``__getitem__`` (in the DataLoader workers), or kept in memory with ``cache=True``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from datamodules.base import PromptedDataModule, Sample, Transform
from datamodules.folder_csv import (
    LABELS_FILE,
    FolderDataError,
    RowProblem,
    read_labels_csv,
    resolve_labels,
)
from datamodules.image_files import (
    ImageFileError,
    read_explanation,
    read_image,
    resize_bilinear,
)
from datamodules.transforms import JointRandomFlip
from vapl.core.errors import require_folder
from vapl.core.progress import progress
from vapl.core.prompt_files import read_prompt
from vapl.core.prompts import PromptError, empty_prompt, resize_prompt

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SampleEntry:
    """A checked row: what ``__getitem__`` needs to load the sample."""

    line: int
    image: Path
    label: int
    id: str
    prompt: Path | None = None
    explanation: Path | None = None


class SampleLoader:
    """Decode one entry into a contract sample (image resized bilinearly, prompt nearest)."""

    def __init__(
        self, image_size: tuple[int, int], channels: int, mean: torch.Tensor, std: torch.Tensor
    ) -> None:
        self.image_size = image_size
        self.channels = channels
        self.mean = mean
        self.std = std

    def __call__(self, entry: SampleEntry) -> Sample:
        """Raise :class:`RowLoadError` naming the file at fault."""
        image = _read(entry.image, lambda path: read_image(path, self.channels))
        shape = tuple(image.shape[-2:])
        if entry.prompt is None:
            prompt = empty_prompt(*self.image_size)
        else:
            prompt = resize_prompt(
                _read(entry.prompt, lambda p: read_prompt(p, shape)), self.image_size
            )
        image = resize_bilinear(image, self.image_size)
        sample: Sample = {
            "image": (image - self.mean) / self.std,
            "prompt": prompt,
            "has_prompt": torch.tensor(entry.prompt is not None),
            "label": torch.tensor(entry.label, dtype=torch.int64),
            "id": entry.id,
        }
        if entry.explanation is not None:
            explanation = _read(entry.explanation, read_explanation)
            if tuple(explanation.shape) != shape:
                raise RowLoadError(
                    entry.explanation,
                    f"explanation shape {tuple(explanation.shape)} does not match the image {shape}",
                )
            sample["explanation"] = resize_bilinear(explanation, self.image_size).clamp(0.0, 1.0)
        return sample


class RowLoadError(Exception):
    """A file of a row that cannot be loaded."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def _read(path: Path, reader):  # type: ignore[no-untyped-def]
    if not path.is_file():
        raise RowLoadError(path, "file not found")
    try:
        return reader(path)
    except (ImageFileError, PromptError) as error:
        # read_prompt puts the path in front of its message; keep only the reason.
        raise RowLoadError(path, str(error).removeprefix(f"{path}: ")) from error


class FolderDataset(Dataset):
    """The checked entries of one split; decoded on access unless ``cache`` holds the samples."""

    def __init__(
        self,
        entries: list[SampleEntry],
        loader: SampleLoader,
        cache: list[Sample] | None = None,
        transform: Transform | None = None,
    ) -> None:
        self.entries = entries
        self.loader = loader
        self.cache = cache
        self.transform = transform

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> Sample:
        if self.cache is not None:
            sample = self.cache[index]
        else:
            try:
                sample = self.loader(self.entries[index])
            except RowLoadError as error:  # the file changed after setup checked it
                line = self.entries[index].line
                raise FolderDataError(f"line {line}: {error}") from error
        return self.transform(sample) if self.transform is not None else sample


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f"image_size is a positive int or (height, width), got {size!r}")
    return int(pair[0]), int(pair[1])


def _per_channel(value: float | Sequence[float], channels: int, name: str) -> torch.Tensor:
    values = [float(value)] if isinstance(value, (int, float)) else [float(v) for v in value]
    if len(values) not in (1, channels):
        raise ValueError(f"{name} has {len(values)} values; give 1 or {channels} (one a channel)")
    return torch.tensor(values * (channels // len(values))).view(channels, 1, 1)


class FolderDataModule(PromptedDataModule):
    """Images listed in ``root/labels.csv`` (see the module docstring and docs/data.md).

    Args:
        root: the folder holding labels.csv; paths in the CSV are relative to it.
        image_size: every image is resized to this (int: square, or (height, width)).
        channels: 1 or 3; grey images are repeated to 3 channels, RGB becomes luma for 1.
        mean: after scaling to [0, 1] the image becomes ``(x - mean) / std`` (one value, or one
            a channel). The defaults 0.5, 0.5 map [0, 1] to [-1, 1]; pass ImageNet's statistics
            with ImageNet-pretrained weights.
        std: see ``mean``.
        classes: class names in index order. Default: integer labels are indices, names are
            numbered in sorted order.
        augment: random left-right flips of image, prompt and explanation together (train only).
        cache: keep every decoded sample in memory (float32, about 4 * (channels + 2) * H * W
            bytes each) instead of decoding it again in every epoch.
        **kwargs: the settings every datamodule shares (:class:`~datamodules.base.PromptedDataModule`).
    """

    def __init__(
        self,
        root: str,
        image_size: int | tuple[int, int] = 224,
        channels: int = 3,
        mean: float | list[float] = 0.5,
        std: float | list[float] = 0.5,
        classes: list[str] | None = None,
        augment: bool = False,
        cache: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        self.root = require_folder(
            root, "root folder", f" (data.init_args.root: the folder holding {LABELS_FILE})"
        )
        self.csv_path = self.root / LABELS_FILE
        self.image_size = _pair(image_size)
        self.loader = SampleLoader(
            self.image_size,
            channels,
            _per_channel(mean, channels, "mean"),
            _per_channel(std, channels, "std"),
        )
        self.rows = read_labels_csv(self.csv_path)
        self.class_names, self.label_results = resolve_labels([r.label for r in self.rows], classes)
        if not self.class_names:
            problems = [
                RowProblem(row.line, row.image, why)
                for row, why in zip(self.rows, self.label_results)
                if isinstance(why, str)
            ]
            raise FolderDataError(f"{self.csv_path}: no row has a usable label", problems)
        self.num_classes = len(self.class_names)
        self.in_channels = channels
        present = {index for index in self.label_results if isinstance(index, int)}
        if unused := [name for i, name in enumerate(self.class_names) if i not in present]:
            warnings.warn(f"{self.csv_path}: classes {unused} have no rows", stacklevel=2)

    def check_rows(self) -> tuple[dict[str, list[SampleEntry]], dict[str, list[Sample]]]:
        """Decode every row once; return each split's entries (and, with ``cache``, samples).

        Raises :class:`FolderDataError` listing every bad row if any row is bad.
        """
        problems: list[RowProblem] = []
        to_load: list[tuple[str | None, SampleEntry]] = []  # split None: the row is bad anyway
        for row, label in zip(self.rows, self.label_results):
            split = row.split.lower()
            reasons = []
            if split not in SPLITS:
                reasons.append(f"split {row.split!r} is not one of {', '.join(SPLITS)}")
            if isinstance(label, str):
                reasons.append(label)
            if not row.image:
                reasons.append("empty image path")
            problems += [RowProblem(row.line, row.image, reason) for reason in reasons]
            if row.image:  # load it even if the row is bad, to report its file problems too
                entry = SampleEntry(
                    line=row.line,
                    image=self.root / row.image,
                    label=label if isinstance(label, int) else -1,
                    id=row.image,
                    prompt=self.root / row.prompt if row.prompt else None,
                    explanation=self.root / row.explanation if row.explanation else None,
                )
                to_load.append((None if reasons else split, entry))

        keep = bool(self.hparams.cache)

        def load(item: tuple[str | None, SampleEntry]) -> Sample | RowProblem | None:
            entry = item[1]
            try:
                sample = self.loader(entry)
            except RowLoadError as error:
                return RowProblem(entry.line, self._relative(error.path), error.reason)
            return sample if keep else None  # lazy loading: do not hold every image here

        # Decoding releases the GIL: threads make the check faster on big folders.
        with ThreadPoolExecutor(max_workers=max(1, self.num_workers)) as pool:
            results = list(
                progress(
                    pool.map(load, to_load),
                    total=len(to_load),
                    desc=f"Checking {self.csv_path}",
                )
            )

        entries: dict[str, list[SampleEntry]] = {split: [] for split in SPLITS}
        samples: dict[str, list[Sample]] = {split: [] for split in SPLITS}
        for (split, entry), result in zip(to_load, results):
            if isinstance(result, RowProblem):
                problems.append(result)
            elif split is not None:
                entries[split].append(entry)
                if result is not None:
                    samples[split].append(result)
        problems += self._explanation_gaps(entries)
        if problems:
            n_bad = len({problem.line for problem in problems})
            problems.sort(key=lambda problem: problem.line)
            raise FolderDataError(
                f"{self.csv_path}: {n_bad} of {len(self.rows)} rows cannot be used:", problems
            )
        return entries, samples

    def _relative(self, path: Path) -> str:
        return str(path.relative_to(self.root) if path.is_relative_to(self.root) else path)

    @staticmethod
    def _explanation_gaps(entries: dict[str, list[SampleEntry]]) -> list[RowProblem]:
        """A split has explanations for all its rows or none: a batch cannot mix them."""
        gaps = []
        for split, split_entries in entries.items():
            if any(entry.explanation for entry in split_entries):
                gaps += [
                    RowProblem(
                        entry.line,
                        entry.id,
                        f"no explanation, but other {split!r} rows have one "
                        "(give every row of a split an explanation, or none)",
                    )
                    for entry in split_entries
                    if entry.explanation is None
                ]
        return gaps

    def setup(self, stage: str | None = None) -> None:
        """Check every row of every split at the first call, so a bad test row stops ``fit``."""
        if not self.datasets:
            entries, samples = self.check_rows()
            for split in SPLITS:
                if not entries[split]:
                    continue
                cache = samples[split] if self.hparams.cache else None
                self.datasets[split] = FolderDataset(entries[split], self.loader, cache)
            if self.hparams.augment and "train" in self.datasets:
                self.datasets["train"].transform = JointRandomFlip()
        needed = {
            "fit": ("train", "val"),
            "validate": ("val",),
            "test": ("test",),
            "predict": (self.predict_split,),
        }.get(stage or "", ())
        if missing := [split for split in needed if split not in self.datasets]:
            raise FolderDataError(
                f"{self.csv_path}: no rows with split {' or '.join(missing)}, which {stage!r} needs"
            )
