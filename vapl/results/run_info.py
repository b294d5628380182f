"""``OUTPUT/run_info.json`` (what the results page needs besides the run folders: settings, cells,
commit, wall time) and what the page reads from each run folder: its config, epochs, checkpoints
and timing."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from vapl.results.tables import Cell

RUN_INFO = "run_info.json"


def run_config(folder: Path) -> dict[str, Any]:
    found = sorted(folder.rglob("config.yaml"))
    return yaml.safe_load(found[0].read_text()) if found else {}


def _epochs_run(folder: Path) -> int | None:
    """Epochs with training metrics in the run's ``metrics.csv`` (the trainer's epochs)."""
    import csv

    epochs = set()
    for path in folder.rglob("metrics.csv"):
        with path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                if row.get("epoch") and any(k.startswith("train/") and v for k, v in row.items()):
                    epochs.add(int(float(row["epoch"])))
    return len(epochs) or None


def _checkpoint_names(folder: Path) -> str:
    names = sorted(p.name for p in folder.rglob("*.ckpt") if "crayon" not in p.parts)
    return ", ".join(names) if names else "final weights (no checkpoint)"


def budget_table(cells: Sequence[Cell], methods: Sequence[dict], dataset: str) -> str:
    """Per method on one data set (first seed): the trainer's budget and what was tested."""
    lines = [
        "| Method | max_epochs | limit_train_batches | epochs logged | starts from | tested |",
        "|---|---:|---:|---:|---|---|",
    ]
    for method in methods:
        cell = next(
            (c for c in cells if (c.dataset, c.method) == (dataset, method["name"]) and c.result),
            None,
        )
        if cell is None:
            continue
        trainer = run_config(cell.folder).get("trainer") or {}
        lines.append(
            f"| {method['title']} | {trainer.get('max_epochs', '-')} | "
            f"{trainer.get('limit_train_batches') or 1.0} | {_epochs_run(cell.folder) or '-'} | "
            f"{method.get('start_from') or '-'} | {_checkpoint_names(cell.folder)} |"
        )
    return "\n".join(lines)


def timing(cells: Sequence[Cell], extra: Sequence[Path]) -> tuple[float, float, dict[str, float]]:
    """Total wall and CPU seconds of the runs (``timing.json`` of each folder) and CPU seconds
    per method."""
    wall = cpu = 0.0
    per_method: dict[str, float] = {}
    folders = [(c.folder, c.method) for c in cells] + [(f, "sensitivity") for f in extra]
    for folder, method in folders:
        path = folder / "timing.json"
        if path.is_file():
            values = json.loads(path.read_text())
            wall += values.get("wall_s", 0.0)
            cpu += values.get("cpu_s", 0.0)
            per_method[method] = per_method.get(method, 0.0) + values.get("cpu_s", 0.0)
    return wall, cpu, per_method


def _git(*args: str) -> str:
    import subprocess

    try:
        return subprocess.run(
            ["git", *args], capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _entry_info(entry: Any, output: Path) -> dict[str, Any]:
    return {
        "name": entry.name,
        "title": entry.title,
        "configs": [_short_config(c) for c in entry.configs],
        "overrides": [o.replace(str(output), "OUTPUT") for o in entry.overrides],
        "role": entry.role,
        "start_from": entry.start_from,
        "crayon": entry.crayon,
        "shortcut": entry.shortcut,
    }


def _short_config(path: str) -> str:
    from vapl.training.configs import bundled_config_dir

    try:
        return str(Path(path).resolve().relative_to(bundled_config_dir().resolve()))
    except ValueError:
        return path


def write_run_info(
    settings: dict[str, Any],
    runs: Sequence[Any],
    sensitivity: dict[str, Any],
    launch: dict[str, Any],
    wall_s: float,
) -> Path:
    """``OUTPUT/run_info.json``: what the page needs besides the run folders (paths relative to
    OUTPUT; the wall time adds up over the calls of ``vapl benchmark`` on the same output)."""
    import datetime
    import os
    import platform

    import torch

    output = Path(settings["output"])
    path = output / RUN_INFO
    previous = json.loads(path.read_text()) if path.is_file() else {}
    datasets = {name: _entry_info(e, output) for name, e in settings["datasets"].items()}
    if sensitivity:
        sensitivity = {
            **sensitivity,
            "dataset_title": datasets[sensitivity["dataset"]]["title"],
            "base": relative_path(Path(sensitivity["base"]), output),
            "points": [
                {**p, "folder": relative_path(Path(p["folder"]), output)}
                for p in sensitivity["points"]
            ],
        }
    info = {
        "grid": _short_config(str(settings["source"])),
        "output": str(output),
        "commit": _git("rev-parse", "HEAD") or "unknown",
        "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "finished": datetime.datetime.now().isoformat(timespec="seconds"),
        "wall_s": round(wall_s, 1),
        "wall_s_total": round(previous.get("wall_s_total", 0.0) + wall_s, 1),
        "machine": f"{os.cpu_count()} CPUs, {platform.platform()}, torch {torch.__version__}",
        **launch,
        "seeds": settings["seeds"],
        "overrides": settings["overrides"],
        "budget_note": settings.get("budget_note", ""),
        "trial": bool(settings.get("trial")),
        "note": settings.get("note", ""),
        "datasets": list(datasets.values()),
        "methods": [_entry_info(e, output) for e in settings["methods"].values()],
        "cells": [
            {
                "dataset": r.dataset,
                "method": r.method,
                "seed": r.seed,
                "folder": relative_path(r.folder, output),
            }
            for r in runs
        ],
        "sensitivity": sensitivity,
    }
    output.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info, indent=1) + "\n")
    return path


def relative_path(path: Path, start: Path) -> str:
    import os

    return os.path.relpath(path.resolve(), start.resolve())
