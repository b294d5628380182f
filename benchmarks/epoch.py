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

Everything here is timed in CPU seconds of this process (``time.process_time``: all its threads,
user and system), not wall time: on a shared machine other processes take the cores for seconds
at a time, which changes wall times by a factor of two between epochs but leaves the CPU time
of the work itself nearly unchanged. With one torch thread and no loader workers, CPU time is
the wall time the epoch would take on an idle core. Wall times are printed as well.
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

try:  # the benchmark also runs on checkouts from before batch-norm folding (the "before" figure)
    from vapl.core.fusion import FoldedBatchNorm
except ImportError:  # pragma: no cover
    FoldedBatchNorm = None  # type: ignore[assignment,misc]

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


CLOCK = time.process_time


def pass_seconds(
    channels: int, size: int, images: int = 256, repeats: int = 5, folded: bool = False
) -> tuple[float, str]:
    """CPU seconds of one plain ResNet-18 pass (inference mode, softmax) at the fastest of a few
    batch sizes and both memory layouts (median of ``repeats`` rounds each), and that setting;
    ``folded``: with its batch norms folded into the convolutions, as the engine scores."""
    network = build_backbone("resnet18", num_classes=2, in_channels=channels).eval()
    if folded:
        network = FoldedBatchNorm()(network, torch.randn(1, channels, size, size))
    options = [
        (batch, layout)
        for layout in (torch.contiguous_format, torch.channels_last)
        for batch in (64, 128, 256, 512)
    ]
    inputs = {
        option: torch.randn(option[0], channels, size, size).contiguous(memory_format=option[1])
        for option in options
    }
    times: dict[tuple[int, Any], list[float]] = {option: [] for option in options}
    with torch.inference_mode():
        for x in inputs.values():
            torch.softmax(network(x), dim=1)  # warm-up
        for _ in range(repeats):
            for option, x in inputs.items():
                calls = max(1, images // len(x))
                start = CLOCK()
                for _ in range(calls):
                    torch.softmax(network(x), dim=1)
                times[option].append((CLOCK() - start) / (calls * len(x)))
    medians = {option: statistics.median(values) for option, values in times.items()}
    batch, layout = min(medians, key=medians.get)
    name = "channels-last" if layout == torch.channels_last else "NCHW"
    return medians[(batch, layout)], f"batch {batch}, {name}"


class EpochClock(Callback):
    """CPU time (and wall time) of each epoch, checkpoint writes included, of its validation, and
    the VAPL phase it trained; per epoch the CPU seconds spent scoring masked images (in training
    and in validation) and writing checkpoints."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.ends: list[float] = []
        self.wall: list[float] = []
        self.phases: list[str] = []
        self.validation: list[float] = []
        self.parts: list[dict[str, float]] = []

    def setup(self, trainer: Trainer, module: LightningModule, stage: str) -> None:
        refiner = getattr(module, "refiner", None)
        if refiner is not None:
            refiner.score = self._timed(
                refiner.score, lambda: "val_scoring" if trainer.validating else "train_scoring"
            )
        trainer.save_checkpoint = self._timed(trainer.save_checkpoint, lambda: "checkpoint")

    def _timed(self, function: Any, key: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = CLOCK()
            try:
                return function(*args, **kwargs)
            finally:
                if self.parts:
                    part = key()
                    self.parts[-1][part] = self.parts[-1].get(part, 0.0) + (CLOCK() - start)

        return timed

    def _boundary(self) -> None:
        if len(self.ends) < len(self.starts):
            self.ends.append(CLOCK())
            self.wall[-1] = time.perf_counter() - self.wall[-1]

    def on_train_epoch_start(self, trainer: Trainer, module: LightningModule) -> None:
        self._boundary()
        self.phases.append(getattr(module, "phase", "-"))
        self.parts.append({})
        self.wall.append(time.perf_counter())
        self.starts.append(CLOCK())

    def on_validation_start(self, trainer: Trainer, module: LightningModule) -> None:
        self._val_start = CLOCK()

    def on_validation_end(self, trainer: Trainer, module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self.validation.append(CLOCK() - self._val_start)

    def on_train_end(self, trainer: Trainer, module: LightningModule) -> None:
        self._boundary()

    def epochs(self) -> list[dict[str, Any]]:
        """Per epoch: ``phase``, ``seconds`` (CPU), ``wall`` seconds, ``validation`` CPU seconds
        and the parts' CPU seconds."""
        return [
            {
                "phase": self.phases[i],
                "seconds": end - start,
                "wall": self.wall[i],
                "validation": self.validation[i] if i < len(self.validation) else 0.0,
                **self.parts[i],
            }
            for i, (start, end) in enumerate(zip(self.starts, self.ends))
        ]


def _phase_args(batches_per_epoch: int, epochs: int) -> tuple[list[str], int]:
    """F and G phases of one epoch each, whichever unit this VAPL counts its phases in, and the
    ``max_epochs`` that makes the trainer run about ``epochs`` epochs (where ``max_epochs`` counts
    the epochs of network updates only, the G epochs come on top)."""
    parameters = inspect.signature(VAPL.__init__).parameters
    if "f_epochs" in parameters:
        return ["--model.init_args.f_epochs=1", "--model.init_args.g_epochs=1"], -(-epochs // 2)
    args = [
        f"--model.init_args.f_steps={batches_per_epoch}",
        f"--model.init_args.g_steps={batches_per_epoch}",
    ]
    return args, epochs


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


def _median(rows: list[dict[str, Any]], key: str) -> float:
    values = [r.get(key, 0.0) for r in rows]
    return statistics.median(values) if values else math.nan


def epoch_against_floor(device: torch.device, epochs: int = 6) -> list[Figure]:
    """Figure 8: VAPL F and G epochs against (masked passes + a Baseline epoch), in CPU time."""
    if device.type != "cpu":
        say("  figure 8 runs on the CPU only (the setting of issue 16)")
    first, setting = pass_seconds(3, SIZE)
    with tempfile.TemporaryDirectory() as tmp:
        root = write_folder(Path(tmp) / "data")
        batches = math.ceil(N_TRAIN / BATCH)
        base_clock, _ = fit_epochs(
            root, Path(tmp) / "baseline", 3, ["--config", "methods/baseline.yaml"]
        )
        phase_args, max_epochs = _phase_args(batches, epochs)
        vapl_args = [f"--model.init_args.n_masks={N_MASKS}", *phase_args]
        vapl_clock, cli = fit_epochs(root, Path(tmp) / "vapl", max_epochs, vapl_args)
        datasets = cli.datamodule.datasets
        hp = cli.model.hparams
        val_masks = hp.get("val_n_masks") or hp.n_masks
        passes = _prompted(datasets["train"]) * hp.n_masks + _prompted(datasets["val"]) * val_masks
    second, _ = pass_seconds(3, SIZE)
    folded = pass_seconds(3, SIZE, folded=True) if FoldedBatchNorm is not None else None
    per_pass = (first + second) / 2
    base_rows, vapl_rows = base_clock.epochs()[1:], vapl_clock.epochs()[1:]
    baseline = _median(base_rows, "seconds")
    floor = passes * per_pass + baseline
    say(
        f"  folder data {N_TRAIN} train / {N_VAL} val, {SIZE} px, ResNet-18, N={N_MASKS}, "
        f"batch {BATCH}; CPU seconds. A plain pass: {1e3 * per_pass:.2f} ms ({setting}; "
        f"{1e3 * first:.2f} before the fits, {1e3 * second:.2f} after)"
    )
    say(
        f"    floor: {passes} masked passes = {passes * per_pass:.2f} s, + a Baseline epoch "
        f"{baseline:.2f} s (validation {_median(base_rows, 'validation'):.2f} s, checkpoint "
        f"writes {_median(base_rows, 'checkpoint'):.2f} s, wall {_median(base_rows, 'wall'):.2f} s)"
        f" = {floor:.2f} s"
    )
    figures = []
    for phase, key, goal in (("F", "8a", 1.2), ("G", "8b", None)):
        rows = [r for r in vapl_rows if r["phase"] == phase]
        if not rows:
            continue
        epoch = _median(rows, "seconds")
        ratio = epoch / floor
        parts = {
            name: _median(rows, name)
            for name in ("validation", "train_scoring", "val_scoring", "checkpoint", "wall")
        }
        scoring = parts["train_scoring"] + parts["val_scoring"]
        rest = epoch - scoring
        say(
            f"    VAPL {phase} epoch {epoch:.2f} s (wall {parts['wall']:.2f} s; validation "
            f"{100 * parts['validation'] / epoch:.0f} %): {ratio:.3f} x floor"
        )
        say(
            f"      scoring {parts['train_scoring']:.2f} s in training + "
            f"{parts['val_scoring']:.2f} s in validation = {scoring / (passes * per_pass):.3f} x "
            f"the passes; the rest {rest:.2f} s = {rest / baseline:.2f} Baseline epochs "
            f"(checkpoint writes {parts['checkpoint']:.2f} s)"
        )
        folded_floor = math.nan if folded is None else passes * folded[0] + baseline
        if folded is not None:
            say(
                f"      against passes of the network with its batch norms folded, as the engine "
                f"scores ({1e3 * folded[0]:.2f} ms, {folded[1]}): {epoch / folded_floor:.3f} x"
            )
        figures.append(
            Figure.at_most(
                key,
                f"VAPL {phase} epoch / (masked passes + Baseline epoch)",
                ratio,
                goal,
                {
                    "epoch_s": epoch,
                    "baseline_epoch_s": baseline,
                    "masked_passes": passes,
                    "pass_ms": 1e3 * per_pass,
                    "pass_setting": setting,
                    "folded_pass_ms": math.nan if folded is None else 1e3 * folded[0],
                    "ratio_to_folded_floor": epoch / folded_floor,
                    **{f"{name}_s": value for name, value in parts.items()},
                    "epochs": vapl_clock.epochs(),
                    "baseline_epochs": base_clock.epochs(),
                },
            )
        )
    return figures
