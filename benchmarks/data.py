"""Figure 6: samples per second from a preprocessed cache against the training step's.

The medical datamodules (LIDC-IDRI, Pancreas) serve 2-D slices from memory-mapped ``.npy`` caches
and make each prompt on the fly. Where :mod:`datamodules.lidc` exists, the benchmark caches a
small LIDC fixture tree (``datamodules.fixtures``) and reads it through the real train loader;
otherwise it reads a stand-in cache built the same way (memory-mapped rows, prompt from
:func:`~vapl.core.prompts.simulate_incomplete` per sample) and says so.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import seed_everything
from torch.utils.data import DataLoader, Dataset

from benchmarks.common import Figure, say
from benchmarks.training import _fit
from vapl.core.prompts import prompt_from_masks, simulate_incomplete
from vapl.methods import VAPL, Baseline


class StandInCache(Dataset):
    """Samples from memory-mapped arrays, served the way the medical datamodules' cache is."""

    def __init__(self, directory: Path, rows: int, size: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        yy, xx = np.mgrid[:size, :size]
        images = rng.random((rows, size, size), dtype=np.float32)
        centres = rng.integers(size // 4, 3 * size // 4, (rows, 2))
        lesions = (yy - centres[:, :1, None]) ** 2 + (xx - centres[:, 1:, None]) ** 2 < 16
        body = np.broadcast_to(
            (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (0.45 * size) ** 2, (rows, size, size)
        )
        for name, array in (("images", images), ("explanations", lesions), ("body", body)):
            np.save(
                directory / f"{name}.npy",
                np.ascontiguousarray(array).astype(np.float32 if name == "images" else np.uint8),
            )
        self.arrays = {
            name: np.load(directory / f"{name}.npy", mmap_mode="r")
            for name in ("images", "explanations", "body")
        }
        self.labels = rng.integers(0, 2, rows)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, row: int) -> dict[str, Any]:
        image = torch.from_numpy(np.array(self.arrays["images"][row], dtype=np.float32))
        explanation = torch.from_numpy(np.array(self.arrays["explanations"][row]) > 0)
        body = torch.from_numpy(np.array(self.arrays["body"][row]) > 0)
        generator = torch.Generator().manual_seed(1_000_003 + row)
        kept = simulate_incomplete(explanation, 0.5, 1, generator)
        return {
            "image": (image * 2.0 - 1.0).unsqueeze(0),
            "prompt": prompt_from_masks(kept, ~body),
            "has_prompt": torch.tensor(True),
            "label": torch.tensor(int(self.labels[row])),
            "explanation": explanation.float(),
            "id": f"row{row}",
        }


def _loader(directory: Path, size: int, batch: int) -> tuple[DataLoader, str]:
    try:
        from datamodules.fixtures import write_lidc_tree
        from datamodules.lidc import LIDCDataModule
    except ImportError:
        dataset = StandInCache(directory, 256, size)
        loader = DataLoader(dataset, batch_size=batch, shuffle=True)
        return loader, "stand-in cache (datamodules.lidc not on this branch)"
    root, _ = write_lidc_tree(directory / "tree", patients=6, size=size, slices=20)
    data = LIDCDataModule(
        root=str(root), cache_dir=str(directory / "cache"), image_size=size, batch_size=batch
    )
    data.prepare_data()
    data.setup("fit")
    return data.train_dataloader(), "LIDCDataModule's train loader on a fixture tree's cache"


def samples_per_second(loader: DataLoader, at_least: int = 512) -> float:
    seen, start = 0, time.perf_counter()
    while seen < at_least:
        for batch in loader:
            seen += len(batch["label"])
    return seen / (time.perf_counter() - start)


def data_throughput(device: torch.device, size: int = 64, batch: int = 16) -> Figure:
    """Figure 6 at the settings of configs/lidc.yaml (tiny backbone, 64 px, batch 16, N = 64)."""
    with tempfile.TemporaryDirectory() as tmp:
        loader, source = _loader(Path(tmp), size, batch)
        next(iter(loader))
        loaded = samples_per_second(loader)
    seed_everything(0)
    vapl, _, _ = _fit(
        VAPL(in_channels=1, backbone="tiny", n_masks=64, chunk_size=64, lr=1e-3),
        4,
        size,
        batch,
        device,
    )
    seed_everything(0)
    baseline, _, _ = _fit(Baseline(in_channels=1, backbone="tiny", lr=1e-3), 6, size, batch, device)
    trained = {"VAPL": batch / vapl, "Baseline": batch / baseline}
    ratio = loaded / trained["VAPL"]
    say(f"  {source}, {size}x{size}, batch {batch}, main process:")
    say(f"    loader {loaded:9.1f} samples/s")
    for name, rate in trained.items():
        say(
            f"    {name:<8} training step {rate:9.1f} samples/s: "
            f"loader {loaded / rate:.1f} x faster"
        )
    return Figure(
        "6",
        "loader samples/s / VAPL training samples/s (N=64)",
        ratio,
        ">= 5.00",
        ratio >= 5.0,
        {"source": source, "loader": loaded, "training": trained},
    )
