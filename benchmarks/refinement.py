"""Figures 1, 3, 4 and 7: the refinement engine against the forward passes it needs, its memory,
the one-mask-per-pass reference, and balanced against i.i.d. masks."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.common import (
    Figure,
    one_mask_per_pass,
    prompted_batch,
    round_ratio,
    rounds,
    say,
)
from datamodules.synthetic import make_synthetic_split
from vapl.core.backbones import build_backbone
from vapl.core.refine import MonotoneWeight, PromptRefiner, sample_seed

ROOT = Path(__file__).resolve().parents[1]


def _masked_images(refiner: PromptRefiner, images, prompts, seeds) -> torch.Tensor:
    """All B x N masked images [B N, C, H, W], built once outside the timed region."""
    rows = [
        images[b] * refiner.sampler.all_masks(prompts[b], seeds[b]).unsqueeze(1)
        for b in range(len(images))
    ]
    return torch.cat(rows)


def overhead(
    device: torch.device,
    backbone: str,
    size: int,
    batch: int,
    n_masks: int,
    chunk: int,
    repeats: int,
    goal: float | None,
    key: str,
) -> Figure:
    """Figure 1: a whole refinement (masks, scoring, g, aggregation, scaling) against the bare
    batched forward passes on the same B x N masked images (in the faster memory format)."""
    torch.manual_seed(0)
    model = build_backbone(backbone, num_classes=2, in_channels=3).to(device).eval()
    images, prompts, _, seeds = prompted_batch(batch, size, channels=3)
    images, prompts = images.to(device), prompts.to(device)
    refiner = PromptRefiner(n_masks, 0.1, chunk_size=chunk, weight_fn=MonotoneWeight()).to(device)
    shared = PromptRefiner(n_masks, 0.1, chunk_size=chunk, weight_fn=refiner.weight_fn)
    bf16 = PromptRefiner(n_masks, 0.1, chunk_size=chunk, weight_fn=refiner.weight_fn, autocast=True)
    nchw = PromptRefiner(
        n_masks, 0.1, chunk_size=chunk, weight_fn=refiner.weight_fn, channels_last=False
    )
    masked = _masked_images(refiner, images, prompts, seeds)
    masked_last = masked.contiguous(memory_format=torch.channels_last)

    def refine(which: PromptRefiner, seeds_used: list[int]) -> None:
        with torch.no_grad():
            which(model, images, prompts, seeds_used)

    def bare(inputs: torch.Tensor) -> None:
        with torch.inference_mode():
            for start in range(0, len(inputs), chunk):
                torch.softmax(model(inputs[start : start + chunk]).float(), dim=-1)

    def draws() -> None:  # mask generation alone, as scoring and aggregation both do it
        for _ in range(2):
            for seed in seeds:
                refiner.sampler.draws(tuple(prompts.shape[1:]), seed, device).take(0, n_masks)

    # Each refinement right before the bare passes in the same layout, so the pair sees one load.
    timed = rounds(
        {
            "refine, channels-last": lambda: refine(refiner, seeds),
            "bare, channels-last": lambda: bare(masked_last),
            "refine, NCHW": lambda: refine(nchw, seeds),
            "bare, NCHW": lambda: bare(masked),
            "refine, one draw for the batch": lambda: refine(shared, [seeds[0]] * batch),
            "refine, bf16 autocast": lambda: refine(bf16, seeds),
            "mask draws alone": draws,
        },
        repeats,
        device,
    )
    times = {name: min(values) for name, values in timed.items()}
    layout = "channels-last" if times["bare, channels-last"] <= times["bare, NCHW"] else "NCHW"
    same_format = {
        name: round_ratio(timed, f"refine, {name}", f"bare, {name}")
        for name in ("channels-last", "NCHW")
    }
    ratio = same_format[layout]
    best = times[f"refine, {layout}"]
    images_scored = batch * n_masks
    say(f"  {backbone} {size}x{size}, B={batch}, N={n_masks}, chunk {chunk}:")
    for name, seconds in times.items():
        say(f"    {name:<32} {seconds:8.3f} s  {1e3 * seconds / images_scored:8.3f} ms/image")
    say(
        f"    overhead over the bare passes in the faster layout ({layout}): {ratio:.3f} "
        "(median over rounds); in each layout: "
        + ", ".join(f"{name} {value:.3f}" for name, value in same_format.items())
    )
    autocast_ratio = round_ratio(timed, "refine, bf16 autocast", f"bare, {layout}")
    say(f"    bf16 autocast refinement against the bare fp32 passes: {autocast_ratio:.3f}")
    return Figure.at_most(
        key,
        f"refinement / bare forwards, {backbone} {size}px",
        ratio,
        goal,
        {
            "seconds": times,
            "layout": layout,
            "images": images_scored,
            "refine_ms_per_image": 1e3 * best / images_scored,
            "same_layout": same_format,
        },
    )


def _probe(n_masks: int, size: int, batch: int, chunk: int) -> dict[str, int]:
    # A fixed glibc mmap threshold: freed buffers go back to the system instead of feeding a heap
    # whose growth would read as memory in use.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    command = [sys.executable, "-m", "benchmarks.memory_probe", str(n_masks)]
    command += ["--size", str(size), "--batch", str(batch), "--chunk", str(chunk)]
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=env, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def memory(device: torch.device, size: int = 64, batch: int = 1, chunk: int = 64) -> Figure:
    """Figure 3: peak memory of a refinement with backward at N = 4096 against N = 256."""
    if device.type == "cuda":
        peaks = {}
        model = build_backbone("tiny", num_classes=2, in_channels=1).to(device).eval()
        images, prompts, labels, seeds = prompted_batch(batch, size)
        images, prompts, labels = images.to(device), prompts.to(device), labels.to(device)
        for n in (256, 4096):
            refiner = PromptRefiner(n, 0.1, chunk_size=chunk, weight_fn=MonotoneWeight()).to(device)
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            scores = refiner.target_scores(refiner.score(model, images, prompts, seeds), labels)
            refiner.refine_from_scores(scores, prompts, seeds).sum().backward()
            peaks[n] = (torch.cuda.max_memory_allocated(device) - base) // 1024
        growth = {n: max(1, v) for n, v in peaks.items()}
        totals = growth
    else:
        probes = {n: _probe(n, size, batch, chunk) for n in (256, 4096)}
        growth = {n: max(1, p["peak_kib"] - p["before_kib"]) for n, p in probes.items()}
        totals = {n: p["peak_kib"] for n, p in probes.items()}
    ratio = growth[4096] / growth[256]
    say(f"  tiny {size}x{size}, B={batch}, chunk {chunk}, with g and backward:")
    for n in (256, 4096):
        say(
            f"    N={n:<5} peak growth {growth[n] / 1024:8.1f} MiB, "
            f"peak {totals[n] / 1024:8.1f} MiB"
        )
    say(f"    ratio of peak growth {ratio:.3f}, of whole peak {totals[4096] / totals[256]:.3f}")
    return Figure(
        "3",
        "peak memory N=4096 / N=256 (growth during refinement)",
        ratio,
        "<= 1.20",
        ratio <= 1.2,
        {"growth_kib": growth, "peak_kib": totals, "whole_peak_ratio": totals[4096] / totals[256]},
    )


def against_reference(
    device: torch.device,
    backbone: str,
    size: int,
    batch: int,
    n_masks: int,
    chunk: int,
    repeats: int,
    key: str,
) -> Figure:
    """Figure 4: the engine against the one-mask-per-pass loop at equal N and equal result."""
    torch.manual_seed(0)
    model = build_backbone(backbone, num_classes=2, in_channels=3).to(device).eval()
    images, prompts, labels, seeds = prompted_batch(batch, size, channels=3)
    images, prompts, labels = images.to(device), prompts.to(device), labels.to(device)
    refiner = PromptRefiner(n_masks, 0.1, chunk_size=chunk, weight_fn=MonotoneWeight()).to(device)
    bf16 = PromptRefiner(n_masks, 0.1, chunk_size=chunk, weight_fn=refiner.weight_fn, autocast=True)
    results: dict[str, torch.Tensor] = {}

    def engine() -> None:
        with torch.no_grad():
            results["engine"] = refiner(model, images, prompts, seeds, labels)

    def engine_bf16() -> None:
        with torch.no_grad():
            results["engine, bf16 autocast"] = bf16(model, images, prompts, seeds, labels)

    def reference() -> None:
        results["reference"] = one_mask_per_pass(
            model, images, prompts, seeds, labels, refiner.sampler, refiner.weight_fn
        )

    timed = rounds(
        {"one mask per pass": reference, "engine": engine, "engine, bf16 autocast": engine_bf16},
        repeats,
        device,
    )
    times = {name: min(values) for name, values in timed.items()}
    difference = (results["engine"] - results["reference"]).abs().max().item()
    ratio = round_ratio(timed, "one mask per pass", "engine")
    say(f"  {backbone} {size}x{size}, B={batch}, N={n_masks}, chunk {chunk}:")
    for name, seconds in times.items():
        say(f"    {name:<24} {seconds:8.3f} s")
    say(f"    speed-up {ratio:.2f}, largest difference of the refined prompts {difference:.1e}")
    bf16_difference = (results["engine, bf16 autocast"] - results["reference"]).abs().max().item()
    say(
        f"    bf16 autocast: speed-up "
        f"{round_ratio(timed, 'one mask per pass', 'engine, bf16 autocast'):.2f},"
        f" largest difference {bf16_difference:.1e} (not equal: reported only)"
    )
    return Figure(
        key,
        f"one-mask-per-pass loop / engine, {backbone} {size}px",
        ratio,
        ">= 3.00",
        ratio >= 3.0 and difference <= 1e-5,
        {"seconds": times, "max_difference": difference, "bf16_max_difference": bf16_difference},
    )


def _trained_tiny(size: int, device: torch.device) -> torch.nn.Module:
    """A tiny backbone trained briefly on the demo data, so scores depend on the masks."""
    torch.manual_seed(0)
    data = make_synthetic_split(256, image_size=size, seed=11)
    model = build_backbone("tiny", num_classes=2, in_channels=1).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    images = data.images.to(device) * (data.prompts != 0).float().unsqueeze(1).to(device)
    for _ in range(4):
        for start in range(0, 256, 32):
            loss = F.cross_entropy(
                model(images[start : start + 32]), data.labels[start : start + 32].to(device)
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def balanced_error(
    device: torch.device,
    n_values: tuple[int, ...] = (40, 80, 160, 320, 640),
    reference_n: int = 4096,
    samples: int = 3,
    trials: int = 2,
    size: int = 32,
) -> Figure:
    """Figure 7: error of the refined prompt against an N = 4096 reference, i.i.d. and balanced
    masks, and the number of masks each needs for the same error (eq. 1, labels as targets)."""
    model = _trained_tiny(size, device)
    data = make_synthetic_split(samples, image_size=size, seed=12)
    images, prompts = data.images.to(device), data.prompts.to(device)
    labels = data.labels.to(device)
    undecided = prompts == -1

    def refine(n: int, balanced: bool, seed: int) -> torch.Tensor:
        refiner = PromptRefiner(n, 0.1, chunk_size=256, balanced=balanced)
        with torch.no_grad():  # one draw for all samples: each sample's error is still its own
            return refiner(model, images, prompts, [seed] * samples, labels)

    reference = refine(reference_n, True, sample_seed(1, 0, "reference"))
    errors: dict[str, list[float]] = {"iid": [], "balanced": []}
    for n in n_values:
        for name in errors:
            squared = [
                (refine(n, name == "balanced", sample_seed(2, t, str(n))) - reference)[undecided]
                .pow(2)
                .mean()
                .item()
                for t in range(trials)
            ]
            errors[name].append(math.sqrt(sum(squared) / trials))
    say(f"  tiny {size}x{size} trained briefly, {samples} samples x {trials} seeds, p = 0.1;")
    say(f"  RMSE over undecided pixels against balanced N={reference_n} (its own seed):")
    say("    N      i.i.d.   balanced")
    for n, e_iid, e_bal in zip(n_values, errors["iid"], errors["balanced"]):
        say(f"    {n:<6} {e_iid:.4f}   {e_bal:.4f}")
    # Masks needed for a given error: fit log(error) = a + b log(N) for each sampler, and read
    # the fits at the errors i.i.d. masks reach at the smallest and the largest N measured.
    fits = {name: _loglog_fit(n_values, values) for name, values in errors.items()}
    say(
        f"    fits error ~ N^b: i.i.d. b={fits['iid'][1]:.2f}, balanced b={fits['balanced'][1]:.2f}"
    )
    needed: dict[float, dict[str, float]] = {}
    for target in (errors["iid"][0], errors["iid"][-1]):
        needed[target] = {
            name: math.exp((math.log(target) - a) / b) for name, (a, b) in fits.items()
        }
        say(
            f"    for error {target:.4f}: i.i.d. needs N={needed[target]['iid']:.0f}, balanced "
            f"N={needed[target]['balanced']:.0f}: "
            f"{needed[target]['iid'] / needed[target]['balanced']:.1f} times fewer"
        )
    target = errors["iid"][-1]
    ratio = needed[target]["iid"] / needed[target]["balanced"]
    return Figure(
        "7",
        "masks for equal error: i.i.d. / balanced",
        ratio,
        ">= 2.00",
        ratio >= 2.0,
        {"n": list(n_values), "errors": errors, "needed": needed, "fits": fits},
    )


def _loglog_fit(xs: tuple[int, ...], ys: list[float]) -> tuple[float, float]:
    lx = [math.log(x) for x in xs]
    ly = [math.log(max(y, 1e-12)) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    slope = sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)
    return my - slope * mx, slope
