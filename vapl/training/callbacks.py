"""What a W&B dashboard needs to compare runs, as one Lightning callback.

:class:`WandbDashboard` adds to every W&B logger of the trainer:

* ``best/val/...`` in the run summary: the best value of every validation metric so far (the
  maximum; the minimum for losses), so runs sort and compare on their best epoch;
* ``test/table``: the test metrics as a table, one row per head (``prompted``, ``unprompted``);
* ``val/samples``: every ``every_n_epochs`` validation epochs, a panel of the same
  ``n_samples`` validation samples: image, prompt (indispensable red, precluded yellow), refined
  prompt (VAPL) and the Grad-CAM of each model, captioned with label and predictions.

Without a W&B logger the panels are written as PNG files to ``{log_dir}/panels/`` instead
(``save_png=True`` writes them in any case). The ``vapl`` command adds this callback whenever a W&B
logger is configured. Only rank 0 draws and logs; under DDP the other ranks do nothing here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
import yaml
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger

from vapl.core.figures import (
    PanelRow,
    grad_cam_maps,
    panel_image,
    panel_networks,
    save_panel_figure,
)
from vapl.core.metrics import METRIC_NAMES
from vapl.training.run_names import dataset_name, identity_from_config, method_name


def _is_better(key: str, new: float, old: float | None) -> bool:
    if old is None or math.isnan(old):
        return not math.isnan(new)
    return new < old if "loss" in key else new > old


def _class_path(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__name__}"


class WandbDashboard(Callback):
    """Best validation scores, a test table and sample panels for W&B (module docstring)."""

    def __init__(
        self,
        every_n_epochs: int = 2,
        n_samples: int = 4,
        grad_cam: bool = True,
        save_png: bool | None = None,
    ) -> None:
        if every_n_epochs < 1 or n_samples < 0:
            raise ValueError("every_n_epochs must be >= 1 and n_samples >= 0")
        self.every_n_epochs = every_n_epochs
        self.n_samples = n_samples
        self.grad_cam = grad_cam
        self.save_png = save_png
        self.best: dict[str, float] = {}
        self._batch: dict[str, Any] | None = None
        self.log_dir = Path(".")

    # ----- state (best scores survive a resume) ---------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"best": dict(self.best)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = dict(state_dict.get("best", {}))

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # trainer.log_dir broadcasts under DDP: ask on every process, here, not on rank 0 only
        self.log_dir = Path(trainer.log_dir or trainer.default_root_dir)

    @staticmethod
    def wandb_loggers(trainer: Trainer) -> list[WandbLogger]:
        return [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]

    # ----- best validation scores -----------------------------------------------------------------
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        improved = {}
        for key, value in trainer.callback_metrics.items():
            if not key.startswith("val/") or value.numel() != 1:
                continue
            number = float(value)
            if _is_better(key, number, self.best.get(key)):
                self.best[key] = improved[f"best/{key}"] = number
        if trainer.is_global_zero:
            for logger in self.wandb_loggers(trainer):
                logger.experiment.summary.update(improved)
            epoch = trainer.current_epoch
            if self.n_samples and (epoch + 1) % self.every_n_epochs == 0:
                self.log_panel(trainer, pl_module, epoch)

    # ----- test metrics as a table ----------------------------------------------------------------
    def test_rows(self, trainer: Trainer, pl_module: LightningModule) -> list[list[Any]]:
        """``[method, dataset, head, acc, precision, recall, f1]`` per head with test metrics."""
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        method = method_name(_class_path(pl_module), dict(pl_module.hparams))
        datamodule = getattr(trainer, "datamodule", None)
        dataset = (
            dataset_name(_class_path(datamodule), dict(getattr(datamodule, "hparams", {})))
            if datamodule is not None
            else "unknown"
        )
        rows = []
        for head in getattr(pl_module, "heads", ("unprompted",)):
            values = [metrics.get(f"test/{head}/{name}") for name in METRIC_NAMES]
            if any(v is not None for v in values):
                rows.append([method, dataset, head, *values])
        return rows

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        rows = self.test_rows(trainer, pl_module)
        if not rows:
            return
        columns = ["method", "dataset", "head", *METRIC_NAMES]
        for logger in self.wandb_loggers(trainer):
            logger.log_table(key="test/table", columns=columns, data=rows)

    # ----- sample panels --------------------------------------------------------------------------
    def fixed_batch(self, trainer: Trainer) -> dict[str, Any] | None:
        """The same ``n_samples`` validation samples every time, evenly spread over the split."""
        if self._batch is None:
            loaders = trainer.val_dataloaders
            loader = loaders[0] if isinstance(loaders, list | tuple) else loaders
            dataset = getattr(loader, "dataset", None)
            if dataset is None or not hasattr(dataset, "__len__") or len(dataset) == 0:
                return None
            count = min(self.n_samples, len(dataset))
            picks = torch.linspace(0, len(dataset) - 1, count).round().long().tolist()
            with torch.inference_mode(False):
                batch = torch.utils.data.default_collate([dataset[i] for i in picks])
                self._batch = {k: v.clone() if torch.is_tensor(v) else v for k, v in batch.items()}
        return self._batch

    @torch.inference_mode(False)
    def panel_rows(self, pl_module: LightningModule, batch: dict[str, Any]) -> list[PanelRow]:
        """A panel row for each sample of ``batch`` (on the module's device), titled with its
        id, label and each head's prediction."""
        device = pl_module.device
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        was_training = pl_module.training
        pl_module.eval()
        try:
            with torch.no_grad():
                if hasattr(pl_module, "predict_both"):
                    out = pl_module.predict_both(batch)
                    refined = out["refined_prompt"]
                    probs = {
                        "prompted": out["prompted_probs"],
                        "unprompted": out["unprompted_probs"],
                    }
                else:
                    refined = None
                    probs = {"unprompted": torch.softmax(pl_module(batch["image"]), dim=1)}
            cams: dict[str, torch.Tensor] = {}
            if self.grad_cam:
                for name, (network, images) in panel_networks(pl_module, batch, refined).items():
                    cams[name] = grad_cam_maps(network, images)
        finally:
            pl_module.train(was_training)
        rows = []
        for i in range(len(batch["image"])):
            predicted = " | ".join(
                f"{head} {int(p[i].argmax())} ({float(p[i].max()):.2f})"
                for head, p in probs.items()
            )
            has_prompt = bool(batch["has_prompt"][i]) if "has_prompt" in batch else True
            rows.append(
                PanelRow(
                    batch["image"][i].cpu(),
                    batch["prompt"][i].cpu(),
                    None if refined is None or not has_prompt else refined[i].cpu(),
                    {name: cam[i].cpu() for name, cam in cams.items()},
                    title=f"{batch['id'][i]} | label {int(batch['label'][i])} | {predicted}",
                )
            )
        return rows

    def log_panel(self, trainer: Trainer, pl_module: LightningModule, epoch: int) -> None:
        batch = self.fixed_batch(trainer)
        if batch is None:
            return
        rows = self.panel_rows(pl_module, batch)
        title = f"{type(pl_module).__name__}: validation samples at epoch {epoch}"
        loggers = self.wandb_loggers(trainer)
        for logger in loggers:
            logger.log_image(
                key="val/samples",
                images=[panel_image([row], title) for row in rows],
                caption=[row.title for row in rows],
                step=trainer.global_step,
            )
        if self.save_png or (self.save_png is None and not loggers):
            save_panel_figure(self.log_dir / "panels" / f"epoch{epoch:03d}.png", rows, title)


class RunConfigSaver(SaveConfigCallback):
    """LightningCLI's ``config.yaml`` in the log folder, and the same resolved config in every W&B
    run's config (``config``), with the run's identity (``vapl``: method, dataset, seed, name)
    for grouping runs on the dashboard."""

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        loggers = WandbDashboard.wandb_loggers(trainer)
        if not loggers:
            return
        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        identity = identity_from_config(config)
        values = {
            "config": config,
            "vapl": {
                "method": identity.method,
                "dataset": identity.dataset,
                "seed": identity.seed,
                "name": identity.name,
            },
        }
        for logger in loggers:
            logger.experiment.config.update(values, allow_val_change=True)


def state_fingerprint(module: torch.nn.Module) -> tuple[list[str], torch.Tensor]:
    """Names and a float64 [T, 3] fingerprint of every floating-point tensor of the state dict:
    sum, sum of absolute values and a position-weighted sum. Equal tensors give equal rows."""
    names, rows = [], []
    for name, tensor in module.state_dict().items():
        if not tensor.is_floating_point():
            continue
        flat = tensor.detach().double().flatten()
        weights = torch.linspace(1.0, 2.0, flat.numel(), dtype=torch.float64, device=flat.device)
        names.append(name)
        rows.append(torch.stack([flat.sum(), flat.abs().sum(), (flat * weights).sum()]))
    return names, torch.stack(rows) if rows else torch.zeros(0, 3, dtype=torch.float64)


class RankConsistencyCheck(Callback):
    """Under DDP, checks at the end of every training epoch that every process holds the same
    weights (both networks, g, batch-norm statistics): the fingerprints of all state tensors
    (:func:`state_fingerprint`) are gathered and compared. A difference above ``tolerance``
    raises, naming the tensors. With a logger, rank 0 writes the largest difference seen to
    ``rank_consistency.json`` in the run's log folder (without one, nothing is written: never
    into the current folder). Does nothing in a single process."""

    def __init__(self, tolerance: float = 0.0) -> None:
        self.tolerance = tolerance
        self.max_difference = 0.0
        self.log_dir: Path | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # trainer.log_dir is a collective under DDP: every rank asks (all have the same loggers)
        self.log_dir = Path(trainer.log_dir) if trainer.loggers and trainer.log_dir else None

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.world_size < 2:
            return
        names, fingerprint = state_fingerprint(pl_module)
        gathered = trainer.strategy.all_gather(fingerprint.to(pl_module.device))  # [W, T, 3]
        difference = (gathered - gathered[0:1]).abs().amax(dim=(0, 2))
        largest = float(difference.max()) if difference.numel() else 0.0
        self.max_difference = max(self.max_difference, largest)
        if trainer.is_global_zero and self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            (self.log_dir / "rank_consistency.json").write_text(
                json.dumps(
                    {"world_size": trainer.world_size, "max_difference": self.max_difference}
                )
            )
        bad = [n for n, d in zip(names, difference.tolist()) if d > self.tolerance]
        if bad:
            raise RuntimeError(
                f"DDP processes hold different weights after epoch {trainer.current_epoch}: "
                f"{', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}"
            )
