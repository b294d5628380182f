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

A data set or method may instead be a mapping (the results grid, ``configs/benchmark/results.yaml``,
uses every key):

    datasets:
      decoy_mnist:
        label: DecoyMNIST           # its name on the results page
        configs: [decoy_mnist.yaml]
        overrides: ["--data.init_args.root={data}/mnist"]   # {data}: OUTPUT/data
    methods:
      CRAYON:
        label: CRAYON (oracle answers)
        configs: [methods/crayon.yaml]
        role: guided                # reference, vapl, ablation, guided, stage (in no table)
        start_from: CRAYON-original # a method of the grid: its run of the same data set and seed
        crayon: true                # ... is exported and answered by the oracle first
      CRAYON-original: {configs: [methods/baseline.yaml], role: stage}
    prepare:                        # generators run once into OUTPUT/data/NAME ({out})
      mnist: {module: datamodules.fixtures_natural, args: [mnist, "{out}"]}

A run's own overrides (the data set's, then the method's) come before the grid's ``overrides``.
``--launch inprocess`` runs every cell in this process (``--workers K``: K processes of one thread
each), which saves the seconds of importing torch per run; see :mod:`vapl.results.launch`.

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
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vapl.results.runs import collect_runs
from vapl.training.configs import resolve_config
from vapl.training.help import PlainDescriptionFormatter


@dataclass(frozen=True)
class GridRun:
    """One cell of the grid. ``overrides``: the data set's and the method's own; ``start_from``:
    the cell (same data set and seed) this one starts from; ``crayon``: export that cell's
    Grad-CAMs and answer them with the oracle before this one runs (CRAYON)."""

    dataset: str
    method: str
    seed: int
    configs: tuple[str, ...]
    folder: Path
    overrides: tuple[str, ...] = ()
    start_from: GridRun | None = None
    crayon: bool = False


@dataclass(frozen=True)
class Entry:
    """A data set or method of a grid file: its configs, overrides and page settings."""

    name: str
    configs: tuple[str, ...]
    overrides: tuple[str, ...] = ()
    label: str = ""
    role: str = "method"
    start_from: str | None = None
    crayon: bool = False
    shortcut: bool = False

    @property
    def title(self) -> str:
        return self.label or self.name


#: What a method is on the results page: ``reference`` (the Baseline), ``vapl``, ``ablation``
#: (VAPL-1 to VAPL-4), ``guided`` (an attention-guided baseline), ``stage`` (a run other cells
#: start from, in no table); ``method`` is any other.
ROLES = ("reference", "vapl", "ablation", "guided", "stage", "method")
ENTRY_KEYS = {"configs", "overrides", "label", "role", "start_from", "crayon", "shortcut"}


def _entries(section: Any, what: str, source: Path, data: Path) -> dict[str, Entry]:
    """A ``datasets`` or ``methods`` section: name -> list of configs, or name -> mapping."""
    if not isinstance(section, dict) or not section:
        raise ValueError(f"{source}: '{what}' must map names to lists of configs")
    out = {}
    for name, value in section.items():
        spec = value if isinstance(value, dict) else {"configs": value}
        unknown = set(spec) - ENTRY_KEYS
        if unknown:
            raise ValueError(
                f"{source}: {what}.{name} has unknown keys {sorted(unknown)}; "
                f"known: {sorted(ENTRY_KEYS)}"
            )
        configs = spec.get("configs")
        configs = [configs] if isinstance(configs, str) else list(configs or [])
        out[str(name)] = Entry(
            name=str(name),
            configs=tuple(resolve_config(c) for c in configs),
            overrides=tuple(
                str(o).replace("{data}", str(data)) for o in spec.get("overrides") or []
            ),
            label=str(spec.get("label") or ""),
            role=str(spec.get("role", "method")),
            start_from=spec.get("start_from"),
            crayon=bool(spec.get("crayon", False)),
            shortcut=bool(spec.get("shortcut", False)),
        )
        if out[str(name)].role not in ROLES:
            raise ValueError(
                f"{source}: {what}.{name}.role is one of {ROLES}, got {spec['role']!r}"
            )
    return out


def _names_to_configs(section: Any, what: str, source: Path) -> dict[str, list[str]]:
    """Name -> resolved configs of a section (overrides and page settings left out)."""
    entries = _entries(section, what, source, Path("data"))
    return {name: list(entry.configs) for name, entry in entries.items()}


def load_grid(
    path: str | Path, output: str | Path | None = None
) -> tuple[list[GridRun], dict[str, Any]]:
    """The runs of a grid file, in order data set, method, seed; and the file's settings."""
    path = Path(resolve_config(str(path)))
    spec = yaml.safe_load(path.read_text()) or {}
    root = Path(output or spec.get("output") or "runs/benchmark")
    data = root / "data"
    datasets = _entries(spec.get("datasets"), "datasets", path, data)
    methods = _entries(spec.get("methods"), "methods", path, data)
    for method in methods.values():
        if method.start_from is not None and method.start_from not in methods:
            raise ValueError(
                f"{path}: methods.{method.name}.start_from names {method.start_from!r}, "
                f"which is not a method of the grid ({', '.join(methods)})"
            )
    extra = tuple(resolve_config(c) for c in spec.get("configs") or [])
    seeds = [int(s) for s in spec.get("seeds") or [0]]
    runs: list[GridRun] = []
    cells: dict[tuple[str, str, int], GridRun] = {}

    def cell(d: Entry, m: Entry, s: int) -> GridRun:
        if (d.name, m.name, s) not in cells:
            source = cell(d, methods[m.start_from], s) if m.start_from else None
            cells[d.name, m.name, s] = GridRun(
                d.name,
                m.name,
                s,
                (*d.configs, *m.configs, *extra),
                root / d.name / m.name / f"seed{s}",
                (*d.overrides, *m.overrides),
                source,
                m.crayon,
            )
        return cells[d.name, m.name, s]

    for d in datasets.values():
        for m in methods.values():
            for s in seeds:
                runs.append(cell(d, m, s))
    settings = {
        "output": root,
        "overrides": [str(o) for o in spec.get("overrides") or []],
        "wandb": bool(spec.get("wandb", False)),
        "seeds": seeds,
        "datasets": datasets,
        "methods": methods,
        "prepare": spec.get("prepare") or {},
        "sensitivity": spec.get("sensitivity"),
        "page": spec.get("page"),
        "images": spec.get("images"),
        "analysis": spec.get("analysis"),
        "readme": spec.get("readme"),
        "budget_note": str(spec.get("budget_note") or ""),
        "source": path,
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
    return args + list(run.overrides) + start_overrides(run) + overrides


def start_overrides(run: GridRun) -> list[str]:
    """The overrides that point a run at the cell it starts from (CRAYON: answers, weights)."""
    if run.start_from is None or not run.crayon:
        return []
    from vapl.results.stages import crayon_overrides

    return crayon_overrides(run.start_from)


def is_finished(run: GridRun) -> bool:
    return run.folder.is_dir() and bool(collect_runs([run.folder]))


def select(
    runs: list[GridRun],
    settings: dict[str, Any],
    datasets: list[str] | None = None,
    methods: list[str] | None = None,
    seeds: list[int] | None = None,
) -> list[GridRun]:
    """The cells of the named data sets, methods (with the methods they start from) and seeds;
    ``settings`` is narrowed to match (a sensitivity study outside the selection is dropped)."""
    for given, known, what in (
        (datasets, settings["datasets"], "data set"),
        (methods, settings["methods"], "method"),
    ):
        unknown = sorted(set(given or []) - set(known))
        if unknown:
            raise SystemExit(
                f"vapl benchmark: no {what} {unknown} in the grid ({', '.join(known)})"
            )
    if methods is not None:
        methods = list(methods)
        for name in methods:
            source = settings["methods"][name].start_from
            if source is not None and source not in methods:
                methods.append(source)
    kept = [
        r
        for r in runs
        if (datasets is None or r.dataset in datasets)
        and (methods is None or r.method in methods)
        and (seeds is None or r.seed in seeds)
    ]
    settings["datasets"] = {
        k: v for k, v in settings["datasets"].items() if datasets is None or k in datasets
    }
    settings["methods"] = {
        k: v for k, v in settings["methods"].items() if methods is None or k in methods
    }
    settings["seeds"] = [s for s in settings["seeds"] if seeds is None or s in seeds]
    data = str(Path(settings["output"]) / "data")
    used = " ".join(o for d in settings["datasets"].values() for o in d.overrides)
    settings["prepare"] = {
        name: spec for name, spec in settings["prepare"].items() if f"{data}/{name}" in used
    }
    study = settings.get("sensitivity")
    if study and not any(
        (r.dataset, r.method, r.seed) == (study["dataset"], study["method"], study.get("seed", 0))
        for r in kept
    ):
        settings["sensitivity"] = None
    return kept


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="vapl benchmark",
        description=__doc__,
        formatter_class=PlainDescriptionFormatter,
    )
    parser.add_argument(
        "--config", "-c", required=True, help="grid file (e.g. benchmark/demo.yaml)"
    )
    parser.add_argument("--out", default=None, help="output folder (default: the grid's output)")
    parser.add_argument("--launch", choices=("local", "inprocess", "print"), default="local")
    parser.add_argument(
        "--workers", type=int, default=1, help="runs at a time (inprocess: worker processes)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads per run (default: 1)"
    )
    parser.add_argument("--fail-fast", action="store_true", help="stop at the first failed run")
    parser.add_argument(
        "--page", default=None, help="write the results page here (default: the grid's page)"
    )
    parser.add_argument("--trial", default=None, help="mark the page as a trial, with this note")
    parser.add_argument("--datasets", nargs="+", default=None, help="run only these data sets")
    parser.add_argument(
        "--methods", nargs="+", default=None, help="only these methods (and what they start from)"
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="only these seeds")
    parser.add_argument("--no-sensitivity", action="store_true", help="skip the sensitivity runs")
    parser.add_argument("overrides", nargs="*", help="extra overrides for every run (after --)")
    options = parser.parse_args(argv)
    started = time.perf_counter()
    runs, settings = load_grid(options.config, options.out)
    runs = select(runs, settings, options.datasets, options.methods, options.seeds)
    if options.no_sensitivity:
        settings["sensitivity"] = None
    from vapl.results.sensitivity import sensitivity_runs
    from vapl.results.stages import export_commands, prepare_data

    study, study_info = sensitivity_runs(settings, runs)
    overrides = [*settings["overrides"], *options.overrides]
    prepare_data(settings["prepare"], settings["output"] / "data")
    everything = [*runs, *study]
    todo = [run for run in everything if not is_finished(run)]
    for run in todo:
        run.folder.mkdir(parents=True, exist_ok=True)
        (run.folder / "run.yaml").write_text(yaml.safe_dump(run_config(run, settings["wandb"])))
    if options.launch == "print":  # a CRAYON cell once its source finished, after its export
        exported: set[GridRun] = set()
        later = [r for r in todo if r.start_from is not None and not is_finished(r.start_from)]
        for run in todo:
            if run in later:
                continue
            source = run.start_from
            if source is not None and run.crayon and source not in exported:
                exported.add(source)
                for line in export_commands(source, overrides):
                    print(shlex.join(line))
            print(shlex.join(command(run, overrides)))
        if later:
            print(
                f"# {len(later)} runs start from runs above: run --launch print again once "
                "those have finished",
                file=sys.stderr,
            )
        return
    from vapl.results.launch import execute

    print(
        f"{len(everything)} runs in the grid, {len(everything) - len(todo)} already finished.",
        flush=True,
    )
    threads = options.threads or 1
    outcomes = execute(
        everything,
        overrides,
        options.launch,
        options.workers,
        threads,
        options.fail_fast,
        settings["wandb"],
    )
    failed = [o.run for o in outcomes if o.code]
    from vapl.results.report import main as report

    table_folders = [
        str(r.folder)
        for r in runs
        if settings["methods"][r.method].role != "stage" and r.folder.is_dir()
    ]
    if table_folders:
        report([*table_folders, "--out", str(settings["output"] / "report")])
    page = options.page or settings["page"]
    if page:
        from vapl.results.page import write_page, write_run_info

        if options.trial is not None:
            settings.update(trial=True, note=options.trial)
        launch = {"launch": options.launch, "workers": options.workers, "threads": threads}
        write_run_info(settings, runs, study_info, launch, time.perf_counter() - started)
        path = write_page(
            settings["output"],
            page,
            settings.get("images"),
            settings.get("analysis"),
            settings.get("readme"),
        )
        print(f"results page: {path}")
    if failed:
        raise SystemExit(
            f"vapl benchmark: {len(failed)} runs failed: "
            + ", ".join(str(r.folder) for r in failed)
        )


if __name__ == "__main__":
    main()
