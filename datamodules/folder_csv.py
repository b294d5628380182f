"""labels.csv as text: reading it, turning its labels into class indices, reporting bad rows.

Text only, no image is opened here: :class:`datamodules.FolderDataModule` reads the CSV in
``__init__``, where the class count must be known before the CLI builds the model.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vapl.core.errors import UserInputError

LABELS_FILE = "labels.csv"
REQUIRED_COLUMNS = ("image", "label", "split")
OPTIONAL_COLUMNS = ("prompt", "explanation")


@dataclass(frozen=True)
class RowProblem:
    """One reason a CSV row cannot be used. ``line`` is the CSV line (the header is line 1)."""

    line: int
    path: str
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.path or '(no path)'}: {self.reason}"


class FolderDataError(UserInputError, ValueError):
    """A folder data set that cannot be used; ``problems`` lists every bad row."""

    def __init__(self, message: str, problems: Sequence[RowProblem] = ()) -> None:
        self.problems = list(problems)
        if self.problems:
            lines = "\n".join(f"  {problem}" for problem in self.problems)
            message = f"{message}\n{lines}"
        super().__init__(message)


@dataclass(frozen=True)
class CsvRow:
    """One row of labels.csv as text, stripped of surrounding spaces ('' where a cell is empty)."""

    line: int
    image: str
    label: str
    split: str
    prompt: str = ""
    explanation: str = ""


def read_labels_csv(csv_path: Path) -> list[CsvRow]:
    """Read labels.csv; raise :class:`FolderDataError` if it is missing, empty or lacks a column."""
    if not csv_path.is_file():
        raise FolderDataError(
            f"{csv_path}: no such file. A folder data set needs {LABELS_FILE} in its root with "
            f"the columns {', '.join(REQUIRED_COLUMNS)} (and optionally "
            f"{', '.join(OPTIONAL_COLUMNS)})"
        )
    rows = []
    with csv_path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [name.strip() for name in reader.fieldnames or []]
        missing = [name for name in REQUIRED_COLUMNS if name not in columns]
        if missing:
            raise FolderDataError(
                f"{csv_path}: missing column(s) {', '.join(missing)}; the header has "
                f"{', '.join(columns) or 'no columns'} (required: {', '.join(REQUIRED_COLUMNS)})"
            )
        reader.fieldnames = columns
        for record in reader:
            cells = {key: (value or "").strip() for key, value in record.items() if key}
            rows.append(
                CsvRow(
                    line=reader.line_num,
                    **{name: cells.get(name, "") for name in REQUIRED_COLUMNS + OPTIONAL_COLUMNS},
                )
            )
    if not rows:
        raise FolderDataError(f"{csv_path}: the file has a header but no rows")
    return rows


def _as_index(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def resolve_labels(
    cells: Sequence[str], classes: Sequence[str] | None = None
) -> tuple[list[str], list[int | str]]:
    """Turn label cells into class indices.

    Returns ``(class_names, results)``: ``results[i]`` is the class index of ``cells[i]``, or a
    string saying why that cell is not a usable label.

    * ``classes`` given: every label must be one of these names; the index is its position.
    * Otherwise, if most labels are integers they are class indices (0 .. K - 1, K = largest + 1),
      else they are class names, numbered in sorted order. Labels of the minority kind are errors.
    """
    if classes is not None:
        lookup = {name: index for index, name in enumerate(classes)}
        results: list[int | str] = [
            lookup[cell] if cell in lookup else f"label {cell!r} is not one of {list(classes)}"
            for cell in cells
        ]
        return list(classes), results
    filled = [cell for cell in cells if cell]
    n_integers = sum(_as_index(cell) is not None for cell in filled)
    use_indices = n_integers > len(filled) - n_integers
    errors: dict[int, str] = {}
    for row, cell in enumerate(cells):
        index = _as_index(cell)
        if not cell:
            errors[row] = "empty label"
        elif use_indices and index is None:
            errors[row] = f"label {cell!r} is a name, but most labels are integer class indices"
        elif use_indices and index < 0:
            errors[row] = f"label {cell} is negative; class indices start at 0"
        elif not use_indices and index is not None:
            errors[row] = (
                f"label {cell!r} is an integer, but most labels are class names "
                "(pass `classes` to use it as a name)"
            )
    valid = [cell for row, cell in enumerate(cells) if row not in errors]
    if use_indices:
        names = [str(k) for k in range(max((int(cell) for cell in valid), default=-1) + 1)]
    else:
        names = sorted(set(valid))
    lookup = {name: index for index, name in enumerate(names)}
    results: list[int | str] = [
        errors[row] if row in errors else int(cell) if use_indices else lookup[cell]
        for row, cell in enumerate(cells)
    ]
    return names, results
