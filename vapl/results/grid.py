"""``vapl benchmark --config GRID.yaml``: methods x data sets x seeds, then the comparison tables.

A grid file (``configs/benchmark/demo.yaml`` is one) names the configs of each data set and method:

    output: runs/benchmark          # one folder per run: OUTPUT/DATASET/METHOD/seedS
    seeds: [0, 1, 2]
    datasets:
      demo: [demo.yaml]             # configs composed first, in order
    methods:
      VAPL: [methods/vapl.yaml]     # composed after the data set's
      Baseline: [methods/baseline.yaml]
    configs: []                     # composed after the method's, e.g. [trainer/ddp.yaml]
    overrides: []                   # command-line overrides, e.g. [--trainer.max_epochs=20]
    wandb: false                    # true: also log each run to W&B (offline unless logged in)

Each run is ``vapl fit-test`` on those configs plus a generated ``run.yaml`` in its folder (seed,
folder, loggers). A run whose folder already holds a finished run (test metrics) is skipped, so
an interrupted benchmark picks up where it stopped. ``--launch local`` (default) runs them one
after another in subprocesses, with each run's output in ``OUTPUT/.../log.txt``, and then writes
the report (``vapl report OUTPUT``). ``--launch print`` only prints one command per run, for a job
array (SLURM, GNU parallel); run ``vapl report OUTPUT`` when they are done.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vapl.results.runs import collect_runs
from vapl.training.configs import resolve_config


@dataclass(frozen=True)
class GridRun:
    """One cell of the grid."""

    dataset: str
    method: str
    seed: int
    configs: tuple[str, ...]
    folder: Path


def _names_to_configs(section: Any, what: str, source: Path) -> dict[str, list[str]]:
    if not isinstance(section, dict) or not section:
        raise ValueError(f"{source}: '{what}' must map names to lists of configs")
    out = {}
    for name, configs in section.items():
        configs = [configs] if isinstance(configs, str) else list(configs or [])
        out[str(name)] = [resolve_config(c) for c in configs]
    return out


def load_grid(
    path: str | Path, output: str | Path | None = None
) -> tuple[list[GridRun], dict[str, Any]]:
    """The runs of a grid file, in order data set, method, seed; and the file's settings."""
    path = Path(resolve_config(str(path)))
    spec = yaml.safe_load(path.read_text()) or {}
    datasets = _names_to_configs(spec.get("datasets"), "datasets", path)
    methods = _names_to_configs(spec.get("methods"), "methods", path)
    extra = [resolve_config(c) for c in spec.get("configs") or []]
    seeds = [int(s) for s in spec.get("seeds") or [0]]
    root = Path(output or spec.get("output") or "runs/benchmark")
    runs = [
        GridRun(d, m, s, (*d_configs, *m_configs, *extra), root / d / m / f"seed{s}")
        for d, d_configs in datasets.items()
        for m, m_configs in methods.items()
        for s in seeds
    ]
    settings = {
        "output": root,
        "overrides": [str(o) for o in spec.get("overrides") or []],
        "wandb": bool(spec.get("wandb", False)),
    }
    return runs, settings


def run_config(run: GridRun, wandb: bool) -> dict[str, Any]:
    """The generated ``run.yaml``: seed, folder and loggers of one run."""
    loggers: list[dict[str, Any]] = [
        {
            "class_path": "lightning.pytorch.loggers.CSVLogger",
            "init_args": {"save_dir": str(run.folder), "name": ""},
        }
    ]
    if wandb:
        loggers.append(
            {
                "class_path": "vapl.training.loggers.WandbRunLogger",
                "init_args": {"save_dir": str(run.folder)},
            }
        )
    return {
        "seed_everything": run.seed,
        "trainer": {"default_root_dir": str(run.folder), "logger": loggers},
    }


def command(run: GridRun, overrides: list[str]) -> list[str]:
    """The ``vapl fit-test`` command line of a run (its ``run.yaml`` comes last)."""
    args = [sys.executable, "-m", "vapl", "fit-test"]
    for config in (*run.configs, str(run.folder / "run.yaml")):
        args += ["--config", config]
    return args + overrides


def is_finished(run: GridRun) -> bool:
    return run.folder.is_dir() and bool(collect_runs([run.folder]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="vapl benchmark",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config", "-c", required=True, help="grid file (e.g. benchmark/demo.yaml)"
    )
    parser.add_argument("--out", default=None, help="output folder (default: the grid's output)")
    parser.add_argument("--launch", choices=("local", "print"), default="local")
    parser.add_argument("--fail-fast", action="store_true", help="stop at the first failed run")
    parser.add_argument("overrides", nargs="*", help="extra overrides for every run (after --)")
    options = parser.parse_args(argv)
    runs, settings = load_grid(options.config, options.out)
    overrides = [*settings["overrides"], *options.overrides]
    todo = [run for run in runs if not is_finished(run)]
    for run in todo:
        run.folder.mkdir(parents=True, exist_ok=True)
        (run.folder / "run.yaml").write_text(yaml.safe_dump(run_config(run, settings["wandb"])))
    if options.launch == "print":
        for run in todo:
            print(shlex.join(command(run, overrides)))
        return
    from vapl.core.progress import progress

    print(f"{len(runs)} runs in the grid, {len(runs) - len(todo)} already finished.", flush=True)
    failed = []
    bar = progress(todo, desc="benchmark", unit="run")
    for run in bar:
        bar.set_postfix_str(f"{run.dataset} {run.method} seed {run.seed}")
        start = time.perf_counter()
        with (run.folder / "log.txt").open("w") as log:
            code = subprocess.run(
                command(run, overrides), stdout=log, stderr=subprocess.STDOUT
            ).returncode
        if code != 0:
            failed.append(run)
            tail = (run.folder / "log.txt").read_text().splitlines()[-15:]
            bar.write(
                f"FAILED ({code}): {run.folder} after {time.perf_counter() - start:.0f} s\n"
                + "\n".join(tail)
            )
            if options.fail_fast:
                break
    from vapl.results.report import main as report

    report([str(settings["output"])])
    if failed:
        raise SystemExit(
            f"vapl benchmark: {len(failed)} runs failed: "
            + ", ".join(str(r.folder) for r in failed)
        )


if __name__ == "__main__":
    main()
