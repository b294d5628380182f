"""The RES release layout (Gender from MS COCO, Scene from Places365) and its datamodule.

The layout, as the RES code reads it (Gao et al., KDD 2022; docs/data.md lists what we assumed)::

    ROOT/
      train/<class>/<img_idx>.jpg     a folder per class: the class name itself, or the class name
      val/<class>/...                 and an underscore and more (the Gender test split has
      test/<class>/...                men_test/ and women_test/)
      attention_label/*.csv           human attention labels

Each CSV row has ``img_idx`` (the image file's name without suffix), ``attention`` (a 224 by 224
matrix of 0 and 1 written as JSON) and ``img_check`` (the quality flag; only ``good`` rows are
used); other columns (``matrix_resize``) are ignored. Files whose name contains ``counterfactual``
hold negative maps (pixels that must not explain the prediction), the others factual maps.

An image is *annotated* when it has a good factual row (as in RES). Its prompt is factual ->
indispensable, counterfactual -> precluded (precluded wins where both are set), the rest undecided;
its ``explanation`` is the factual mask. Images without an annotation have all-zero explanations.
"""

from __future__ import annotations

import csv
import json
import logging
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from datamodules.bad_input import BadInputError, BadInputLog, check_on_bad_input
from datamodules.base import PromptedDataModule, Sample, Transform
from datamodules.transforms import JointCompose, JointRandomCrop, JointRandomFlip
from vapl.core.errors import MissingPathError, require_folder
from vapl.core.progress import progress
from vapl.core.prompts import empty_prompt, prompt_from_masks, resize_prompt

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
LABEL_FOLDER = "attention_label"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
REQUIRED_COLUMNS = ("img_idx", "attention", "img_check")
GOOD_FLAG = "good"
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


@dataclass
class AttentionLabels:
    """Good rows of the attention CSVs: boolean maps by ``img_idx``, and where each came from."""

    factual: dict[str, np.ndarray] = field(default_factory=dict)
    counterfactual: dict[str, np.ndarray] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    not_good: int = 0


@dataclass(frozen=True)
class ResImage:
    path: Path
    label: int

    @property
    def id(self) -> str:
        return self.path.stem


def _parse_binary_rows(text: str, size: int) -> np.ndarray | None:
    """Fast path for the usual ``[[0,1,...],...]``: None when the text is anything else."""
    compact = text.replace(" ", "").replace("\n", "").replace("\r", "")
    if not (compact.startswith("[[") and compact.endswith("]]")):
        return None
    rows = compact[2:-2].split("],[")
    commas = "," * (size - 1)
    if len(rows) != size or any(len(r) != 2 * size - 1 or r[1::2] != commas for r in rows):
        return None
    digits = "".join(row[0::2] for row in rows)
    if digits.strip("01"):
        return None
    return (np.frombuffer(digits.encode("ascii"), dtype=np.uint8) == ord("1")).reshape(size, size)


def parse_attention(text: str, size: int) -> np.ndarray:
    """A JSON matrix of 0 and 1 as a boolean [size, size] array; ``ValueError`` says what is wrong."""
    fast = _parse_binary_rows(text, size)
    if fast is not None:
        return fast
    try:
        matrix = np.asarray(json.loads(text), dtype=np.float64)
    except (json.JSONDecodeError, TypeError, ValueError) as error:
        raise ValueError(f"attention is not a JSON matrix of numbers ({error})") from None
    if matrix.shape != (size, size):
        raise ValueError(f"attention matrix is {matrix.shape}, expected ({size}, {size})")
    if not np.isin(matrix, (0.0, 1.0)).all():
        bad = np.unique(matrix[~np.isin(matrix, (0.0, 1.0))])[:5].tolist()
        raise ValueError(f"attention matrix must hold only 0 and 1, found {bad}")
    return matrix.astype(bool)


def read_attention_labels(folder: Path, size: int, log: BadInputLog) -> AttentionLabels:
    """Read every CSV in ``folder``. A row with a bad matrix is skipped (or raises) via ``log``; a
    file without the required columns always raises. A later row for the same image wins."""
    labels = AttentionLabels()
    if not folder.is_dir():
        raise MissingPathError(f"{folder}: no attention label folder (RES keeps its CSVs there)")
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # a 224 x 224 JSON matrix is ~100 kB
    for path in sorted(folder.glob("*.csv")):
        target = labels.counterfactual if "counterfactual" in path.name.lower() else labels.factual
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise BadInputError(
                    f"{path}: not an attention label file, missing column(s) {missing} "
                    f"(found {reader.fieldnames})"
                )
            for row in progress(reader, desc=f"reading {path.name}", leave=False, unit="row"):
                where = f"{path}:{reader.line_num}"
                if (row["img_check"] or "").strip().lower() != GOOD_FLAG:
                    labels.not_good += 1
                    continue
                img_idx = (row["img_idx"] or "").strip()
                try:
                    target[img_idx] = parse_attention(row["attention"] or "", size)
                except ValueError as error:
                    log.record("bad_matrix", f"{where}: img_idx {img_idx!r}: {error}")
                    continue
                labels.sources.setdefault(img_idx, where)
    return labels


def find_child(folder: Path, name: str) -> Path:
    """``folder/name``, matching the name without regard to case (the RES README writes Train)."""
    for child in sorted(folder.iterdir()) if folder.is_dir() else []:
        if child.is_dir() and child.name.lower() == name:
            return child
    raise MissingPathError(f"{folder}: no {name}/ folder")


def class_of_folder(name: str, class_names: tuple[str, ...]) -> int | None:
    lowered = name.lower()
    for label, class_name in enumerate(class_names):
        if lowered == class_name or lowered.startswith(f"{class_name}_"):
            return label
    return None


def list_split_images(
    split_dir: Path, class_names: tuple[str, ...], log: BadInputLog
) -> list[ResImage]:
    """Images of one split, labelled by their class folder; unreadable files go through ``log``."""
    images: list[ResImage] = []
    found: set[int] = set()
    for folder in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        label = class_of_folder(folder.name, class_names)
        if label is None:
            raise BadInputError(
                f"{folder}: folder matches no class (expected {', '.join(class_names)}, "
                "optionally followed by _something)"
            )
        found.add(label)
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        for path in progress(files, desc=f"checking {split_dir.name}/{folder.name}", leave=False):
            try:
                with Image.open(path):
                    pass
            except (OSError, ValueError) as error:
                log.record("unreadable_image", f"{path}: cannot open image ({error})")
                continue
            images.append(ResImage(path, label))
    missing = [class_names[c] for c in range(len(class_names)) if c not in found]
    if missing:
        raise MissingPathError(f"{split_dir}: no folder for class(es) {', '.join(missing)}")
    return images


def load_image(path: Path, size: int) -> torch.Tensor:
    """An RGB image resized to ``size`` x ``size`` (as RES does at 224) and ImageNet-normalised."""
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB").resize((size, size), Image.BILINEAR)
    except (OSError, ValueError) as error:
        raise BadInputError(f"{path}: cannot read image ({error})") from error
    tensor = torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (tensor - IMAGENET_MEAN) / IMAGENET_STD


@dataclass(frozen=True)
class ResItem:
    image: ResImage
    factual: torch.Tensor | None  # bool [S, S] at the image size
    counterfactual: torch.Tensor | None
    prompted: bool


class ResImageDataset(Dataset):
    """Images read from disk on demand; prompts and explanations from the attention labels."""

    def __init__(self, items: list[ResItem], image_size: int, transform: Transform | None = None):
        self.items = items
        self.image_size = image_size
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Sample:
        item = self.items[index]
        size = self.image_size
        if item.prompted:
            prompt = prompt_from_masks(item.factual, item.counterfactual, shape=(size, size))
        else:
            prompt = empty_prompt(size, size)
        explanation = item.factual.float() if item.factual is not None else torch.zeros(size, size)
        sample: Sample = {
            "image": load_image(item.image.path, size),
            "prompt": prompt,
            "has_prompt": torch.tensor(item.prompted),
            "label": torch.tensor(item.image.label, dtype=torch.int64),
            "explanation": explanation,
            "id": item.image.id,
        }
        return self.transform(sample) if self.transform is not None else sample


def _resized(mask: np.ndarray | None, size: int) -> torch.Tensor | None:
    if mask is None:
        return None
    return resize_prompt(torch.from_numpy(mask).float(), (size, size)) > 0.5


def balanced_quota(total: int, n_classes: int) -> list[int]:
    """``total`` split as evenly as possible over the classes, the remainder to the first ones."""
    return [total // n_classes + (c < total % n_classes) for c in range(n_classes)]


class ResDataModule(PromptedDataModule):
    """A two-class data set in the RES release layout (see the module docstring).

    The paper's protocol: ``n_annotated_train`` annotated training images (balanced over the
    classes, drawn with ``seed``; -1 takes all) carry prompts; ``n_unprompted_train`` further
    training images (-1: all the rest) join as unprompted samples; the release's val and test
    folders are the validation and test sets, with prompts where an image is annotated
    (``eval_prompts``). Bad input is skipped and counted, or raises (``on_bad_input="error"``).

    Args:
        root: the release's root folder.
        image_size: side of the square images in pixels.
        n_annotated_train: annotated training images that carry prompts (-1: all).
        n_unprompted_train: further training images without prompts (-1: all the rest).
        eval_prompts: annotated validation and test images carry prompts.
        annotation_size: side of the release's attention matrices.
        augment: random joint flips (and shifts with ``crop_padding``), train only.
        crop_padding: the largest random shift in pixels (0: none).
        on_bad_input: ``skip`` (count and warn) or ``error``.
        **kwargs: the settings every datamodule shares (:class:`~datamodules.base.PromptedDataModule`).
    """

    class_names: tuple[str, ...] = ()

    def __init__(
        self,
        root: str,
        image_size: int = 224,
        n_annotated_train: int = 100,
        n_unprompted_train: int = 0,
        eval_prompts: bool = True,
        annotation_size: int = 224,
        augment: bool = True,
        crop_padding: int = 0,
        on_bad_input: str = "skip",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_on_bad_input(on_bad_input)
        self.num_classes = len(self.class_names)
        self.in_channels = 3
        self.bad_input = BadInputLog(on_bad_input, source=root)
        self.stats: dict[str, int] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        hp = self.hparams
        root = require_folder(hp.root, "root folder", " (data.init_args.root; see docs/data.md)")
        log = self.bad_input
        labels = read_attention_labels(root / LABEL_FOLDER, hp.annotation_size, log)
        images = {
            split: list_split_images(find_child(root, split), self.class_names, log)
            for split in SPLITS
        }
        present = {image.id for split in images.values() for image in split}
        for img_idx in sorted((labels.factual.keys() | labels.counterfactual.keys()) - present):
            log.record(
                "missing_image",
                f"{labels.sources[img_idx]}: img_idx {img_idx!r} has an attention label "
                "but no image under train/, val/ or test/",
            )
        log.warn()

        prompted, unprompted = self._select_train(images["train"], labels)
        transform = self._train_transform()
        size = hp.image_size
        self.datasets["train"] = ResImageDataset(
            [self._item(i, labels, True) for i in prompted]
            + [self._item(i, labels, False) for i in unprompted],
            size,
            transform,
        )
        for split in ("val", "test"):
            self.datasets[split] = ResImageDataset(
                [self._item(i, labels, hp.eval_prompts) for i in images[split]], size
            )
        self.stats = {
            "train_prompted": len(prompted),
            "train_unprompted": len(unprompted),
            "val": len(images["val"]),
            "test": len(images["test"]),
            "rows_not_good": labels.not_good,
            "counterfactual_without_factual": len(labels.counterfactual.keys() - labels.factual),
            **{f"skipped_{reason}": n for reason, n in log.counts.items()},
        }
        logger.info("%s: %s", root, self.stats)

    def _item(self, image: ResImage, labels: AttentionLabels, prompted: bool) -> ResItem:
        factual = labels.factual.get(image.id)
        counterfactual = labels.counterfactual.get(image.id) if factual is not None else None
        size = self.hparams.image_size
        return ResItem(
            image,
            _resized(factual, size),
            _resized(counterfactual, size),
            prompted and factual is not None,
        )

    def _select_train(
        self, train: list[ResImage], labels: AttentionLabels
    ) -> tuple[list[ResImage], list[ResImage]]:
        hp = self.hparams
        generator = torch.Generator().manual_seed(hp.seed)
        annotated = [image for image in train if image.id in labels.factual]
        if hp.n_annotated_train < 0:
            chosen = annotated
        else:
            chosen = []
            quotas = balanced_quota(hp.n_annotated_train, self.num_classes)
            for label, quota in enumerate(quotas):
                pool = [image for image in annotated if image.label == label]
                if len(pool) < quota:
                    warnings.warn(
                        f"{hp.root}: asked for {quota} annotated training images of class "
                        f"{self.class_names[label]!r}, only {len(pool)} exist; using them all",
                        stacklevel=2,
                    )
                order = torch.randperm(len(pool), generator=generator)[:quota]
                chosen += [pool[i] for i in sorted(order.tolist())]
        chosen_paths = {image.path for image in chosen}
        rest = [image for image in train if image.path not in chosen_paths]
        n_rest = len(rest) if hp.n_unprompted_train < 0 else min(hp.n_unprompted_train, len(rest))
        order = torch.randperm(len(rest), generator=generator)[:n_rest]
        unprompted = [rest[i] for i in sorted(order.tolist())]
        if not chosen and not unprompted:
            raise ValueError(
                f"{hp.root}: no training images selected (n_annotated_train="
                f"{hp.n_annotated_train}, n_unprompted_train={hp.n_unprompted_train})"
            )
        return chosen, unprompted

    def _train_transform(self) -> Transform | None:
        hp = self.hparams
        if not hp.augment:
            return None
        steps: list[Transform] = [JointRandomFlip()]
        if hp.crop_padding > 0:
            steps.append(JointRandomCrop(hp.crop_padding))
        return JointCompose(steps)
