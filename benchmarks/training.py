"""Figures 2 and 5: the G phase's score cache, and VAPL training steps against Baseline steps."""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything

from benchmarks.common import Figure, round_ratio, rounds, say, synchronize
from datamodules.synthetic import SyntheticDataModule, make_synthetic_split
from vapl.core.backbones import build_backbone
from vapl.methods import VAPL, Baseline
from vapl.training.tiny import tiny_trainer


def _batch(n: int, size: int, device: torch.device) -> dict[str, Any]:
    data = make_synthetic_split(n, image_size=size, seed=5)
    batch = torch.utils.data.default_collate([data[i] for i in range(n)])
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def _g_update(model: VAPL, batch: dict[str, Any], optimizer: torch.optim.Optimizer) -> None:
    """The work of :meth:`VAPL._g_step` without the Trainer: scores (cached or not), refinement
    with g, f_m on ``I * A``, eq. 11's loss, backward into g and its optimizer step."""
    scores = model._cached_scores(batch)
    loss = model.g_objective(batch, scores)["loss"]
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def g_phase(
    device: torch.device,
    backbone: str,
    batch_size: int,
    repeats: int,
    key: str,
    shared_masks: bool = False,
    n_masks: int = 256,
    size: int = 32,
    goal: float | None = 10.0,
) -> Figure:
    """Figure 2: a G step that finds its scores in VAPL's cache against one that rescores."""
    seed_everything(0)
    model = VAPL(
        in_channels=1,
        backbone=backbone,
        n_masks=n_masks,
        chunk_size=64,
        shared_masks=shared_masks,
    ).to(device)
    for network in (model.prompted_model, model.unprompted_model):
        network.eval().requires_grad_(False)  # what toggle_optimizer does for the G optimizer
    batch = _batch(batch_size, size, device)
    optimizer = torch.optim.Adam(model.refiner.weight_fn.parameters(), lr=1e-4)

    # Bit-identical: the refined prompt from cached scores against one from fresh scores, same g.
    model._score_cache.clear()
    with torch.no_grad():
        cached = model._cached_scores(batch)
        slot = model._g_phase_slot()  # a G phase seeds its masks by the phase
        from_cache = model.refined_prompts(batch, batch["label"], epoch=slot, scores=cached)
        rescored = model.refined_prompts(batch, batch["label"], epoch=slot)
    identical = torch.equal(from_cache, rescored)

    def rescoring_step() -> None:
        model._score_cache.clear()
        _g_update(model, batch, optimizer)

    timed = rounds(
        {
            "G step that rescores": rescoring_step,
            "G step, cached scores": lambda: _g_update(model, batch, optimizer),
        },
        repeats,
        device,
    )
    times = {name: min(values) for name, values in timed.items()}
    ratio = round_ratio(timed, "G step that rescores", "G step, cached scores")
    draws = "one draw for the batch" if shared_masks else "a draw per sample"
    say(f"  {backbone} {size}x{size}, B={batch_size}, N={n_masks}, {draws}:")
    for name, seconds in times.items():
        say(f"    {name:<24} {seconds:8.4f} s")
    say(f"    ratio {ratio:.1f}; refined prompts bit-identical: {identical}")
    return Figure(
        key,
        f"G step rescoring / cached, {backbone} B={batch_size}, {draws}",
        ratio,
        None if goal is None else f">= {goal:.2f}",
        None if goal is None else (ratio >= goal and identical),
        {"seconds": times, "bit_identical": identical},
    )


class _StepTimer(Callback):
    """Seconds of each training step, its phase, and the part spent in refinement."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.steps: list[tuple[str, float, float]] = []
        self.refining = 0.0

    def on_train_start(self, trainer: Trainer, module: LightningModule) -> None:
        refiner = getattr(module, "refiner", None)
        if refiner is None:
            return
        for name in ("score", "refine_from_scores"):
            setattr(refiner, name, self._timed(getattr(refiner, name)))

    def _timed(self, function):
        def timed(*args, **kwargs):
            synchronize(self.device)
            start = time.perf_counter()
            out = function(*args, **kwargs)
            synchronize(self.device)
            self.refining += time.perf_counter() - start
            return out

        return timed

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.phase = getattr(module, "phase", "step")
        self.refining = 0.0
        synchronize(self.device)
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        synchronize(self.device)
        self.steps.append((self.phase, time.perf_counter() - self.start, self.refining))


def _fit(module: LightningModule, steps: int, size: int, batch: int, device: torch.device):
    timer = _StepTimer(device)
    trainer = tiny_trainer(
        accelerator=device.type,
        max_epochs=1,
        limit_train_batches=steps,
        limit_val_batches=0,
        callbacks=[timer],
    )
    data = SyntheticDataModule(n_train=8 * batch, image_size=size, batch_size=batch)
    trainer.fit(module, datamodule=data)
    steps = timer.steps[1:]  # the first step pays for one-time set-up
    mean = sum(s[1] for s in steps) / len(steps)
    refining = sum(s[2] for s in steps) / len(steps)
    return mean, refining, steps


def _plain_step_seconds(
    device: torch.device, backbone: str, size: int, batch: int, steps: int = 3
) -> float:
    """Seconds of one Baseline-like step (forward, cross-entropy, backward, Adam), fastest of
    ``steps`` after a warm-up, in plain torch."""
    model = build_backbone(backbone, num_classes=2, in_channels=1).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    images = torch.randn(batch, 1, size, size, device=device)
    labels = torch.arange(batch, device=device) % 2
    times = []
    for _ in range(steps + 1):
        synchronize(device)
        start = time.perf_counter()
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times[1:])


def training_steps(
    device: torch.device,
    n_values: tuple[int, int] = (64, 1024),
    size: int = 32,
    batch: int = 4,
    repeats: int = 3,
    paper_forward_ms: float | None = None,
) -> list[Figure]:
    """Figure 5: a VAPL training step (F and G steps alike) against a Baseline step, and the share
    of it spent in refinement, each fit of VAPL right after a fit of the Baseline (``repeats``
    rounds, medians); the paper's configuration estimated from them and from figure 1."""
    runs: dict[int, list[tuple[float, float, float]]] = {n: [] for n in n_values}
    phases: dict[int, dict[str, list[float]]] = {n: {"F": [], "G": []} for n in n_values}
    for _ in range(repeats):
        for n in n_values:
            seed_everything(0)
            baseline, _, _ = _fit(
                Baseline(in_channels=1, backbone="tiny", lr=1e-3), 6, size, batch, device
            )
            seed_everything(0)
            module = VAPL(
                in_channels=1,
                backbone="tiny",
                n_masks=n,
                chunk_size=64,
                lr=1e-3,
                phase_unit="batch",
                f_steps=2,
                g_steps=2,
            )
            mean, refining, steps = _fit(module, 5, size, batch, device)
            runs[n].append((mean, refining, baseline))
            for phase, seconds, _ in steps:
                phases[n][phase].append(seconds)
    say(f"  tiny {size}x{size}, B={batch}, f_steps = g_steps = 2, {repeats} rounds:")
    figures, measured = [], {}
    for n in n_values:
        ratio = _median([mean / baseline for mean, _, baseline in runs[n]])
        share = _median([refining / mean for mean, refining, _ in runs[n]])
        mean, baseline = _median([r[0] for r in runs[n]]), _median([r[2] for r in runs[n]])
        measured[n] = (ratio, share)
        by_phase = ", ".join(f"{p} {1e3 * _median(v):.0f} ms" for p, v in phases[n].items() if v)
        say(
            f"    N={n:<5} VAPL step {1e3 * mean:8.1f} ms ({by_phase}), Baseline "
            f"{1e3 * baseline:.1f} ms: {ratio:7.1f} x Baseline, refinement {100 * share:.1f} %"
        )
        figures.append(
            Figure(
                f"5{'ab'[len(figures)]}",
                f"VAPL step / Baseline step, N={n} (refinement {100 * share:.0f} %)",
                ratio,
                details={"vapl_s": mean, "baseline_s": baseline, "refinement_share": share},
            )
        )
    # In units of a Baseline step: VAPL = rest + refinement, the rest independent of N and the
    # refinement linear in N.
    (n0, (q0, s0)), (n1, (q1, s1)) = sorted(measured.items())
    rest = (q0 * (1 - s0) + q1 * (1 - s1)) / 2
    per_mask = (q1 * s1 - q0 * s0) / (n1 - n0)
    at_5000 = rest + q0 * s0 + per_mask * (5000 - n0)
    say(
        f"    at N=5000 in this setting: {at_5000:.0f} x Baseline, refinement "
        f"{100 * (1 - rest / at_5000):.1f} %; the rest of a VAPL step is {rest:.1f} Baseline steps"
    )
    if paper_forward_ms is not None:
        # ResNet-18 at 224 px, B = 16, N = 5000: 80,000 masked images at figure 1's cost of one
        # (engine included), plus the rest of a VAPL step in Baseline steps measured above, with a
        # Baseline step of ResNet-18 at 224 px measured on B = 2 and scaled to 16.
        baseline_s = 8 * _plain_step_seconds(device, "resnet18", 224, 2)
        refine_s = 16 * 5000 * paper_forward_ms / 1e3
        total = refine_s + rest * baseline_s
        say(
            f"    paper's setting (ResNet-18 224 px, B=16, N=5000), from figure 1's "
            f"{paper_forward_ms:.1f} ms per masked image and a {baseline_s:.1f} s Baseline step: "
            f"{total / 3600:.2f} h a step here, {total / baseline_s:.0f} x Baseline, refinement "
            f"{100 * refine_s / total:.2f} %"
        )
        figures.append(
            Figure(
                "5c",
                "VAPL step / Baseline step, paper's setting (estimate)",
                total / baseline_s,
                details={"vapl_s": total, "refining_s": refine_s, "baseline_s": baseline_s},
            )
        )
    return figures


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
