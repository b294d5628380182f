"""``vapl predict-image``: a trained checkpoint, one image and a drawn prompt -> predictions.

    vapl predict-image --checkpoint model.ckpt --image scan.dcm --prompt drawn.png --figure out.png

gives the prediction with the prompt (VAPL's prompted model on the refined prompt) and without it
(the unprompted model), a JSON summary (``--json``), and a picture of the image, the prompt
(indispensable red, precluded yellow), the refined prompt and each model's Grad-CAM. Without
``--prompt`` both predictions are the unprompted one. Methods that do not take prompts at
prediction time (the Baseline, the CAM and Yes-No families, Learning to Look) give their single
prediction, and the JSON's ``warnings`` say that the prompt was ignored; a prompt file with no
indispensable or precluded pixel counts as no prompt, with a warning. The browser app
(``vapl app``) predicts through the same functions.

Images: DICOM file or series folder, NIfTI (one slice), PNG, JPEG or NPY (:mod:`vapl.apps.scan_io`). The image is prepared
as the model's training data was: scaled to [0, 1] (DICOM/NIfTI through ``--window``), resized to
the training ``image_size`` and normalised by ``(x - mean) / std``. ``image_size``, ``mean`` and
``std`` come from the checkpoint's data settings when it has them (FolderDataModule), else from
the flags. ``--save-image copy.png`` writes the image as read, to draw a prompt on in any paint
program: red where the model must look, yellow where it must not (see docs/platform.md).

From Python::

    from vapl.apps.predict_image import load_method, predict_files
    result = predict_files("model.ckpt", "scan.dcm", "drawn.png")
    result.prompted_probs, result.unprompted_probs, result.refined_prompt
    result.save_figure("out.png")
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vapl.apps.model_files import (  # noqa: F401  (load_method is this module's API too)
    CheckpointError,
    NotACheckpointError,
    UnknownModelError,
    ignores_prompt_message,
    load_method,
    takes_prompts,
)
from vapl.apps.scan_io import read_scan, read_scan_info, write_dicom
from vapl.core.figures import PanelRow, grad_cam_maps, panel_networks, save_panel_figure
from vapl.core.prompt_files import EmptyPromptWarning, read_prompt
from vapl.core.prompts import empty_prompt, resize_prompt
from vapl.methods.base import MethodModule
from vapl.training.help import PlainDescriptionFormatter

#: Where ``--demo-case`` writes when no folder is given (``runs/`` is git-ignored).
DEMO_CASE_FOLDER = Path("runs") / "demo_case"


@dataclass
class Preprocessing:
    """How an image in [0, 1] becomes a model input: resize, then ``(x - mean) / std``."""

    image_size: tuple[int, int] | None = None
    mean: float | list[float] = 0.5
    std: float | list[float] = 0.5

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        from datamodules.image_files import resize_bilinear

        if self.image_size is not None:
            image = resize_bilinear(image, self.image_size)
        mean = torch.as_tensor(self.mean, dtype=image.dtype).reshape(-1, 1, 1)
        std = torch.as_tensor(self.std, dtype=image.dtype).reshape(-1, 1, 1)
        return (image - mean) / std


def preprocessing_from(data_settings: dict, **overrides: Any) -> Preprocessing:
    """Preprocessing from a checkpoint's data settings; ``overrides`` that are not None win."""
    settings = {k: data_settings[k] for k in ("image_size", "mean", "std") if k in data_settings}
    settings.update({k: v for k, v in overrides.items() if v is not None})
    size = settings.get("image_size")
    if isinstance(size, int):
        size = (size, size)
    return Preprocessing(
        image_size=tuple(size) if size is not None else None,
        mean=settings.get("mean", 0.5),
        std=settings.get("std", 0.5),
    )


@dataclass
class PromptedPrediction:
    """Class probabilities with and without the prompt, the refined prompt and the pictures."""

    class_names: list[str]
    unprompted_probs: torch.Tensor
    prompted_probs: torch.Tensor | None
    refined_prompt: torch.Tensor | None
    image: torch.Tensor
    prompt: torch.Tensor
    has_prompt: bool
    cams: dict[str, torch.Tensor] = field(default_factory=dict)
    model_name: str = ""
    takes_prompts: bool = True
    warnings: list[str] = field(default_factory=list)

    def _summary(self, probs: torch.Tensor | None) -> dict[str, Any] | None:
        if probs is None:
            return None
        index = int(probs.argmax())
        return {
            "class": self.class_names[index],
            "index": index,
            "probabilities": {n: round(float(p), 6) for n, p in zip(self.class_names, probs)},
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model_name,
            "with_prompt": self._summary(self.prompted_probs),
            "without_prompt": self._summary(self.unprompted_probs),
            "prompt_given": self.has_prompt,
            "takes_prompts": self.takes_prompts,
            "warnings": list(self.warnings),
        }

    def save_figure(self, path: str | Path) -> Path:
        row = PanelRow(self.image, self.prompt, self.refined_prompt, self.cams)
        parts = []
        for name, probs in (
            ("with prompt", self.prompted_probs),
            ("without", self.unprompted_probs),
        ):
            if probs is not None:
                index = int(probs.argmax())
                parts.append(f"{name}: {self.class_names[index]} ({float(probs[index]):.2f})")
        return save_panel_figure(path, [row], title=" | ".join(parts))


def predict_image(
    model: MethodModule,
    image: torch.Tensor,
    prompt: torch.Tensor | None = None,
    class_names: list[str] | None = None,
    grad_cam: bool = True,
) -> PromptedPrediction:
    """Predict one model-ready image [C, H, W] with and without ``prompt`` [H, W] (same size).

    The label is never needed. VAPL: ``predict_both``; other methods: ``model(image)``."""
    model.eval()
    device = model.device
    has_prompt = prompt is not None
    prompt = empty_prompt(*image.shape[-2:]) if prompt is None else prompt
    batch = {
        "image": image[None].to(device),
        "prompt": prompt[None].to(device),
        "has_prompt": torch.tensor([has_prompt], device=device),
        "id": ["image"],
    }
    with torch.no_grad():
        if hasattr(model, "predict_both"):
            out = model.predict_both(batch)
            refined = out["refined_prompt"] if has_prompt else None
            prompted, unprompted = out["prompted_probs"][0], out["unprompted_probs"][0]
        else:
            refined, prompted = None, None
            unprompted = torch.softmax(model(batch["image"]), dim=1)[0]
    cams = {}
    if grad_cam:
        for name, (network, images) in panel_networks(model, batch, refined).items():
            cams[name] = grad_cam_maps(network, images)[0].cpu()
    names = class_names or [f"class {i}" for i in range(len(unprompted))]
    notes = [] if takes_prompts(model) or not has_prompt else [ignores_prompt_message(model)]
    return PromptedPrediction(
        class_names=list(names),
        unprompted_probs=unprompted.cpu(),
        prompted_probs=prompted.cpu() if prompted is not None and has_prompt else None,
        refined_prompt=None if refined is None else refined[0].cpu(),
        image=image.cpu(),
        prompt=prompt.cpu(),
        has_prompt=has_prompt,
        cams=cams,
        model_name=type(model).__name__,
        takes_prompts=takes_prompts(model),
        warnings=notes,
    )


def read_prompt_noting_empty(
    path: str | Path, shape: tuple[int, int], kind: str = "auto"
) -> tuple[torch.Tensor | None, list[str]]:
    """:func:`read_prompt`, except that a prompt that says nothing (no indispensable and no
    precluded pixel) is ``None``, with the reader's warning returned as a note."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", EmptyPromptWarning)
        prompt = read_prompt(path, shape, kind=kind)
    notes = []
    for warning in caught:
        if issubclass(warning.category, EmptyPromptWarning):
            notes.append(f"{warning.message}: predicted without a prompt")
        else:
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )
    return (None if notes else prompt), notes


def predict_scan(
    model: MethodModule,
    data_settings: dict,
    image: torch.Tensor,
    prompt: torch.Tensor | None = None,
    class_names: list[str] | None = None,
    notes: list[str] | None = None,
    grad_cam: bool = True,
    **preprocessing: Any,
) -> PromptedPrediction:
    """:func:`predict_image` on an image as read (float32 [C, H, W] in [0, 1]) and a prompt at
    the image's size: the image is prepared as in training (:func:`preprocessing_from`), the
    prompt resized to it by nearest neighbour. ``notes`` are added to the result's warnings.

    ``vapl predict-image`` (:func:`predict_files`) and the browser app both predict through here.
    """
    prepare = preprocessing_from(data_settings, **preprocessing)
    model_image = prepare(image)
    if prompt is not None:
        prompt = resize_prompt(prompt, tuple(model_image.shape[-2:]))
    names = class_names or data_settings.get("classes")
    result = predict_image(model, model_image, prompt, names, grad_cam)
    result.warnings[:0] = list(notes or [])
    return result


def predict_files(
    checkpoint: str | Path,
    image_path: str | Path,
    prompt_path: str | Path | None = None,
    window: tuple[float, float] | None = None,
    slice_index: int | None = None,
    prompt_kind: str = "auto",
    class_names: list[str] | None = None,
    **preprocessing: Any,
) -> PromptedPrediction:
    """:func:`predict_scan` from files; ``preprocessing``: ``image_size``, ``mean``, ``std``."""
    model, data_settings = load_method(checkpoint)
    image = read_scan_info(image_path, model.hparams.in_channels, window, slice_index).image
    prompt, notes = None, []
    if prompt_path is not None:
        prompt, notes = read_prompt_noting_empty(prompt_path, tuple(image.shape[-2:]), prompt_kind)
    return predict_scan(model, data_settings, image, prompt, class_names, notes, **preprocessing)


def write_demo_case(folder: str | Path, image_size: int = 48, seed: int = 0) -> dict[str, Path]:
    """A demo test image (positive, with a lesion) as DICOM and PNG, its prompt drawn in red and
    yellow on a copy of the image (as in a paint program), and the same prompt as NPY.

    Demo image values ``x`` (about -2 .. 3) are stored as ``HU = 1000 x`` with the window
    (500, 5000), so the [0, 1] image is ``(x + 2) / 5`` and ``--mean 0.4 --std 0.2`` gives back ``x``.
    """
    from PIL import Image

    from datamodules.synthetic import make_synthetic_split
    from vapl.core.prompts import INDISPENSABLE, PRECLUDED

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    split = make_synthetic_split(8, image_size=image_size, shortcut=None, seed=seed + 2)
    index = int(torch.nonzero(split.labels == 1)[0])
    values = split.images[index, 0].numpy()
    unit = np.clip((values + 2.0) / 5.0, 0, 1)
    gray = (unit * 255).round().astype(np.uint8)
    drawn = np.repeat(gray[..., None], 3, axis=2)
    prompt = split.prompts[index].numpy()
    drawn[prompt == INDISPENSABLE] = (255, 0, 0)
    drawn[prompt == PRECLUDED] = (255, 255, 0)
    paths = {
        "dicom": write_dicom(folder / "scan.dcm", np.round(values * 1000), window=(500.0, 5000.0)),
        "png": folder / "scan.png",
        "drawn_prompt": folder / "prompt_drawn.png",
        "npy_prompt": folder / "prompt.npy",
    }
    Image.fromarray(gray).save(paths["png"])
    Image.fromarray(drawn).save(paths["drawn_prompt"])
    np.save(paths["npy_prompt"], prompt.astype(np.float32))
    return paths


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vapl predict-image",
        description=__doc__,
        formatter_class=PlainDescriptionFormatter,
    )
    parser.add_argument("--checkpoint", help="a checkpoint written by vapl fit / fit-test")
    parser.add_argument("--image", help="DICOM, NIfTI, PNG, JPEG or NPY image")
    parser.add_argument(
        "--prompt", default=None, help="drawn PNG (red/yellow), grayscale PNG or NPY"
    )
    parser.add_argument("--prompt-kind", choices=("auto", "colour", "gray"), default="auto")
    parser.add_argument(
        "--slice", type=int, default=None, help="NIfTI/multi-frame slice (default: middle)"
    )
    parser.add_argument("--window", type=float, nargs=2, metavar=("CENTRE", "WIDTH"), default=None)
    parser.add_argument(
        "--image-size", type=int, nargs="+", default=None, help="H [W] (default: training size)"
    )
    parser.add_argument(
        "--mean", type=float, nargs="+", default=None, help="default: training data's, else 0.5"
    )
    parser.add_argument(
        "--std", type=float, nargs="+", default=None, help="default: training data's, else 0.5"
    )
    parser.add_argument("--classes", nargs="+", default=None, help="class names, in index order")
    parser.add_argument(
        "--figure",
        nargs="?",
        const=str(Path("runs") / "predict-image" / "prediction.png"),
        default=None,
        help="save the picture (PNG) there (no PATH: runs/predict-image/prediction.png)",
    )
    parser.add_argument(
        "--json",
        nargs="?",
        const=str(Path("runs") / "predict-image" / "prediction.json"),
        default=None,
        help="save the predictions as JSON (no PATH: runs/predict-image/prediction.json)",
    )
    parser.add_argument(
        "--save-image", default=None, help="write the image as read (PNG) to draw on"
    )
    parser.add_argument(
        "--demo-case",
        nargs="?",
        const=str(DEMO_CASE_FOLDER),
        default=None,
        metavar="FOLDER",
        help=f"write a demo image and drawn prompt to FOLDER (default {DEMO_CASE_FOLDER}), then stop",
    )
    return parser


def _one_or_list(values: list[float] | None) -> float | list[float] | None:
    return values if values is None or len(values) > 1 else values[0]


def main(argv: list[str] | None = None) -> None:
    options = _parser().parse_args(argv)
    if options.demo_case:
        paths = write_demo_case(options.demo_case)
        print("\n".join(f"{k}: {v}" for k, v in paths.items()))
        figure = Path(options.demo_case) / "prediction.png"
        print(
            f"Try: vapl predict-image --checkpoint CKPT --image {paths['dicom']} "
            f"--prompt {paths['drawn_prompt']} --mean 0.4 --std 0.2 --figure {figure}"
        )
        return
    if not options.checkpoint or not options.image:
        raise SystemExit("vapl predict-image: --checkpoint and --image are required")
    if options.save_image:
        from PIL import Image

        image = read_scan(
            options.image, 1, tuple(options.window) if options.window else None, options.slice
        )
        Image.fromarray((image[0].numpy() * 255).round().astype(np.uint8)).save(options.save_image)
        print(
            f"image as read: {options.save_image} (draw the prompt on a copy: red look, yellow ignore)"
        )
    size = options.image_size
    result = predict_files(
        options.checkpoint,
        options.image,
        options.prompt,
        window=tuple(options.window) if options.window else None,
        slice_index=options.slice,
        prompt_kind=options.prompt_kind,
        class_names=options.classes,
        image_size=None if size is None else (size[0], size[-1]),
        mean=_one_or_list(options.mean),
        std=_one_or_list(options.std),
    )
    summary = result.as_dict()
    print(json.dumps(summary, indent=2))
    for note in summary["warnings"]:
        print(f"warning: {note}", file=sys.stderr)
    if options.json:
        target = Path(options.json)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(summary, indent=2) + "\n")
    if options.figure:
        print(f"figure: {result.save_figure(options.figure)}")


if __name__ == "__main__":
    main()
