"""Figures 9 to 12: the training runtime around the forward passes (issue 16, items 2 to 5).

9. Checkpoints: what a full ``last.ckpt`` (both ResNet-18s, g, Adam's state) and a weights-only
   file cost to write, against the hard link that keeps the best epoch.
10. Chunk size: masked images per second at the automatic chunk against fixed chunks.
11. Optimiser: one Adam step on VAPL's 22.4 M parameters, per-parameter loop against the
    implementation :func:`vapl.core.optim.adam` chooses, and the largest difference.
12. Validation: a validation pass with ``val_n_masks`` balanced masks against the training
    setting: time, prompted accuracy per epoch, the epoch it selects, agreement of predictions.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from benchmarks.common import Figure, round_ratio, rounds, say
from benchmarks.epoch import N_MASKS
from vapl.core.backbones import build_backbone
from vapl.core.chunking import auto_chunk_size
from vapl.core.masks import MaskSampler
from vapl.core.optim import adam
from vapl.core.refine import sample_seed, score_masks
from vapl.methods import VAPL


# ----- 9: checkpoints ---------------------------------------------------------------------------
def checkpoint_costs(device: torch.device, repeats: int = 3) -> Figure:
    """Figure 9: seconds and megabytes of a full checkpoint, a weights-only one and a hard link."""
    model = VAPL(in_channels=3, backbone="resnet18", n_masks=N_MASKS).to(device)
    optimizers = model.configure_optimizers()
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            for p in group["params"]:
                p.grad = torch.randn_like(p)
        optimizer.step()  # Adam's state exists, as after the first epoch
    full = {
        "state_dict": model.state_dict(),
        "optimizer_states": [o.state_dict() for o in optimizers],
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)

        def write_full() -> None:
            torch.save(full, folder / "last.ckpt.partial")
            os.replace(folder / "last.ckpt.partial", folder / "last.ckpt")

        def write_weights() -> None:
            torch.save({"state_dict": model.state_dict()}, folder / "weights.ckpt")

        def link_best() -> None:
            (folder / "best.ckpt").unlink(missing_ok=True)
            os.link(folder / "last.ckpt", folder / "best.ckpt")

        write_full()
        times = rounds(
            {"full": write_full, "weights": write_weights, "link": link_best}, repeats, device
        )
        sizes = {
            name: (folder / file).stat().st_size / 1e6
            for name, file in (("full", "last.ckpt"), ("weights", "weights.ckpt"))
        }
    best = {name: min(values) for name, values in times.items()}
    ratio = round_ratio(times, "full", "weights")
    say(
        f"  VAPL, two ResNet-18s + g + Adam: last.ckpt {sizes['full']:.0f} MB in "
        f"{best['full']:.3f} s; weights only {sizes['weights']:.0f} MB in {best['weights']:.3f} s; "
        f"the best epoch as a hard link {1e3 * best['link']:.2f} ms"
    )
    return Figure(
        "9",
        "checkpoint: full last.ckpt / weights only (time)",
        ratio,
        details={"seconds": best, "megabytes": sizes},
    )


# ----- 10: chunk size ---------------------------------------------------------------------------
def chunk_sizes(device: torch.device, repeats: int) -> list[Figure]:
    """Figure 10: scoring at the automatic chunk against fixed chunks (ResNet-18 and tiny)."""
    figures = []
    settings = (("resnet18", 32, 4, 128, "10a"), ("resnet18", 64, 2, 64, "10b"))
    settings += (("tiny", 48, 4, 64, "10c"),)  # the demo's network and size
    for backbone, size, batch, n_masks, key in settings:
        torch.manual_seed(0)
        network = build_backbone(backbone, num_classes=2, in_channels=3).to(device).eval()
        images = torch.randn(batch, 3, size, size, device=device)
        prompts = torch.full((batch, size, size), -1.0, device=device)
        seeds = [sample_seed(0, 0, str(i)) for i in range(batch)]
        sampler = MaskSampler(n_masks, 0.1)
        chosen = auto_chunk_size(size, size, device, batch * n_masks)
        chunks = sorted({16, 32, 64, 128, 256, 512, chosen} & set(range(1, batch * n_masks + 1)))

        inputs = (network, images, prompts, seeds, sampler)
        times = rounds({c: _scorer(inputs, c) for c in chunks}, max(repeats, 5), device)
        fastest = min(chunks, key=lambda c: statistics.median(times[c]))
        ratio = round_ratio(times, chosen, fastest)
        per_image = {c: 1e3 * min(t) / (batch * n_masks) for c, t in times.items()}
        say(
            f"  {backbone} {size} px, B={batch}, N={n_masks}: automatic chunk {chosen}; ms per "
            "masked image "
            + ", ".join(f"{c}: {v:.3f}" for c, v in per_image.items())
            + f"; automatic / fastest ({fastest}) {ratio:.3f}, 64 / automatic "
            f"{round_ratio(times, 64, chosen):.3f}"
        )
        figures.append(
            Figure(
                key,
                f"scoring, automatic chunk / fastest fixed, {backbone} {size}px",
                ratio,
                "<= 1.10",
                ratio <= 1.10,
                {"chosen": chosen, "fastest": fastest, "ms_per_image": per_image},
            )
        )
    return figures


def _scorer(inputs: tuple, chunk: int):  # type: ignore[no-untyped-def]
    return lambda: score_masks(*inputs, chunk)


# ----- 11: optimiser ----------------------------------------------------------------------------
def optimiser_step(device: torch.device, repeats: int) -> Figure:
    """Figure 11: one Adam step on two ResNet-18s, the per-parameter loop against ours."""
    torch.manual_seed(0)
    networks = [build_backbone("resnet18", 2, 3).to(device) for _ in range(2)]
    reference = [p for n in networks for p in n.parameters()]
    for p in reference:
        p.grad = torch.randn_like(p)
    copies = [torch.nn.Parameter(p.detach().clone()) for p in reference]
    for c, p in zip(copies, reference):
        c.grad = p.grad.clone()
    loop = torch.optim.Adam(reference, lr=1e-4, foreach=False)
    ours = adam(copies, lr=1e-4)
    loop.step()
    ours.step()
    with torch.no_grad():
        difference = max(float((a - b).abs().max()) for a, b in zip(reference, copies))
    times = rounds({"loop": loop.step, "ours": ours.step}, repeats, device)
    ratio = round_ratio(times, "loop", "ours")
    kind = "fused" if ours.defaults.get("fused") else "foreach"
    parameters = sum(p.numel() for p in reference)
    say(
        f"  Adam on {parameters / 1e6:.1f} M parameters: per-parameter loop "
        f"{1e3 * min(times['loop']):.1f} ms, {kind} {1e3 * min(times['ours']):.1f} ms; "
        f"largest difference after one step {difference:.1e}"
    )
    return Figure(
        "11",
        f"Adam step: per-parameter loop / {kind}",
        ratio,
        "> 1.00",
        ratio > 1.0 and difference < 1e-6,
        {"seconds": {k: min(v) for k, v in times.items()}, "max_difference": difference},
    )


# ----- 12: validation ---------------------------------------------------------------------------
class _ValidationSettings(Callback):
    """After each training epoch: the validation split's prompted predictions and scoring time
    under several mask settings (``name -> (N, balanced)``)."""

    def __init__(self, settings: dict[str, tuple[int, bool]]) -> None:
        self.settings = settings
        self.predictions: dict[str, list[torch.Tensor]] = {name: [] for name in settings}
        self.seconds: dict[str, list[float]] = {name: [] for name in settings}
        self.labels: torch.Tensor | None = None

    def on_train_epoch_end(self, trainer: Trainer, module: LightningModule) -> None:
        loader = trainer.datamodule.val_dataloader()
        was_training = module.training
        module.eval()
        full = module.refiner.sampler
        hp = module.hparams
        for name, (n_masks, balanced) in self.settings.items():
            module.refiner.sampler = MaskSampler(n_masks, hp.p, hp.cell_size, balanced)
            predicted, labels = [], []
            start = time.perf_counter()
            with torch.no_grad():
                for batch in loader:
                    out = module.predict_both(batch)
                    predicted.append(out["prompted_probs"].argmax(1))
                    labels.append(batch["label"])
            self.seconds[name].append(time.perf_counter() - start)
            self.predictions[name].append(torch.cat(predicted))
            self.labels = torch.cat(labels)
        module.refiner.sampler = full
        module.train(was_training)


def validation_trade_off(device: torch.device, epochs: int = 3) -> list[Figure]:
    """Figure 12: validation with fewer balanced masks (and with more, 96) against the training
    setting (N = 32 i.i.d.): time, prompted accuracy, the epoch it would select, and the share of
    samples predicted as in the training setting, after each trainer epoch of ``epochs`` epochs of
    network updates (``max_epochs``; the demo's F phase of 3 epochs is followed by a G phase of 3)
    in the demo setting (``configs/demo.yaml``: tiny CNN, 48 px, a model that learns in a few epochs, so
    that its prompted predictions depend on the refined prompt), with 200 validation samples."""
    from vapl.training.cli import build_cli

    settings = {
        "training setting (N=32 i.i.d.)": (N_MASKS, False),
        "val_n_masks=16": (16, True),
        "val_n_masks=8": (8, True),
        "val_n_masks=96": (96, True),
    }
    probe = _ValidationSettings(settings)
    with tempfile.TemporaryDirectory() as tmp:
        cli = build_cli(
            [
                "--config",
                "demo.yaml",
                f"--model.init_args.n_masks={N_MASKS}",
                "--data.init_args.n_val=200",
                f"--trainer.max_epochs={epochs}",
                "--trainer.limit_val_batches=0",
                "--trainer.logger=false",
                "--trainer.accelerator=cpu",
                f"--trainer.default_root_dir={tmp}",
                "--trainer.enable_progress_bar=false",
                "--trainer.enable_model_summary=false",
            ],
            run=False,
        )
        cli.trainer.callbacks.insert(0, probe)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert probe.labels is not None
    full_name = "training setting (N=32 i.i.d.)"
    reference = probe.predictions[full_name]
    trained = len(reference)
    say(f"  demo setting, tiny CNN, 200 validation samples, after each of {trained} epochs:")
    figures, summary = [], {}
    for name in settings:
        accuracy = [float((p == probe.labels).float().mean()) for p in probe.predictions[name]]
        agreement = [
            float((p == r).float().mean()) for p, r in zip(probe.predictions[name], reference)
        ]
        seconds = statistics.median(probe.seconds[name])
        relative = seconds / statistics.median(probe.seconds[full_name])
        best = max(range(len(accuracy)), key=lambda e: (accuracy[e], -e))
        summary[name] = {"accuracy": accuracy, "agreement": agreement, "best_epoch": best}
        say(
            f"    {name:<32} {seconds:6.2f} s ({relative:.2f} x the training setting); prompted "
            f"accuracy {', '.join(f'{a:.3f}' for a in accuracy)} (best epoch {best}); "
            f"predictions as in the training setting {100 * min(agreement):.1f} to "
            f"{100 * max(agreement):.1f} %"
        )
        if name in ("val_n_masks=16", "val_n_masks=8"):
            figures.append(
                Figure(
                    f"12{'ab'[len(figures)]}",
                    f"validation time, {name} / training setting",
                    relative,
                    details={**summary[name], "training_setting": summary[full_name]},
                )
            )
    return figures
