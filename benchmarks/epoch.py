"""Figure 8: a VAPL epoch through ``vapl fit`` against its floor (issue 16).

The setting: a generated folder data set (100 train / 200 val images of 32 x 32 px, two thirds of
them with a prompt, written by :func:`datamodules.folder_example.write_example_folder`),
ResNet-18, N = 32, batch 16, one thread, ``configs/folder.yaml`` with the data cached in memory
and no loader workers. Model, data and trainer come from the ``vapl`` command's own builder
(:func:`vapl.training.cli.build_cli`), so the epoch is what a user's epoch costs: logging,
metrics, explanation metrics (the folder has explanations) and the checkpoint policy included.

The floor of an epoch is what no implementation can avoid: the masked forward passes it needs
(every prompted training sample scored on N masks, every prompted validation sample on the
validation mask count), timed as plain batched forward passes of the same network in inference
mode at the fastest of a few batch sizes and both memory layouts, plus a Baseline epoch (the
same data and trainer). F and G epochs alternate (``f_steps = g_steps`` = the batches of an
epoch, or one epoch each where VAPL counts its phases in epochs); the first epoch of each fit is
left out as a warm-up.
"""

from __future__ import annotations

import csv
import inspect
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from benchmarks.common import Figure, say
from datamodules.folder_example import write_example_folder
from vapl.core.backbones import build_backbone
from vapl.methods import VAPL

N_TRAIN, N_VAL, SIZE, N_MASKS, BATCH = 100, 200, 32, 32, 16


def write_folder(root: Path, n_train: int = N_TRAIN, n_val: int = N_VAL, size: int = SIZE) -> Path:
    """The generated folder data set: ``n_val`` samples per split, training rows cut to
    ``n_train``."""
    csv_path = write_example_folder(root, n=max(n_train, n_val), image_size=size)
    with csv_path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    kept, seen = [], 0
    for row in rows:
        if row["split"] == "train":
            seen += 1
            if seen > n_train:
                continue
        kept.append(row)
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(kept)
    return root


class EpochClock(Callback):
    """Wall time of each epoch (from its start to the next one's, checkpoint writes included),
    of its validation, and the VAPL phase it trained; and, per epoch, the seconds spent scoring
    masked images (in training and in validation) and writing checkpoints."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.phases: list[str] = []
        self.validation: list[float] = []
        self.parts: list[dict[str, float]] = []
        self.end = math.nan

    def setup(self, trainer: Trainer, module: LightningModule, stage: str) -> None:
        refiner = getattr(module, "refiner", None)
        if refiner is not None:
            refiner.score = self._timed(
                refiner.score, lambda: "val_scoring" if trainer.validating else "train_scoring"
            )
        trainer.save_checkpoint = self._timed(trainer.save_checkpoint, lambda: "checkpoint")

    def _timed(self, function: Any, key: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                if self.parts:
                    part = key()
                    self.parts[-1][part] = self.parts[-1].get(part, 0.0) + (
                        time.perf_counter() - start
                    )

        return timed

    def on_train_epoch_start(self, trainer: Trainer, module: LightningModule) -> None:
        self.starts.append(time.perf_counter())
        self.phases.append(getattr(module, "phase", "-"))
        self.parts.append({})

    def on_validation_start(self, trainer: Trainer, module: LightningModule) -> None:
        self._val_start = time.perf_counter()

    def on_validation_end(self, trainer: Trainer, module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self.validation.append(time.perf_counter() - self._val_start)

    def on_train_end(self, trainer: Trainer, module: LightningModule) -> None:
        self.end = time.perf_counter()

    def epochs(self) -> list[tuple[str, float, float]]:
        """``(phase, seconds, validation seconds)`` per epoch."""
        ends = [*self.starts[1:], self.end]
        return [
            (phase, end - start, val)
            for phase, start, end, val in zip(self.phases, self.starts, ends, self.validation)
        ]

    def part(self, phase: str, name: str) -> float:
        """Median over the epochs of ``phase`` (the first epoch left out) of one part's seconds."""
        values = [p.get(name, 0.0) for ph, p in zip(self.phases[1:], self.parts[1:]) if ph == phase]
        return statistics.median(values) if values else math.nan


def _phase_args(batches_per_epoch: int) -> list[str]:
    """F and G phases of one epoch each, whichever unit this VAPL counts its phases in."""
    parameters = inspect.signature(VAPL.__init__).parameters
    if "f_epochs" in parameters:
        return ["--model.init_args.f_epochs=1", "--model.init_args.g_epochs=1"]
    return [
        f"--model.init_args.f_steps={batches_per_epoch}",
        f"--model.init_args.g_steps={batches_per_epoch}",
    ]


def fit_epochs(
    root: Path,
    workdir: Path,
    epochs: int,
    method_args: list[str],
    callbacks: list[Callback] = (),  # type: ignore[assignment]
    validate: bool = True,
) -> tuple[EpochClock, Any]:
    """Fit through the ``vapl`` command's builder for ``epochs`` epochs (with ``callbacks``;
    without validation if ``validate`` is false); the clock and the CLI."""
    from vapl.training.cli import build_cli

    args = [
        "--config",
        "folder.yaml",
        *method_args,
        f"--data.init_args.root={root}",
        f"--data.init_args.image_size={SIZE}",
        "--data.init_args.num_workers=0",
        "--data.init_args.cache=true",
        f"--data.init_args.batch_size={BATCH}",
        f"--trainer.max_epochs={epochs}",
        "--trainer.accelerator=cpu",
        f"--trainer.default_root_dir={workdir}",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.num_sanity_val_steps=0",
        *([] if validate else ["--trainer.limit_val_batches=0"]),
    ]
    cli = build_cli(args, run=False)
    clock = EpochClock()
    cli.trainer.callbacks[:0] = [clock, *callbacks]
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return clock, cli


def _prompted(dataset: Any) -> int:
    return sum(bool(dataset[i]["has_prompt"]) for i in range(len(dataset)))


def forward_seconds_per_image(
    channels: int, size: int, batch_sizes: tuple[int, ...] = (64, 256, 512), images: int = 1024
) -> float:
    """Seconds per image of plain batched ResNet-18 passes (inference mode, softmax) at the
    fastest of ``batch_sizes`` and both memory layouts: the floor of a masked pass."""
    network = build_backbone("resnet18", num_classes=2, in_channels=channels).eval()
    best = math.inf
    with torch.inference_mode():
        for layout in (torch.contiguous_format, torch.channels_last):
            for batch in batch_sizes:
                x = torch.randn(batch, channels, size, size).contiguous(memory_format=layout)
                torch.softmax(network(x), dim=1)  # warm-up
                calls = max(1, images // batch)
                start = time.perf_counter()
                for _ in range(calls):
                    torch.softmax(network(x), dim=1)
                best = min(best, (time.perf_counter() - start) / (calls * batch))
    return best


def epoch_against_floor(device: torch.device, epochs: int = 5) -> list[Figure]:
    """Figure 8: VAPL F and G epochs against (masked passes + a Baseline epoch)."""
    if device.type != "cpu":
        say("  figure 8 runs on the CPU only (the setting of issue 16)")
    with tempfile.TemporaryDirectory() as tmp:
        root = write_folder(Path(tmp) / "data")
        batches = math.ceil(N_TRAIN / BATCH)
        per_image_before = forward_seconds_per_image(3, SIZE)
        base_clock, _ = fit_epochs(
            root, Path(tmp) / "baseline", epochs, ["--config", "methods/baseline.yaml"]
        )
        vapl_args = [f"--model.init_args.n_masks={N_MASKS}", *_phase_args(batches)]
        vapl_clock, cli = fit_epochs(root, Path(tmp) / "vapl", epochs, vapl_args)
        per_image = (per_image_before + forward_seconds_per_image(3, SIZE)) / 2
        datasets = cli.datamodule.datasets
        hp = cli.model.hparams
        val_masks = hp.get("val_n_masks") or hp.n_masks
        passes = _prompted(datasets["train"]) * hp.n_masks + _prompted(datasets["val"]) * val_masks
    baseline = statistics.median(s for _, s, _ in base_clock.epochs()[1:])
    baseline_val = statistics.median(v for _, _, v in base_clock.epochs()[1:])
    floor = passes * per_image + baseline
    measured = vapl_clock.epochs()[1:]
    figures = []
    say(
        f"  folder data {N_TRAIN} train / {N_VAL} val, {SIZE} px, ResNet-18, N={N_MASKS}, "
        f"batch {BATCH}: {passes} masked passes an epoch at {1e3 * per_image:.2f} ms "
        f"= {passes * per_image:.2f} s, Baseline epoch {baseline:.2f} s, floor {floor:.2f} s"
    )
    base_ckpt = base_clock.part("-", "checkpoint")
    say(f"    Baseline: validation {baseline_val:.2f} s, checkpoint writes {base_ckpt:.2f} s")
    for phase, key, goal in (("F", "8a", 1.2), ("G", "8b", None)):
        seconds = [s for p, s, _ in measured if p == phase]
        validation = [v for p, _, v in measured if p == phase]
        if not seconds:
            continue
        epoch, val = statistics.median(seconds), statistics.median(validation)
        ratio = epoch / floor
        parts = {
            name: vapl_clock.part(phase, name)
            for name in ("train_scoring", "val_scoring", "checkpoint")
        }
        say(
            f"    VAPL {phase} epoch {epoch:.2f} s (validation {val:.2f} s, "
            f"{100 * val / epoch:.0f} %): {ratio:.3f} x floor"
        )
        rest = epoch - parts["train_scoring"] - parts["val_scoring"]
        say(
            f"      scoring {parts['train_scoring']:.2f} s in training + "
            f"{parts['val_scoring']:.2f} s in validation = "
            f"{(parts['train_scoring'] + parts['val_scoring']) / (passes * per_image):.3f} x the "
            f"passes; the rest {rest:.2f} s = {rest / baseline:.2f} Baseline epochs "
            f"(checkpoint writes {parts['checkpoint']:.2f} s)"
        )
        figures.append(
            Figure(
                key,
                f"VAPL {phase} epoch / (masked passes + Baseline epoch)",
                ratio,
                None if goal is None else f"<= {goal:.2f}",
                None if goal is None else ratio <= goal,
                {
                    "epoch_s": epoch,
                    "validation_s": val,
                    "baseline_epoch_s": baseline,
                    "passes": passes,
                    "pass_ms": 1e3 * per_image,
                    "epochs_s": seconds,
                    **{f"{name}_s": value for name, value in parts.items()},
                },
            )
        )
    return figures
