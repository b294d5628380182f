"""Finished runs on disk, from CSV logs and W&B run folders, as one list of results.

* A CSV run is a folder with ``metrics.csv`` and the ``config.yaml`` the ``vapl`` command writes
  next to it (the config says the method, data set and seed: :mod:`vapl.training.run_names`). It is finished
  when ``metrics.csv`` holds test metrics.
* A W&B run is a ``wandb/offline-run-*`` (or ``run-*``) folder (:mod:`vapl.training.wandb_records`); its
  config holds the same resolved config. It is finished when it ended with exit code 0 and has
  test metrics in its summary.

``vapl fit-test --config logger/wandb.yaml`` writes both for the same run; runs with the same
method, data set and seed count once (the most recent). Which checkpoint a run's test metrics
come from (``vapl fit-test`` tests the best validation epoch) is read from the run folder's
``tested_checkpoint.json`` or the W&B config's ``tested_checkpoint``.
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vapl.training.fit_then_test import TESTED_CHECKPOINT
from vapl.training.run_names import RunIdentity, identity_from_config
from vapl.training.wandb_records import WandbRecordError, find_wandb_runs, read_wandb_run


@dataclass
class RunResult:
    """The metrics of one finished run: ``metrics`` maps logged keys (``test/prompted/acc``,
    ``val/unprompted/f1``, ...) to their last value, ``best_val`` validation keys to their best;
    ``checkpoint`` says which weights were tested (``None``: not recorded)."""

    identity: RunIdentity
    source: str
    path: Path
    metrics: dict[str, float]
    best_val: dict[str, float]
    modified: float
    checkpoint: dict[str, Any] | None = None

    @property
    def checkpoint_label(self) -> str:
        return describe_checkpoint(self.checkpoint)

    def split_metrics(self, split: str = "test") -> dict[str, float]:
        return {k: v for k, v in self.metrics.items() if k.startswith(f"{split}/")}


def describe_checkpoint(checkpoint: dict[str, Any] | None) -> str:
    """``best val epoch 7 (val/prompted/acc 0.9400)``, ``last epoch`` or ``not recorded``."""
    if not checkpoint:
        return "not recorded"
    if checkpoint.get("checkpoint") != "best":
        return "last epoch"
    epoch = checkpoint.get("epoch")
    text = "best val epoch" + ("" if epoch is None else f" {epoch}")
    monitor, score = checkpoint.get("monitor"), checkpoint.get("score")
    if monitor and score is not None:
        text += f" ({monitor} {float(score):.4f})"
    return text


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def read_metrics_csv(path: Path) -> tuple[dict[str, float], dict[str, float]]:
    """Last value and best value (max; min for losses) of every column of a ``metrics.csv``."""
    last: dict[str, float] = {}
    best: dict[str, float] = {}
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            for key, text in row.items():
                value = _number(text) if key else None
                if value is None:
                    continue
                last[key] = value
                if key.startswith("val/"):
                    old = best.get(key)
                    lower = "loss" in key
                    if old is None or (value < old if lower else value > old):
                        best[key] = value
    return last, best


def read_csv_run(folder: Path) -> RunResult | None:
    """The run in ``folder`` (``metrics.csv`` + ``config.yaml``), or None if it has no test metrics."""
    config_path = folder / "config.yaml"
    if not config_path.is_file():
        warnings.warn(f"{folder}: metrics.csv without config.yaml; skipped", stacklevel=2)
        return None
    identity = identity_from_config(yaml.safe_load(config_path.read_text()))
    metrics, best = read_metrics_csv(folder / "metrics.csv")
    if not any(k.startswith("test/") for k in metrics):
        return None
    modified = (folder / "metrics.csv").stat().st_mtime
    return RunResult(identity, "csv", folder, metrics, best, modified, _tested_checkpoint(folder))


def _tested_checkpoint(folder: Path) -> dict[str, Any] | None:
    path = folder / TESTED_CHECKPOINT
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def read_wandb_result(folder: Path) -> RunResult | None:
    """The W&B run in ``folder``, or None if it did not finish or has no vapl config/test metrics."""
    try:
        run = read_wandb_run(folder)
    except WandbRecordError as error:
        warnings.warn(str(error), stacklevel=2)
        return None
    config = run.config.get("config")
    if not run.finished or not isinstance(config, dict):
        return None
    scalars = run.scalars()
    metrics = {k: v for k, v in scalars.items() if not k.startswith("best/")}
    best = {k[len("best/") :]: v for k, v in scalars.items() if k.startswith("best/")}
    if not any(k.startswith("test/") for k in metrics):
        return None
    modified = max(p.stat().st_mtime for p in folder.glob("run-*.wandb"))
    checkpoint = run.config.get("tested_checkpoint")
    return RunResult(
        identity_from_config(config),
        "wandb",
        folder,
        metrics,
        best,
        modified,
        checkpoint if isinstance(checkpoint, dict) else None,
    )


def collect_runs(roots: list[str | Path], deduplicate: bool = True) -> list[RunResult]:
    """Every finished run under ``roots``; with ``deduplicate``, one per (method, data set, seed):
    the most recently written."""
    results: list[RunResult] = []
    for root in map(Path, roots):
        for metrics_csv in sorted(root.rglob("metrics.csv")):
            result = read_csv_run(metrics_csv.parent)
            if result is not None:
                results.append(result)
        for folder in find_wandb_runs(root):
            result = read_wandb_result(folder)
            if result is not None:
                results.append(result)
    if not deduplicate:
        return results
    newest: dict[RunIdentity, RunResult] = {}
    for result in results:
        kept = newest.get(result.identity)
        if kept is None or result.modified > kept.modified:
            newest[result.identity] = result
    return sorted(
        newest.values(), key=lambda r: (r.identity.dataset, r.identity.method, str(r.identity.seed))
    )
