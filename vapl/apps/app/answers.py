"""The Yes/no tab's work, without a browser: CRAYON's image answers given one at a time.

The images are the training rows (``split`` = ``train``) of a folder data set, in the order of
``labels.csv``, with the row's image path as id (read where the row says, as training reads them;
this tab writes only the answers file): what ``vapl crayon export`` lists for that data
set, so ``vapl crayon answer --export DIR --from ANSWERS`` accepts the file. Each image is shown
with the map CRAYON stores for it (:func:`vapl.apps.crayon_annotation.label_grad_cams`: the
Grad-CAM of the label, of the predicted class where the row has no usable label) of the model in
the checkpoint (the unprompted network of VAPL).

Answers go to a CSV in the format :func:`vapl.core.yesno.read_answers` reads (``kind,key,answer``;
``image,<id>,yes|no|maybe``), one line appended per answer with a single ``write`` on a file
opened for appending, then flushed to disk: a crash loses at most the answer being written, and
never damages earlier lines. Skip writes ``maybe`` (the format's "no opinion"). Answering an image
again appends a new line; the last line of an id wins, as in ``read_answers``. Opening the file
again resumes at the first image without an answer.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from datamodules.folder_csv import LABELS_FILE, FolderDataError, read_labels_csv, resolve_labels
from vapl.apps.app.annotate import AnnotationError
from vapl.apps.app.predict import LoadedModel
from vapl.apps.crayon_annotation import label_grad_cams
from vapl.apps.predict_image import preprocessing_from
from vapl.apps.scan_io import read_scan
from vapl.core.figures import panel_networks, sample_tiles, tile_strip
from vapl.core.prompts import empty_prompt
from vapl.core.saliency import upsample_cam
from vapl.core.yesno import ANSWER_WORDS, CSV_HEADER, Answers, read_answers

ANSWERS_FILE = "crayon_answers.csv"


@dataclass(frozen=True)
class YesNoItem:
    """One training image to judge: its id (the CSV's image path), file and label index."""

    id: str
    path: Path
    label: int | None


def training_items(root: str | Path, classes: list[str] | None = None) -> list[YesNoItem]:
    """The training rows of ``root/labels.csv`` in file order (module docstring)."""
    text = str(root or "").strip()
    if not text:
        raise AnnotationError("no data set folder given: type the folder holding labels.csv")
    root = Path(text).expanduser()
    try:
        rows = read_labels_csv(root / LABELS_FILE)
    except FolderDataError as error:
        raise AnnotationError(str(error)) from error
    _, labels = resolve_labels([row.label for row in rows], classes)
    items = [
        YesNoItem(row.image, root / row.image, label if isinstance(label, int) else None)
        for row, label in zip(rows, labels)
        if row.split.lower() == "train" and row.image
    ]
    if not items:
        raise AnnotationError(f"{root / LABELS_FILE}: no row has split 'train'")
    return items


def load_answers(path: str | Path) -> Answers:
    """The answers given so far (none when the file does not exist yet)."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return Answers()
    return read_answers(path)


def append_answer(path: str | Path, image_id: str, word: str) -> Path:
    """Append ``image,<image_id>,<word>`` to the answers file (its header first when new)."""
    if word not in ANSWER_WORDS:
        raise ValueError(f"an answer is one of {', '.join(ANSWER_WORDS)}, not {word!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    fresh = not path.is_file() or path.stat().st_size == 0
    if fresh:
        writer.writerow(CSV_HEADER)
    writer.writerow(("image", image_id, word))
    line = text.getvalue()
    if not fresh:
        with path.open("rb") as handle:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":  # a last line without its end: start a new one
                line = "\n" + line
    handle = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(handle, line.encode("utf-8"))
        os.fsync(handle)
    finally:
        os.close(handle)
    return path


def first_unanswered(items: list[YesNoItem], answers: Answers, start: int = 0) -> int | None:
    """The first item at or after ``start`` (wrapping around) without an answer."""
    for step in range(len(items)):
        index = (start + step) % len(items)
        if items[index].id not in answers.images:
            return index
    return None


def item_pictures(
    loaded: LoadedModel, item: YesNoItem, min_size: int = 320, **preprocessing: object
) -> tuple[np.ndarray, np.ndarray, str]:
    """The image as the model sees it, the same with the stored Grad-CAM over it (uint8 RGB,
    enlarged to ``min_size``), and the class the map explains."""
    model = loaded.model
    image = read_scan(item.path, loaded.channels)
    prepared = preprocessing_from(loaded.data_settings, **preprocessing)(image)
    batch = {"image": prepared[None], "prompt": empty_prompt(*prepared.shape[-2:])[None]}
    network = panel_networks(model, batch, None)["unprompted"][0]
    network.eval()
    with torch.no_grad():
        predicted = int(network(batch["image"]).argmax(1))
    target = predicted if item.label is None else item.label
    stored, _ = label_grad_cams(network, batch["image"], torch.tensor([target]))
    cam = upsample_cam(stored, tuple(prepared.shape[-2:]))[0].clamp(0, 1)
    tiles = sample_tiles(
        prepared, batch["prompt"][0], None, {"stored": cam}
    )  # image first, map last
    names = loaded.data_settings.get("classes") or []
    name = names[target] if target < len(names) else f"class {target}"
    why = "its label" if item.label is not None else "the predicted class (no label)"
    return (
        tile_strip([tiles[0]], min_size),
        tile_strip([tiles[-1]], min_size),
        f"Grad-CAM of {name}, {why}",
    )
