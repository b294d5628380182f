"""The Annotate tab's work, without a browser: step through a folder's images and save prompts.

A folder data set (``labels.csv`` of the folder format, docs/data.md) keeps its rows, columns and
order; saving a prompt writes the prompt file and sets that row's ``prompt`` cell (the column is
added when missing). A folder without ``labels.csv`` is a folder of images (PNG, JPEG, NPY, found
recursively, ``prompts/`` left out): the first save creates ``labels.csv`` with one row per image
and empty ``label`` and ``split`` cells to fill in before training.

Every write is atomic: the file is written to a temporary file in the same folder, flushed to
disk and renamed over the old one, so a crash or a closed tab leaves the old file or the new one,
never half of either. Before ``labels.csv`` is replaced, the previous version is kept as
``labels.csv.bak``. ``labels.csv`` is read again just before each save, so edits made to it by
hand meanwhile are kept. Paths that lead outside the data set's root (``..``, absolute paths,
links) are refused, for reading and for writing.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from datamodules.folder_csv import LABELS_FILE
from vapl.core.errors import UserInputError
from vapl.core.prompt_files import read_prompt, write_prompt

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".npy")
PROMPTS_FOLDER = "prompts"
BACKUP_SUFFIX = ".bak"
NEW_COLUMNS = ("image", "label", "split", "prompt")


class AnnotationError(UserInputError, ValueError):
    """A data set folder or row that cannot be annotated; the message names it."""


class OutsideRootError(AnnotationError):
    """A path that leads outside the data set's root."""


def inside_root(root: Path, path: str) -> Path:
    """``root / path`` (``path`` relative to ``root``, or absolute as the folder format allows),
    refusing one that resolves outside ``root``, links followed (module docstring)."""
    if not path:
        raise AnnotationError(f"{root}: empty path")
    target = root / Path(path)  # an absolute path replaces root
    if not target.resolve().is_relative_to(root.resolve()):
        raise OutsideRootError(f"{path}: leads outside the data set's root {root}; refused")
    return target


def _fsync_folder(folder: Path) -> None:
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:  # some file systems do not open folders
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def atomic_write(path: Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(temporary)`` for a temporary file beside ``path`` (same suffix), flush it to
    disk, then rename it over ``path``; on any error the temporary file is removed and ``path``
    is untouched."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        write(temporary)
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)
    return path


def write_csv_atomically(path: Path, columns: list[str], rows: list[dict[str, str]]) -> Path:
    """Write ``rows`` as CSV with ``columns`` atomically, keeping the old file as ``.bak``."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    if path.is_file():
        backup = path.with_name(path.name + BACKUP_SUFFIX)
        atomic_write(backup, lambda temporary: shutil.copyfile(path, temporary))
    return atomic_write(path, lambda temporary: temporary.write_text(text.getvalue()))


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [name.strip() for name in reader.fieldnames or []]
        if "image" not in columns:
            raise AnnotationError(
                f"{path}: no 'image' column (the header has {', '.join(columns) or 'nothing'})"
            )
        reader.fieldnames = columns
        rows = [{k: (v or "").strip() for k, v in row.items() if k} for row in reader]
    return columns, rows


def _find_images(root: Path) -> list[str]:
    found = []
    for directory, folders, files in os.walk(root):
        here = Path(directory)
        folders[:] = sorted(
            f
            for f in folders
            if not f.startswith(".") and not (here == root and f == PROMPTS_FOLDER)
        )
        found += [
            (here / f).relative_to(root).as_posix()
            for f in sorted(files)
            if f.lower().endswith(IMAGE_SUFFIXES) and not f.startswith(".")
        ]
    return found


@dataclass
class PromptTable:
    """The rows of a data set folder, as the Annotate tab steps through them."""

    root: Path
    columns: list[str]
    rows: list[dict[str, str]] = field(default_factory=list)
    has_csv: bool = True

    @property
    def csv_path(self) -> Path:
        return self.root / LABELS_FILE

    @classmethod
    def open(cls, root: str | Path) -> PromptTable:
        """Read ``root/labels.csv``, or list the images of a folder without one."""
        text = str(root or "").strip()
        if not text:
            raise AnnotationError("no folder given: type the path of a data set folder")
        root = Path(text).expanduser()
        if not root.is_dir():
            raise AnnotationError(f"{root}: not a folder")
        if (root / LABELS_FILE).is_file():
            columns, rows = _read_csv(root / LABELS_FILE)
            if not rows:
                raise AnnotationError(f"{root / LABELS_FILE}: a header but no rows")
            return cls(root, columns, rows, has_csv=True)
        images = _find_images(root)
        if not images:
            raise AnnotationError(
                f"{root}: no {LABELS_FILE} and no images ({', '.join(IMAGE_SUFFIXES)}) in it"
            )
        rows = [{"image": image, "label": "", "split": "", "prompt": ""} for image in images]
        return cls(root, list(NEW_COLUMNS), rows, has_csv=False)

    def __len__(self) -> int:
        return len(self.rows)

    def image_path(self, index: int) -> Path:
        return inside_root(self.root, self.rows[index]["image"])

    def prompt_path(self, index: int) -> Path | None:
        """The row's prompt file, when its cell names one."""
        cell = self.rows[index].get("prompt", "")
        return inside_root(self.root, cell) if cell else None

    def is_prompted(self, index: int) -> bool:
        path = self.prompt_path(index) if self.rows[index].get("prompt") else None
        return path is not None and path.is_file()

    def progress(self) -> tuple[int, int]:
        """(rows with a prompt file, rows)."""
        return sum(self._prompted_safely(i) for i in range(len(self))), len(self)

    def _prompted_safely(self, index: int) -> bool:
        try:
            return self.is_prompted(index)
        except AnnotationError:
            return False

    def first_unprompted(self, start: int = 0) -> int | None:
        """The first row at or after ``start`` (wrapping around) without a prompt file."""
        for step in range(len(self)):
            index = (start + step) % len(self)
            if not self._prompted_safely(index):
                return index
        return None

    def read_prompt(self, index: int, shape: tuple[int, int]) -> torch.Tensor | None:
        """The row's saved prompt at the image's ``shape``, if it has one."""
        path = self.prompt_path(index)
        if path is None or not path.is_file():
            return None
        return read_prompt(path, shape, on_empty="ignore")

    def default_prompt_path(self, index: int) -> str:
        """``prompts/<the image's path without a leading images/>.png``."""
        image = Path(self.rows[index]["image"])
        parts = (
            image.parts[1:] if len(image.parts) > 1 and image.parts[0] == "images" else image.parts
        )
        return Path(PROMPTS_FOLDER, *parts).with_suffix(".png").as_posix()

    def save(self, index: int, prompt: torch.Tensor) -> Path:
        """Write the row's prompt file and its ``prompt`` cell (module docstring); returns the
        prompt file. An existing ``.npy`` prompt stays NPY, anything else is written as PNG."""
        image_cell = self.rows[index]["image"]
        self.image_path(index)  # refuses a row whose image is outside the root
        if self.has_csv or self.csv_path.is_file():
            columns, rows = _read_csv(self.csv_path)
            position = _matching_row(rows, index, image_cell, self.csv_path)
        else:
            columns, rows, position = list(self.columns), [dict(r) for r in self.rows], index
        cell = rows[position].get("prompt", "")
        if not cell or not cell.lower().endswith((".png", ".npy")):
            cell = self.default_prompt_path(index)
        target = inside_root(self.root, cell)
        atomic_write(target, lambda temporary: write_prompt(prompt, temporary))
        if "prompt" not in columns:
            columns.append("prompt")
        rows[position]["prompt"] = cell
        write_csv_atomically(self.csv_path, columns, rows)
        self.columns, self.rows, self.has_csv = columns, rows, True
        return target


def _matching_row(rows: list[dict[str, str]], index: int, image: str, path: Path) -> int:
    """The row of ``image`` in the CSV as read again: at ``index`` if unchanged, else the only
    row with that image."""
    if index < len(rows) and rows[index].get("image") == image:
        return index
    matches = [i for i, row in enumerate(rows) if row.get("image") == image]
    if len(matches) != 1:
        raise AnnotationError(
            f"{path} changed while the app had it open: {len(matches)} rows have the image "
            f"{image!r}; open the folder again"
        )
    return matches[0]
