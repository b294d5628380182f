"""``vapl crayon export|answer``: the annotation stages of the Yes-No baselines (CRAYON).

1. ``vapl crayon export --checkpoint BASELINE.ckpt --out DIR --config demo.yaml [overrides]``
   computes, with the original model on the training split (in order, without augmentation):
   each image's Grad-CAM of its label (ReLU, scaled to a maximum of 1) and, for each neuron
   (channel) of the last convolutional stage, its concept: the ``top_k`` training images where it
   fires most and the patch around its peak cell in each. Written to ``DIR``: ``maps.pt`` (what
   fine-tuning and the oracle read), ``answers_template.csv`` (every image and neuron "maybe", for
   annotators to edit) and, unless ``--no-pictures``, ``pictures/images/<row>_<id>.png`` (Grad-CAM
   overlays, listed with their ids in ``pictures/images.csv``) and ``pictures/neurons/<index>.png``
   (patch strips) for annotators to judge.
2. ``vapl crayon answer --export DIR --oracle [--threshold 0.5]`` answers from the data set's
   ground-truth explanations; ``vapl crayon answer --export DIR --from human.csv`` checks a human
   answers file against the export. Either writes ``DIR/answers.csv`` (or ``--out``).
3. Fine-tuning is ``vapl fit`` with a CRAYON overlay (see docs/method.md).

Arguments that this command does not know (``--config``, ``--data.init_args...``) build the data
and the model exactly as ``vapl fit`` would, with the Baseline as the model class.
"""

from __future__ import annotations

import argparse
import csv
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from datamodules.transforms import JointRandomFlip
from vapl.core.backbones import Classifier
from vapl.core.figures import gray_image
from vapl.core.progress import progress
from vapl.core.saliency import feature_stride, grad_cam_from_features, upsample_cam
from vapl.core.yesno import (
    MAYBE,
    AnswerError,
    Answers,
    map_overlap,
    oracle_answers,
    patch_box,
    patch_overlap,
    peak_cells,
    read_answers,
    scale_to_max,
    write_answers,
)
from vapl.methods.crayon import MAPS_FILE, load_classifier_state
from vapl.training.help import plain_text

ANSWERS_FILE = "answers.csv"
TEMPLATE_FILE = "answers_template.csv"
BASELINE_OVERLAY = "methods/baseline.yaml"


def _with_baseline(cli_args: list[str]) -> list[str]:
    """``cli_args`` with the Baseline overlay after the last ``--config`` (before the overrides)."""
    last = -1
    for i, arg in enumerate(cli_args):
        if arg in ("--config", "-c"):
            last = i + 1
        elif arg.startswith("--config="):
            last = i
    at = last + 1
    return [*cli_args[:at], "--config", BASELINE_OVERLAY, *cli_args[at:]]


def _overlay(image: torch.Tensor, cam: torch.Tensor) -> Image.Image:
    """The image in gray with the (upsampled) Grad-CAM in red."""
    gray = gray_image(image)
    heat = upsample_cam(cam[None], gray.shape)[0].clamp(0, 1).numpy()
    rgb = np.stack([gray * (1 - heat) + heat, gray * (1 - heat), gray * (1 - heat)], axis=-1)
    return Image.fromarray((rgb * 255).astype(np.uint8))


def label_grad_cams(
    classifier: Classifier, images: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The maps an annotator judges and fine-tuning stores: each image's Grad-CAM of class
    ``labels[b]`` on the last stage, ReLU and scaled to a maximum of 1, [B, h, w]; and the feature
    map [B, C, h, w] (both detached). The app's yes/no tab shows the same maps."""
    with torch.enable_grad():
        feature_map = classifier.body(images).detach().requires_grad_(True)
        logits = classifier.fc(classifier.pool(feature_map))
        raw = grad_cam_from_features(feature_map, logits, labels, create_graph=False)
    return scale_to_max(raw.detach()), feature_map.detach()


def export(
    checkpoint: str,
    out: str | Path,
    cli_args: list[str],
    top_k: int = 20,
    patch_size: int | None = None,
    pictures: bool = True,
) -> Path:
    """Stage 1; returns the path of ``maps.pt``."""
    from vapl.training.cli import build_cli

    cli = build_cli(_with_baseline(cli_args), run=False)
    classifier = cli.model.model
    load_classifier_state(classifier, checkpoint)
    classifier.eval()
    data = cli.datamodule
    data.setup("fit")
    dataset = data.datasets["train"]
    if isinstance(getattr(dataset, "transform", None), JointRandomFlip):
        dataset.transform = None  # the stored maps must match the images as fine-tuning sees them
    loader = DataLoader(dataset, batch_size=data.batch_size, shuffle=False)

    ids: list[str] = []
    labels, maps, explanations, peaks, cells = [], [], [], [], []
    for batch in progress(loader, desc="Grad-CAMs and concepts"):
        stored, feature_map = label_grad_cams(classifier, batch["image"], batch["label"])
        maps.append(stored)
        values, where = peak_cells(feature_map)
        peaks.append(values)
        cells.append(where)
        ids += list(batch["id"])
        labels.append(batch["label"])
        if batch.get("explanation") is not None:
            explanations.append(batch["explanation"])

    peak_values, peak_where = torch.cat(peaks), torch.cat(cells)  # [N, C], [N, C, 2]
    k = min(top_k, len(ids))
    concept_activations, concept_images = peak_values.T.topk(k, dim=1)  # [C, k]
    channels = torch.arange(peak_values.shape[1])[:, None]
    concept_cells = peak_where[concept_images, channels]  # [C, k, 2]
    image_size = tuple(dataset[0]["image"].shape[-2:])
    stride = feature_stride(classifier, cli.model.hparams.in_channels)
    size = patch_size or 2 * stride
    concept_boxes = torch.tensor(
        [[patch_box(cell, stride, size, image_size) for cell in row] for row in concept_cells]
    )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    export_data = {
        "ids": ids,
        "labels": torch.cat(labels),
        "maps": torch.cat(maps),
        "explanations": torch.cat(explanations) if len(explanations) == len(labels) else None,
        "image_size": list(image_size),
        "stride": stride,
        "concept_images": concept_images,
        "concept_cells": concept_cells,
        "concept_boxes": concept_boxes,
        "concept_activations": concept_activations,
    }
    torch.save(export_data, out / MAPS_FILE)
    template = Answers(
        images=dict.fromkeys(ids, MAYBE), neurons=dict.fromkeys(range(len(concept_boxes)), MAYBE)
    )
    write_answers(out / TEMPLATE_FILE, template)
    if pictures:
        _write_pictures(out / "pictures", dataset, export_data)
    print(f"exported {len(ids)} Grad-CAMs and {len(concept_boxes)} neuron concepts to {out}")
    return out / MAPS_FILE


def _write_pictures(folder: Path, dataset, export_data: dict) -> None:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "neurons").mkdir(parents=True, exist_ok=True)
    with (folder / "images.csv").open("w", newline="") as handle:
        index = csv.writer(handle)
        index.writerow(("file", "id", "label"))
        for row, key in enumerate(progress(export_data["ids"], desc="Grad-CAM pictures")):
            name = f"{row:05d}_{re.sub(r'[^A-Za-z0-9._-]+', '_', key)[-60:]}.png"
            _overlay(dataset[row]["image"], export_data["maps"][row]).save(folder / "images" / name)
            index.writerow((f"images/{name}", key, int(export_data["labels"][row])))
    boxes, images = export_data["concept_boxes"], export_data["concept_images"]
    for neuron in progress(range(len(boxes)), desc="concept pictures"):
        patches = []
        for index, (top, left, bottom, right) in zip(images[neuron], boxes[neuron].tolist()):
            patches.append(gray_image(dataset[int(index)]["image"])[top:bottom, left:right])
        strip = np.concatenate([np.pad(p, 1, constant_values=1.0) for p in patches], axis=1)
        Image.fromarray((strip * 255).astype(np.uint8)).save(
            folder / "neurons" / f"{neuron:04d}.png"
        )


def oracle(export_data: dict, threshold: float, neuron_threshold: float | None = None) -> Answers:
    """Answers from the ground-truth explanations: an image is "yes" when at least ``threshold`` of
    its stored Grad-CAM's mass lies inside the explanation ("maybe" when the explanation is empty);
    a neuron is "yes" when its concept patches lie inside the explanation by at least
    ``neuron_threshold`` (default ``threshold``) on average, else "no"."""
    explanations = export_data.get("explanations")
    if explanations is None:
        raise AnswerError(
            "the exported data set has no ground-truth explanations: the oracle cannot answer; "
            "give a human answers file with --from"
        )
    image_codes = oracle_answers(map_overlap(export_data["maps"], explanations), threshold)
    boxes, images = export_data["concept_boxes"], export_data["concept_images"]
    neuron_scores = torch.tensor(
        [
            float(np.mean([patch_overlap(explanations[int(i)], b) for i, b in zip(im, bx)]))
            for im, bx in zip(images, boxes.tolist())
        ]
    )
    limit = threshold if neuron_threshold is None else neuron_threshold
    neuron_codes = oracle_answers(neuron_scores, limit)
    return Answers(
        images={key: int(code) for key, code in zip(export_data["ids"], image_codes)},
        neurons={index: int(code) for index, code in enumerate(neuron_codes)},
    )


def answer(
    export_dir: str | Path,
    out: str | Path | None = None,
    use_oracle: bool = False,
    threshold: float = 0.5,
    neuron_threshold: float | None = None,
    human: str | Path | None = None,
) -> Path:
    """Stage 2; returns the path of the answers CSV."""
    export_dir = Path(export_dir)
    export_data = torch.load(export_dir / MAPS_FILE, map_location="cpu", weights_only=True)
    if use_oracle == (human is not None):
        raise SystemExit("vapl crayon answer: give exactly one of --oracle and --from FILE")
    if use_oracle:
        answers = oracle(export_data, threshold, neuron_threshold)
    else:
        answers = read_answers(human, export_data["ids"], len(export_data["concept_boxes"]))
    target = Path(out) if out is not None else export_dir / ANSWERS_FILE
    write_answers(target, answers)
    images, neurons = answers.counts("image"), answers.counts("neuron")
    print(f"images: {images}; neurons: {neurons}; written to {target}")
    return target


def main(args: Sequence[str] | None = None) -> None:
    """``vapl crayon export ...`` / ``vapl crayon answer ...`` (``-h`` for the options)."""
    parser = argparse.ArgumentParser(
        prog="vapl crayon", description=plain_text(__doc__.split("\n")[0])
    )
    stages = parser.add_subparsers(dest="stage", required=True)
    ex = stages.add_parser("export", help="stage 1: Grad-CAMs and neuron concepts to judge")
    ex.add_argument("--checkpoint", required=True, help="the original (Baseline) model")
    ex.add_argument("--out", required=True, help="folder to write maps.pt and pictures to")
    ex.add_argument("--top-k", type=int, default=20, help="images per neuron concept")
    ex.add_argument("--patch-size", type=int, default=None, help="default: 2 feature cells")
    ex.add_argument("--no-pictures", action="store_true", help="skip the PNGs for annotators")
    an = stages.add_parser("answer", help="stage 2: answers from the oracle or a human file")
    an.add_argument("--export", required=True, help="the folder written by export")
    an.add_argument("--out", default=None, help=f"default: EXPORT/{ANSWERS_FILE}")
    an.add_argument("--oracle", action="store_true", help="answer from the explanations")
    an.add_argument("--threshold", type=float, default=0.5, help="oracle: image overlap for yes")
    an.add_argument("--neuron-threshold", type=float, default=None, help="default: --threshold")
    an.add_argument("--from", dest="human", default=None, help="a human answers CSV to import")
    parsed, rest = parser.parse_known_args(list(args) if args is not None else None)
    try:
        if parsed.stage == "export":
            export(
                parsed.checkpoint,
                parsed.out,
                rest,
                top_k=parsed.top_k,
                patch_size=parsed.patch_size,
                pictures=not parsed.no_pictures,
            )
            return
        if rest:
            parser.error(f"unknown arguments for answer: {' '.join(rest)}")
        answer(
            parsed.export,
            parsed.out,
            parsed.oracle,
            parsed.threshold,
            parsed.neuron_threshold,
            parsed.human,
        )
    except AnswerError as error:
        raise SystemExit(f"vapl crayon: {error}") from None
