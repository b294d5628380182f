"""The Predict tab's work, without a browser: load a model, open a scan, predict on a drawing,
export the prompt and the result.

Prediction goes through :func:`vapl.apps.predict_image.predict_scan`, the function behind
``vapl predict-image``, on the image as :func:`vapl.apps.scan_io.read_scan_info` reads it and the
prompt :func:`vapl.apps.app.drawing.prompt_from_layers` draws at the image's size. The exported
prompt is that prompt in the folder format's gray code; ``vapl predict-image`` reads it back
unchanged, so the command line gives the same probabilities (:func:`command_line` spells it out).
"""

from __future__ import annotations

import json
import shlex
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vapl.apps.app.drawing import has_marks, prompt_from_layers
from vapl.apps.model_files import load_method, takes_prompts
from vapl.apps.predict_image import PromptedPrediction, predict_scan
from vapl.apps.scan_io import ScanInfo, read_scan_info
from vapl.core.errors import UserInputError
from vapl.core.figures import refined_tile, sample_tiles, tile_strip
from vapl.core.prompt_files import write_prompt
from vapl.core.prompts import empty_prompt
from vapl.methods.base import MethodModule

#: Methods whose prediction ignores a prompt get this sentence in the app (and the JSON).
NO_PROMPT_METHODS = "the Baseline, the CAM family, CRAYON and Learning to Look"


class AppInputError(UserInputError, ValueError):
    """Something missing or wrong in what the user gave the app; the message says what."""


@dataclass
class LoadedModel:
    """A checkpoint loaded for prediction."""

    path: Path
    model: MethodModule
    data_settings: dict

    @property
    def name(self) -> str:
        return type(self.model).__name__

    @property
    def takes_prompts(self) -> bool:
        return takes_prompts(self.model)

    @property
    def channels(self) -> int:
        return int(self.model.hparams.in_channels)

    def describe(self) -> str:
        """One line for the page: the method, its classes and whether it uses prompts."""
        classes = self.data_settings.get("classes")
        size = self.data_settings.get("image_size")
        parts = [f"**{self.name}** from `{self.path}`"]
        if size is not None:
            parts.append(f"trained on {size} px images")
        if classes:
            parts.append(f"classes {', '.join(map(str, classes))}")
        text = ", ".join(parts) + "."
        if not self.takes_prompts:
            text += (
                f" This model ignores prompts ({NO_PROMPT_METHODS} predict from the image alone):"
                " its prediction is the same with and without a drawing."
            )
        return text


_MODELS: OrderedDict[tuple[str, float], LoadedModel] = OrderedDict()


def load_model(path: str | Path, keep: int = 2) -> LoadedModel:
    """The checkpoint at ``path`` loaded once per change of the file (the ``keep`` newest are kept
    in memory). Errors are :class:`~vapl.apps.model_files.CheckpointError`."""
    text = str(path or "").strip()
    if not text:
        raise AppInputError("no checkpoint given: type the path of a .ckpt file or upload one")
    checkpoint = Path(text).expanduser()
    key = (str(checkpoint.resolve()), checkpoint.stat().st_mtime if checkpoint.is_file() else 0.0)
    if key not in _MODELS:
        model, data_settings = load_method(checkpoint)
        _MODELS[key] = LoadedModel(checkpoint, model, data_settings)
        while len(_MODELS) > keep:
            _MODELS.popitem(last=False)
    _MODELS.move_to_end(key)
    return _MODELS[key]


def open_scan(
    path: str | Path,
    channels: int = 1,
    window: tuple[float, float] | None = None,
    slice_index: int | None = None,
) -> ScanInfo:
    """The image at ``path`` (file or DICOM series folder) as ``vapl predict-image`` reads it."""
    text = str(path or "").strip()
    if not text:
        raise AppInputError("no image given: type the path of an image, volume or series folder")
    return read_scan_info(Path(text).expanduser(), channels, window, slice_index)


def parse_floats(text: str | None, name: str) -> float | list[float] | None:
    """``"0.4"`` -> 0.4, ``"0.4 0.5 0.6"`` -> a list, blank -> ``None`` (the checkpoint's)."""
    words = str(text or "").replace(",", " ").split()
    if not words:
        return None
    try:
        values = [float(word) for word in words]
    except ValueError:
        raise AppInputError(f"{name}: {text!r} is not a number or a list of numbers") from None
    return values[0] if len(values) == 1 else values


def parse_names(text: str | None) -> list[str] | None:
    """Class names, one per comma (blank -> ``None``: the checkpoint's)."""
    names = [name.strip() for name in str(text or "").split(",") if name.strip()]
    return names or None


def predict_drawing(
    loaded: LoadedModel,
    scan: ScanInfo,
    layers: Sequence[np.ndarray] | None,
    class_names: list[str] | None = None,
    **preprocessing: Any,
) -> tuple[PromptedPrediction, torch.Tensor | None]:
    """Predict on ``scan`` with the prompt drawn on ``layers``; returns the result and the prompt
    at the image's size (``None`` when nothing was drawn, or nothing red or yellow)."""
    if scan.image.shape[0] != loaded.channels:
        raise AppInputError(
            f"the image was opened with {scan.image.shape[0]} channels but {loaded.name} takes "
            f"{loaded.channels}: open the image again after loading the model"
        )
    prompt = prompt_from_layers(layers, scan.image.shape[-2:])
    notes = []
    if prompt is not None and not has_marks(prompt):
        notes.append("the drawing marks no pixel red or yellow: predicted without a prompt")
        prompt = None
    result = predict_scan(
        loaded.model,
        loaded.data_settings,
        scan.image,
        prompt,
        class_names,
        notes,
        **preprocessing,
    )
    return result, prompt


def probabilities(result: PromptedPrediction, prompted: bool) -> dict[str, float] | None:
    """``class -> probability`` of one head (for a label widget); ``None`` where there is none."""
    summary = result.as_dict()["with_prompt" if prompted else "without_prompt"]
    return None if summary is None else dict(summary["probabilities"])


def summary_text(result: PromptedPrediction) -> str:
    """Both predictions and the warnings in words."""
    summary = result.as_dict()
    lines = []
    for key, words in (("with_prompt", "With the prompt"), ("without_prompt", "Without it")):
        head = summary[key]
        if head is not None:
            share = head["probabilities"][head["class"]]
            lines.append(f"{words}: **{head['class']}** ({share:.3f})")
    if summary["prompt_given"] and summary["with_prompt"] is None and not result.takes_prompts:
        lines.append(f"{result.model_name} gives one prediction: the prompt is not used.")
    lines += [f"Note: {warning}" for warning in summary["warnings"]]
    return "  \n".join(lines)


def result_pictures(
    result: PromptedPrediction, min_size: int = 256
) -> list[tuple[np.ndarray, str]]:
    """The result's tiles (image, prompt, refined prompt, a Grad-CAM per head) as (uint8 RGB
    picture, title), each enlarged to at least ``min_size`` pixels, drawn by
    :mod:`vapl.core.figures` as in ``--figure``."""
    prompt = result.prompt if result.has_prompt else empty_prompt(*result.image.shape[-2:])
    tiles = sample_tiles(result.image, prompt, result.refined_prompt, result.cams)
    return [(tile_strip([(title, tile)], min_size), title) for title, tile in tiles]


def colour_bar(width: int = 256, height: int = 14) -> np.ndarray:
    """uint8 RGB [height, width, 3]: the refined prompt's colours from 0 (left) to 1 (right), as
    :func:`vapl.core.figures.refined_tile` draws them (white: removed, dark blue: kept)."""
    ramp = torch.linspace(0, 1, width)[None].repeat(height, 1)
    return (np.clip(refined_tile(ramp), 0, 1) * 255).round().astype(np.uint8)


def file_stem(scan: ScanInfo) -> str:
    """A name for exports: the file's stem (a series: the folder's), and the slice of a volume."""
    name = scan.path.name
    for suffix in (".nii.gz", ".nii", ".dcm", ".png", ".jpg", ".jpeg", ".npy"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return f"{name}_slice{scan.slice_index:03d}" if scan.slices > 1 else name


def export_prompt(prompt: torch.Tensor | None, folder: str | Path, stem: str) -> Path:
    """Write the prompt (image size) as the folder format's gray-code PNG ``stem_prompt.png``."""
    if not has_marks(prompt):
        raise AppInputError("nothing to save: draw a prompt (red or yellow) on the image first")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return write_prompt(prompt, folder / f"{stem}_prompt.png")


def export_result(result: PromptedPrediction, folder: str | Path, stem: str) -> Path:
    """Write the JSON that ``vapl predict-image --json`` writes, as ``stem_prediction.json``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}_prediction.json"
    path.write_text(json.dumps(result.as_dict(), indent=2) + "\n")
    return path


def command_line(
    checkpoint: str | Path,
    scan: ScanInfo,
    prompt_path: str | Path | None = None,
    class_names: list[str] | None = None,
    mean: float | list[float] | None = None,
    std: float | list[float] | None = None,
) -> str:
    """The ``vapl predict-image`` command that gives the same prediction."""
    words = ["vapl", "predict-image", "--checkpoint", str(checkpoint), "--image", str(scan.path)]
    if prompt_path is not None:
        words += ["--prompt", str(prompt_path)]
    if scan.slices > 1:
        words += ["--slice", str(scan.slice_index)]
    if scan.window is not None and scan.kind != "image":
        words += ["--window", *(repr(float(value)) for value in scan.window)]
    for flag, value in (("--mean", mean), ("--std", std)):
        if value is not None:
            values = value if isinstance(value, list) else [value]
            words += [flag, *(repr(float(v)) for v in values)]
    if class_names:
        words += ["--classes", *class_names]
    return " ".join(shlex.quote(word) for word in words)
