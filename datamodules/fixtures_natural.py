"""Small generated trees in the formats of the natural-image and MNIST data sets, for tests and demos.

    python -m datamodules.fixtures_natural gender OUT_DIR    # RES layout, men / women
    python -m datamodules.fixtures_natural scene OUT_DIR     # RES layout, nature / urban
    python -m datamodules.fixtures_natural mnist OUT_DIR     # OUT_DIR/MNIST/raw/*-ubyte.gz

RES trees: each image shows one figure on a textured background, a box for class 0 and an ellipse
for class 1, in a random colour; the figure is the factual attention label and a distractor square
elsewhere is the counterfactual one. A share of the images is annotated; every annotated image also
gets a later row flagged ``bad`` with a different matrix, which readers must ignore.

MNIST trees: "digits" are seven-segment glyphs drawn with random size, slant, position, stroke width
and wobble, written as the four IDX files torchvision uses. The files never hold real MNIST.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from datamodules.idx import MNIST_FILES, write_idx

DIGIT_SIZE = 28
#: Side of the corner squares kept free of ink (the larger, CDEP, decoy square).
CORNER = 5
# Segments of a seven-segment glyph in a unit box (x right, y down).
SEGMENTS = {
    "a": ((0.0, 0.0), (1.0, 0.0)),
    "b": ((1.0, 0.0), (1.0, 0.5)),
    "c": ((1.0, 0.5), (1.0, 1.0)),
    "d": ((0.0, 1.0), (1.0, 1.0)),
    "e": ((0.0, 0.5), (0.0, 1.0)),
    "f": ((0.0, 0.0), (0.0, 0.5)),
    "g": ((0.0, 0.5), (1.0, 0.5)),
}
GLYPHS = ("abcdef", "bc", "abged", "abgcd", "fgbc", "afgcd", "afgedc", "abc", "abcdefg", "abcdfg")

RES_CLASSES = {"gender": ("men", "women"), "scene": ("nature", "urban")}
#: Class folder names per split where the release differs from the class name (RES's Gender test).
RES_TEST_FOLDERS = {"gender": ("men_test", "women_test")}
ANNOTATION_SIZE = 224


# ----- digits and IDX ---------------------------------------------------------------------------
def _segment_distance(px: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    direction = end - start
    length2 = max(float(direction @ direction), 1e-9)
    t = np.clip(((px - start) @ direction) / length2, 0.0, 1.0)
    closest = start + t[:, None] * direction
    return np.linalg.norm(px - closest, axis=1)


def draw_digit(
    label: int, rng: np.random.Generator, size: int = DIGIT_SIZE, segment_noise: float = 0.0
) -> np.ndarray:
    """One glyph of ``label`` as uint8 [size, size], white strokes on black, kept off the corners.

    ``segment_noise`` toggles each of the seven segments with that probability (never leaving the
    glyph empty), so that the shape alone no longer tells every digit apart.
    """
    height = rng.uniform(13.0, 17.0)
    width = height * rng.uniform(0.5, 0.7)
    centre = size / 2 + rng.uniform(-2.0, 2.0, size=2)
    slant = rng.uniform(-0.25, 0.25)
    thickness = rng.uniform(1.0, 1.9)
    ys, xs = np.mgrid[0:size, 0:size]
    pixels = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64) + 0.5
    segments = [
        name for name in SEGMENTS if (name in GLYPHS[label]) != (rng.random() < segment_noise)
    ]
    distance = np.full(len(pixels), np.inf)
    for name in segments or GLYPHS[label]:
        ends = []
        for x, y in SEGMENTS[name]:
            x, y = x + rng.normal(0, 0.06), y + rng.normal(0, 0.04)
            ends.append(
                np.array(
                    [
                        centre[0] + (x - 0.5) * width + slant * (0.5 - y) * height,
                        centre[1] + (y - 0.5) * height,
                    ]
                )
            )
        distance = np.minimum(distance, _segment_distance(pixels, ends[0], ends[1]))
    intensity = np.clip(thickness - distance + 0.5, 0.0, 1.0) * rng.uniform(0.8, 1.0)
    glyph = np.round(255 * intensity).reshape(size, size).astype(np.uint8)
    for rows in (slice(0, CORNER), slice(size - CORNER, size)):  # where decoy squares go
        for cols in (slice(0, CORNER), slice(size - CORNER, size)):
            glyph[rows, cols] = 0
    return glyph


def draw_digits(labels: Sequence[int], seed: int = 0, segment_noise: float = 0.0) -> np.ndarray:
    """Glyphs for ``labels`` as uint8 [N, 28, 28]."""
    rng = np.random.default_rng(seed)
    glyphs = [draw_digit(int(y), rng, segment_noise=segment_noise) for y in labels]
    return np.stack(glyphs).reshape(-1, DIGIT_SIZE, DIGIT_SIZE)


def make_mnist_tree(
    root: str | Path,
    n_train: int = 1200,
    n_test: int = 400,
    seed: int = 0,
    compress: bool = True,
    segment_noise: float = 0.0,
) -> Path:
    """Write generated digits as ``root/MNIST/raw/{train,t10k}-{images,labels}-idx?-ubyte[.gz]``."""
    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for offset, (split, n) in enumerate((("train", n_train), ("test", n_test))):
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        images = draw_digits(labels, seed * 100 + offset, segment_noise)
        suffix = ".gz" if compress else ""
        write_idx(raw / f"{MNIST_FILES[(split, 'images')]}{suffix}", images, compress)
        write_idx(raw / f"{MNIST_FILES[(split, 'labels')]}{suffix}", labels, compress)
    return Path(root)


# ----- RES layout -------------------------------------------------------------------------------
def matrix_json(mask: np.ndarray) -> str:
    """A boolean mask as the RES CSVs store it: a JSON list of rows of 0 and 1 (the text of
    ``json.dumps(mask.astype(int).tolist(), separators=(",", ":"))``, written without it: a
    224 x 224 matrix through ``json`` takes about 10 ms)."""
    values = np.asarray(mask).astype(int)
    if values.ndim != 2 or not np.isin(values, (0, 1)).all():  # not a 0/1 matrix: as json has it
        return json.dumps(values.tolist(), separators=(",", ":"))
    chars = np.full((values.shape[0], 2 * values.shape[1] - 1), ord(","), dtype=np.uint8)
    chars[:, ::2] = values + ord("0")
    return "[[" + "],[".join(row.tobytes().decode("ascii") for row in chars) + "]]"


def write_attention_csv(path: str | Path, rows: Sequence[dict[str, str]]) -> Path:
    """Write rows with the RES columns ``img_idx, attention, img_check, matrix_resize``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, ["img_idx", "attention", "img_check", "matrix_resize"])
        writer.writeheader()
        for row in rows:
            writer.writerow({"matrix_resize": "", **row})
    return path


def _grid(resolution: int) -> tuple[np.ndarray, np.ndarray]:
    coords = (np.arange(resolution) + 0.5) / resolution
    return np.meshgrid(coords, coords, indexing="ij")  # y, x in [0, 1]


def figure_mask(label: int, geometry: np.ndarray, resolution: int) -> np.ndarray:
    """The class's figure (class 0 a box, class 1 an ellipse) at ``resolution``."""
    y, x = _grid(resolution)
    cy, cx, half_h, half_w = geometry
    if label == 0:
        return (np.abs(y - cy) < half_h) & (np.abs(x - cx) < half_w)
    return ((y - cy) / half_h) ** 2 + ((x - cx) / half_w) ** 2 < 1.0


def square_mask(corner: np.ndarray, side: float, resolution: int) -> np.ndarray:
    y, x = _grid(resolution)
    return (y >= corner[0]) & (y < corner[0] + side) & (x >= corner[1]) & (x < corner[1] + side)


def draw_res_image(
    label: int, rng: np.random.Generator, image_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An RGB uint8 image and its factual and counterfactual masks at 224 x 224.

    The class is the figure's shape (class 0 a box, class 1 an ellipse); the factual annotation
    is the box around the figure for both classes, as an annotator marks the region that matters,
    so the annotation's shape does not give the label away (``python -m datamodules.prompt_leak``).
    """
    cx = rng.uniform(0.3, 0.45) if rng.random() < 0.5 else rng.uniform(0.55, 0.7)
    geometry = np.array([rng.uniform(0.45, 0.6), cx, rng.uniform(0.2, 0.3), rng.uniform(0.12, 0.2)])
    # The distractor sits in the top corner on the side away from the figure.
    side = 0.18
    corner = np.array([0.03, 0.79 if cx < 0.5 else 0.03])
    y, x = _grid(image_size)
    background = rng.uniform(0.2, 0.6, size=3)
    image = background + 0.15 * (y[..., None] - 0.5) + rng.normal(0, 0.03, (image_size,) * 2 + (3,))
    image[square_mask(corner, side, image_size)] = rng.uniform(0.0, 1.0, size=3)
    image[figure_mask(label, geometry, image_size)] = 0.7 + 0.3 * rng.random(3)
    pixels = np.round(255 * np.clip(image, 0.0, 1.0)).astype(np.uint8)
    factual = figure_mask(0, geometry, ANNOTATION_SIZE)  # the box around either figure
    counterfactual = square_mask(corner, side, ANNOTATION_SIZE)
    return pixels, factual, counterfactual


def make_res_tree(
    root: str | Path,
    dataset: str = "gender",
    per_class: tuple[int, int, int] = (8, 4, 4),
    annotated_fraction: float = 0.75,
    counterfactual_fraction: float = 0.5,
    image_size: int = 48,
    seed: int = 0,
) -> Path:
    """Write a RES-layout tree: ``per_class`` images per class in train, val and test, JPEGs of
    ``image_size``; ``annotated_fraction`` of them with a factual row (224 x 224), a share of
    those with a counterfactual row too, and a later ``bad``-flagged row for each annotated image."""
    if dataset not in RES_CLASSES:
        raise ValueError(f"dataset is one of {', '.join(RES_CLASSES)}, got {dataset!r}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    factual_rows: dict[str, list[dict[str, str]]] = {}
    counterfactual_rows: dict[str, list[dict[str, str]]] = {}
    for split, count in zip(("train", "val", "test"), per_class):
        folders = RES_TEST_FOLDERS.get(dataset) if split == "test" else None
        factual_rows[split], counterfactual_rows[split] = [], []
        for label, class_name in enumerate(RES_CLASSES[dataset]):
            folder = root / split / (folders[label] if folders else class_name)
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                img_idx = f"{dataset}_{split}_{class_name}_{i:04d}"
                pixels, factual, counterfactual = draw_res_image(label, rng, image_size)
                Image.fromarray(pixels).save(folder / f"{img_idx}.jpg", quality=95)
                if rng.random() >= annotated_fraction:
                    continue
                small = factual[::32, ::32]  # RES's matrix_resize column, which we do not read
                factual_rows[split].append(
                    {
                        "img_idx": img_idx,
                        "attention": matrix_json(factual),
                        "img_check": "good",
                        "matrix_resize": matrix_json(small),
                    }
                )
                factual_rows[split].append(
                    {"img_idx": img_idx, "attention": matrix_json(~factual), "img_check": "bad"}
                )
                if rng.random() < counterfactual_fraction:
                    counterfactual_rows[split].append(
                        {
                            "img_idx": img_idx,
                            "attention": matrix_json(counterfactual),
                            "img_check": "good",
                        }
                    )
    labels = root / "attention_label"
    for split in ("train", "val", "test"):
        write_attention_csv(labels / f"{dataset}_factual_{split}.csv", factual_rows[split])
        write_attention_csv(
            labels / f"{dataset}_counterfactual_{split}.csv", counterfactual_rows[split]
        )
    return root


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("dataset", choices=["gender", "scene", "mnist"])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--per-class",
        type=int,
        nargs=3,
        default=(8, 4, 4),
        metavar=("TRAIN", "VAL", "TEST"),
        help="RES: images per class and split",
    )
    parser.add_argument("--image-size", type=int, default=48, help="RES: JPEG side in pixels")
    parser.add_argument("--annotated-fraction", type=float, default=0.75)
    parser.add_argument("--n-train", type=int, default=1200, help="MNIST: training digits")
    parser.add_argument("--n-test", type=int, default=400, help="MNIST: test digits")
    parser.add_argument("--no-gzip", action="store_true", help="MNIST: plain IDX files")
    args = parser.parse_args(argv)
    if args.dataset == "mnist":
        make_mnist_tree(args.out_dir, args.n_train, args.n_test, args.seed, not args.no_gzip)
    else:
        make_res_tree(
            args.out_dir,
            args.dataset,
            tuple(args.per_class),
            args.annotated_fraction,
            image_size=args.image_size,
            seed=args.seed,
        )
    print(f"wrote a generated {args.dataset} tree to {args.out_dir}")


if __name__ == "__main__":
    main()
