"""The on-disk cache of VLM attention maps: computed once per image, memory-mapped when read.
Plain numpy and torch, no Lightning import.

One folder per (generator, data set): ``<root>/<generator key>-<data key>/`` with

* ``maps.npy``: float32 [N, H, W], the maps in the data set's order, opened with
  ``np.load(mmap_mode="r")`` so a large set never has to fit in memory;
* ``index.json``: the generator's identity (model, weights, prompts, templates, method,
  post-processing), the sample ids and a digest of each image.

The generator key hashes everything a map depends on besides the image, the data key hashes the
ids and image digests: changing the prompts, the model or its weights file, or the data gives a
new folder, and so new maps (old folders stay until deleted; switching back reuses them).

A batch asks for maps by sample id (:meth:`MapCache.maps_for`). The batch image's digest is
checked against the cached one; an image that a joint flip (``datamodules.transforms``) turned
is recognised and its map is flipped the same way; any other mismatch (another augmentation, an
id the cache does not hold) is computed on the fly.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from vapl.core.progress import progress

MAPS = "maps.npy"
INDEX = "index.json"
FORMAT_VERSION = 1
#: The flips tried when a batch image is not the cached one: (dims of the image plane).
FLIPS: tuple[tuple[int, ...], ...] = ((-1,), (-2,), (-2, -1))

MapFunction = Callable[[torch.Tensor], torch.Tensor]


def image_digest(image: torch.Tensor) -> str:
    """A short content hash of one image [C, H, W] (float32 bytes)."""
    array = np.ascontiguousarray(image.detach().to("cpu", torch.float32).numpy())
    return hashlib.sha1(array.tobytes()).hexdigest()[:20]


def _hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


@contextmanager
def untransformed(dataset: Dataset) -> Iterator[Dataset]:
    """The dataset with its ``transform`` (augmentation) switched off for the duration."""
    transform = getattr(dataset, "transform", None)
    if transform is not None:
        dataset.transform = None
    try:
        yield dataset
    finally:
        if transform is not None:
            dataset.transform = transform


def _batches(dataset: Dataset, batch_size: int) -> Iterator[tuple[list[str], torch.Tensor]]:
    for start in range(0, len(dataset), batch_size):
        samples = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        yield [str(s["id"]) for s in samples], torch.stack([s["image"] for s in samples])


class MapCache:
    """The maps of one data set under one generator, opened for reading (memory-mapped)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        index = json.loads((self.directory / INDEX).read_text())
        self.identity: dict[str, Any] = index["identity"]
        self.ids: list[str] = index["ids"]
        self.digests: list[str] = index["digests"]
        self.rows = {sample_id: row for row, sample_id in enumerate(self.ids)}
        self.maps = np.load(self.directory / MAPS, mmap_mode="r")

    def __getstate__(self) -> dict[str, Any]:
        return {"directory": self.directory}  # worker processes reopen the memory map

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["directory"])

    def __len__(self) -> int:
        return len(self.ids)

    @staticmethod
    def is_complete(directory: Path) -> bool:
        try:
            index = json.loads((directory / INDEX).read_text())
        except (OSError, ValueError):
            return False
        return index.get("format") == FORMAT_VERSION and (directory / MAPS).is_file()

    @classmethod
    def build(
        cls,
        root: str | Path,
        generator: Any,
        dataset: Dataset,
        batch_size: int = 32,
        description: str = "VLM maps",
    ) -> MapCache:
        """Open the cache of ``dataset`` under ``generator`` in ``root``, computing it first when
        it is missing (a tqdm bar shows the progress). ``generator`` needs ``identity()``,
        ``key()`` and ``__call__(images) -> maps``. Augmentation is off while reading."""
        with untransformed(dataset):
            ids: list[str] = []
            digests: list[str] = []
            for batch_ids, images in _batches(dataset, batch_size):
                ids += batch_ids
                digests += [image_digest(image) for image in images]
            if len(set(ids)) != len(ids):
                raise ValueError("the data set's sample ids are not unique: maps are keyed by id")
            directory = Path(root) / f"{generator.key()}-{_hash([ids, digests])}"
            if not cls.is_complete(directory):
                cls._compute(directory, generator, dataset, ids, digests, batch_size, description)
        return cls(directory)

    @staticmethod
    def _compute(
        directory: Path,
        generator: Any,
        dataset: Dataset,
        ids: list[str],
        digests: list[str],
        batch_size: int,
        description: str,
    ) -> None:
        directory.parent.mkdir(parents=True, exist_ok=True)
        temporary = Path(tempfile.mkdtemp(prefix=f".tmp-{directory.name}-", dir=directory.parent))
        try:
            shape = tuple(dataset[0]["image"].shape[-2:])
            maps = np.lib.format.open_memmap(
                temporary / MAPS, mode="w+", dtype=np.float32, shape=(len(ids), *shape)
            )
            row = 0
            with progress(
                total=len(ids), desc=description, unit="image", dynamic_ncols=True
            ) as bar:
                for _, images in _batches(dataset, batch_size):
                    maps[row : row + len(images)] = generator(images).float().cpu().numpy()
                    row += len(images)
                    bar.update(len(images))
            maps.flush()
            del maps
            index = {
                "format": FORMAT_VERSION,
                "identity": generator.identity(),
                "ids": ids,
                "digests": digests,
            }
            (temporary / INDEX).write_text(json.dumps(index))
            if directory.exists():  # an incomplete folder of an interrupted run
                shutil.rmtree(directory)
            os.rename(temporary, directory)
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise

    def lookup(self, sample_id: str, image: torch.Tensor) -> torch.Tensor | None:
        """The cached map [H, W] of this sample as the image shows it (flipped along with a
        flipped image), or ``None`` when the id is unknown or the image is not the cached one."""
        row = self.rows.get(str(sample_id))
        if row is None:
            return None
        stored = torch.from_numpy(np.array(self.maps[row]))
        if image_digest(image) == self.digests[row]:
            return stored
        for dims in FLIPS:
            if image_digest(torch.flip(image, dims)) == self.digests[row]:
                return torch.flip(stored, dims)
        return None

    def maps_for(
        self, ids: Sequence[str], images: torch.Tensor, generator: MapFunction
    ) -> tuple[torch.Tensor, int]:
        """``(maps [B, H, W] on the images' device, how many were computed on the fly)``."""
        on_cpu = images.detach().cpu()  # one transfer, then per-sample digests
        found = [self.lookup(sample_id, image) for sample_id, image in zip(ids, on_cpu)]
        missing = [i for i, m in enumerate(found) if m is None]
        if missing:
            fresh = generator(images[missing]).float().cpu()
            for i, fresh_map in zip(missing, fresh):
                found[i] = fresh_map
        return torch.stack(found).to(images.device), len(missing)
