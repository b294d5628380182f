"""Write a tiny, valid folder data set from the synthetic demo generator.

    python -m datamodules.folder_example /tmp/vapl-folder --n 40 --image-size 64
    vapl fit --config folder.yaml --data.init_args.root=/tmp/vapl-folder

The tree mixes every format :class:`datamodules.FolderDataModule` reads: images alternate between
8-bit PNG and float32 NPY, prompts cycle through none, PNG and NPY, explanations alternate between
PNG and NPY. It is what the tests use, and a template for your own ``labels.csv``.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from datamodules.folder import SPLITS
from datamodules.folder_csv import LABELS_FILE
from datamodules.synthetic import make_synthetic_split
from vapl.core.prompt_files import write_prompt

#: The synthetic images' values (about -1.5 to 2.5) are mapped from this range to [0, 1].
VALUE_RANGE = (-2.0, 3.0)
CLASS_NAMES = ("healthy", "lesion")


def _to_unit(image: torch.Tensor) -> np.ndarray:
    low, high = VALUE_RANGE
    return ((image - low) / (high - low)).clamp(0.0, 1.0).numpy().astype(np.float32)


def write_example_folder(
    root: str | Path,
    n: int = 12,
    image_size: int = 24,
    seed: int = 0,
    labels_as_names: bool = False,
) -> Path:
    """Write ``n`` samples per split under ``root``; return the path of labels.csv.

    Row ``k`` (counted over the whole file) has a PNG image if ``k`` is even, else NPY; no prompt
    if ``k % 3 == 0``, a PNG prompt if ``k % 3 == 1``, else NPY; a PNG explanation if ``k`` is even,
    else NPY. Labels are 0 / 1, or ``healthy`` / ``lesion`` with ``labels_as_names``.
    """
    root = Path(root)
    for folder in ("images", "prompts", "explanations"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    rows = []
    k = 0
    for offset, split in enumerate(SPLITS):
        data = make_synthetic_split(
            n,
            image_size=image_size,
            shortcut=None if split == "test" else 1.0,
            seed=seed * 10 + offset,
            id_prefix=f"{split}-",
        )
        for i in range(n):
            name = data.ids[i]
            image = _to_unit(data.images[i, 0])
            explanation = data.explanations[i].numpy()
            if k % 2 == 0:
                image_path = f"images/{name}.png"
                Image.fromarray(np.round(image * 255).astype(np.uint8)).save(root / image_path)
                explanation_path = f"explanations/{name}.png"
                mask = np.round(explanation * 255).astype(np.uint8)
                Image.fromarray(mask).save(root / explanation_path)
            else:
                image_path = f"images/{name}.npy"
                np.save(root / image_path, image)
                explanation_path = f"explanations/{name}.npy"
                np.save(root / explanation_path, explanation.astype(np.float32))
            prompt_path = ["", f"prompts/{name}.png", f"prompts/{name}.npy"][k % 3]
            if prompt_path:
                write_prompt(data.prompts[i], root / prompt_path)
            label = int(data.labels[i])
            rows.append(
                {
                    "image": image_path,
                    "label": CLASS_NAMES[label] if labels_as_names else label,
                    "split": split,
                    "prompt": prompt_path,
                    "explanation": explanation_path,
                }
            )
            k += 1
    csv_path = root / LABELS_FILE
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return csv_path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="folder to write (created if needed)")
    parser.add_argument("--n", type=int, default=40, help="samples per split")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--labels-as-names", action="store_true")
    args = parser.parse_args(argv)
    path = write_example_folder(args.root, args.n, args.image_size, args.seed, args.labels_as_names)
    print(f"wrote {path} ({3 * args.n} rows)")


if __name__ == "__main__":
    main()
