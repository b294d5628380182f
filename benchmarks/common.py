"""What the benchmarks share: timing, results, machine description, inputs, the reference loop."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from datamodules.synthetic import make_synthetic_split
from vapl.core.masks import MASK_BLOCK, MaskSampler
from vapl.core.refine import MonotoneWeight, normalise_attention, sample_seed


@dataclass
class Figure:
    """One measured figure: a ratio, its goal (``None``: reported only), the numbers behind it."""

    key: str
    title: str
    ratio: float
    goal: str | None = None
    holds: bool | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def at_most(
        cls, key: str, title: str, ratio: float, limit: float | None, details: dict[str, Any]
    ) -> Figure:
        """A figure whose goal is ``ratio <= limit`` (``limit`` None: reported only)."""
        if limit is None:
            return cls(key, title, ratio, None, None, details)
        return cls(key, title, ratio, f"<= {limit:.2f}", ratio <= limit, details)

    def line(self) -> str:
        verdict = "reported" if self.holds is None else ("holds" if self.holds else "MISSES")
        goal = f"goal {self.goal}" if self.goal else ""
        return f"{self.key:<4} {self.title:<58} {self.ratio:>9.3f}  {goal:<14} {verdict}"


def say(text: str = "") -> None:
    print(text, flush=True)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rounds(
    functions: dict[str, Callable[[], object]], repeats: int, device: torch.device
) -> dict[str, list[float]]:
    """Seconds of each call: one warm-up each, then ``repeats`` rounds that call the functions in
    turn, so that load from other processes hits all of them alike."""
    for fn in functions.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, fn in functions.items():
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return times


def round_ratio(times: dict[str, list[float]], numerator: str, denominator: str) -> float:
    """The median over rounds of ``numerator / denominator`` timed side by side in each round:
    steadier than a ratio of minima when the machine's load comes and goes."""
    ratios = sorted(a / b for a, b in zip(times[numerator], times[denominator]))
    middle = len(ratios) // 2
    return ratios[middle] if len(ratios) % 2 else (ratios[middle - 1] + ratios[middle]) / 2


def machine() -> str:
    """One line: CPU or GPU, threads, torch version."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            names = [
                line.split(":", 1)[1].strip() for line in info if line.startswith("model name")
            ]
        cpu = f"{names[0]} x {len(names)}" if names else cpu
    except OSError:
        pass
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{cpu}; {gpu}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"load average {load:.1f} at start"
    )


def prompted_batch(
    batch: int, size: int, channels: int = 1, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
    """Images [B, C, H, W], prompts, labels and per-sample mask seeds from the demo data."""
    data = make_synthetic_split(batch, image_size=size, seed=seed)
    images = data.images.repeat(1, channels, 1, 1)
    seeds = [sample_seed(0, 0, sample_id) for sample_id in data.ids]
    return images, data.prompts, data.labels, seeds


def one_mask_per_pass(
    model: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    prompts: torch.Tensor,
    seeds: Sequence[int],
    targets: torch.Tensor,
    sampler: MaskSampler,
    weight_fn: MonotoneWeight | None,
    normalization: str = "total_weight",
) -> torch.Tensor:
    """The reference demo's loop: one masked image per forward pass, eq. 3 summed mask by mask.

    The same masks as the engine (drawn block by block, then used one at a time), so the two give
    the same refined prompt (``normalization`` as the engine's refiner).
    """
    refined, totals = [], []
    with torch.no_grad():
        for image, prompt, seed, target in zip(images, prompts, seeds, targets.tolist()):
            total = torch.zeros(prompt.shape, device=image.device)
            weights = []
            for _, masks in sampler.chunks(prompt, seed, MASK_BLOCK):
                for mask in masks:
                    score = torch.softmax(model((image * mask).unsqueeze(0)), dim=1)[0, target]
                    weight = score if weight_fn is None else weight_fn(score.view(1))[0]
                    total += weight * mask
                    weights.append(weight)
            refined.append(total / sampler.normaliser)
            totals.append(torch.stack(weights))
    return normalise_attention(
        torch.stack(refined), torch.stack(totals), sampler.normaliser, normalization
    )
