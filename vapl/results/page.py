"""``vapl results-page OUTPUT``: docs/results.md from a finished results grid, never by hand.

Reads only the grid's run folders and the ``run_info.json`` that ``vapl benchmark`` writes next to
them (settings, cells, commit, wall time), and writes the page and its figures:

* per data set, the paper's table in kind with prompts and without (accuracy, precision, recall,
  F1; mean ± std over seeds, best bold, second underlined; a method with one model has the same row
  in both), explanation IoU and pointing game per method, a bar chart;
* the ablation table (VAPL-1 to VAPL-4 against VAPL, prompted), the sensitivity figure, the goals
  of issue #13 checked against the numbers, the budget (epochs and tested checkpoints read from
  each run's config and files), the wall and CPU time, the commit;
* the text of the grid's ``analysis`` file, written by a person after reading the numbers.

``--readme README.md`` also replaces the README's headline table between the markers
``<!-- results-table:begin -->`` and ``<!-- results-table:end -->``.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vapl.core.metrics import METRIC_NAMES
from vapl.results.report import Row, bar_chart, markdown_table
from vapl.results.runs import RunResult, collect_runs
from vapl.results.sensitivity import SYMBOLS, configured_value, sensitivity_figure
from vapl.training.help import PlainDescriptionFormatter

RUN_INFO = "run_info.json"
EXPLANATION_METRICS = ("iou", "pointing")
README_BEGIN = "<!-- results-table:begin -->"
README_END = "<!-- results-table:end -->"


@dataclass
class Cell:
    """One run of the grid as the run-info file lists it, with its result (None: not finished)."""

    dataset: str
    method: str
    seed: int
    folder: Path
    result: RunResult | None

    def metrics(self, head: str, split: str = "test") -> dict[str, float]:
        """``metric -> value`` of one head; a single-model run answers every head with its one."""
        if self.result is None:
            return {}
        values = self.result.split_metrics(split)
        own = {k.split("/")[2]: v for k, v in values.items() if k.startswith(f"{split}/{head}/")}
        if own or head != "prompted":
            return own
        return self.metrics("unprompted", split)


def load_cells(output: Path, info: dict[str, Any]) -> list[Cell]:
    """The grid's cells with their results, each read from its own folder only."""
    cells = []
    for entry in info["cells"]:
        folder = output / entry["folder"]
        found = collect_runs([folder]) if folder.is_dir() else []
        cells.append(
            Cell(
                entry["dataset"],
                entry["method"],
                int(entry["seed"]),
                folder,
                next(iter(found), None),
            )
        )
    return cells


# ----- tables -------------------------------------------------------------------------------------
def rows_for(
    cells: Sequence[Cell], dataset: str, methods: Sequence[dict], head: str, metrics=METRIC_NAMES
) -> list[Row]:
    """One row per method (in the grid's order) of ``head``'s test metrics over seeds."""
    rows = []
    for method in methods:
        row = Row(method["title"], method["name"], head)
        for cell in cells:
            if (cell.dataset, cell.method) != (dataset, method["name"]) or cell.result is None:
                continue
            values = cell.metrics(head)
            if not any(m in values for m in metrics):
                continue
            row.seeds.append(cell.seed)
            for metric in metrics:
                if metric in values:
                    row.values[metric].append(values[metric])
        if row.seeds:
            rows.append(row)
    return rows


def mean_of(rows: Sequence[Row], method: str, metric: str = "acc") -> float | None:
    for row in rows:
        if row.method == method:
            summary = row.mean_std(metric)
            return None if summary is None else summary[0]
    return None


def explanation_table(cells: Sequence[Cell], dataset: str, methods: Sequence[dict]) -> str | None:
    """IoU and pointing game of each method's Grad-CAM (VAPL: both heads), mean ± std."""
    lines = []
    for method in methods:
        two = _has_two_heads(cells, dataset, method["name"])
        for head in ("prompted", "unprompted") if two else ("unprompted",):
            for row in rows_for(cells, dataset, [method], head, EXPLANATION_METRICS):
                row.label = f"{row.label} ({head})" if two else row.label
                lines.append(row)
    if not lines:
        return None
    return markdown_table(lines, EXPLANATION_METRICS).replace(
        "| iou | pointing |", "| IoU | Pointing game |"
    )


def _has_two_heads(cells: Sequence[Cell], dataset: str, method: str) -> bool:
    for c in cells:
        if (c.dataset, c.method) == (dataset, method) and c.result is not None:
            return any(k.startswith("test/prompted/") for k in c.result.metrics)
    return False


def _points(difference: float) -> float:
    """A difference of accuracies in points, as the page shows it (one decimal)."""
    return round(100 * difference, 1)


# ----- goals --------------------------------------------------------------------------------------
def goals(
    tables: dict[str, dict[str, list[Row]]],
    datasets: Sequence[dict],
    methods: Sequence[dict],
) -> list[str]:
    """Issue #13's goals against the measured mean test accuracies, as Markdown lines."""
    by_role: dict[str, list[str]] = {}
    for method in methods:
        by_role.setdefault(method["role"], []).append(method["name"])
    vapl = (by_role.get("vapl") or [None])[0]
    reference = (by_role.get("reference") or [None])[0]
    lines = []
    if vapl is None or reference is None:
        return ["(the grid names no `vapl` or no `reference` method: goals not checked)"]

    def pts(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:+.1f}"

    shortcut = [d for d in datasets if d.get("shortcut")]
    results = []
    for d in shortcut:
        base = mean_of(tables[d["name"]]["unprompted"], reference)
        prompted = mean_of(tables[d["name"]]["prompted"], vapl)
        unprompted = mean_of(tables[d["name"]]["unprompted"], vapl)
        if None in (base, prompted, unprompted):
            results.append(f"{d['title']}: not measured")
            continue
        ok = _points(prompted - base) >= 10 and _points(unprompted - base) >= 5
        results.append(
            f"{d['title']}: prompted {pts(prompted - base)}, unprompted {pts(unprompted - base)} "
            f"points ({'met' if ok else 'missed'})"
        )
    met = all(r.endswith("(met)") for r in results) and bool(results)
    lines.append(
        f"- **{'Met' if met else 'Missed'}**: on every data set with a shortcut, VAPL prompted "
        ">= Baseline + 10 points and VAPL unprompted >= Baseline + 5 points (accuracy). "
        + ("; ".join(results) if results else "No data set is marked as having a shortcut.")
    )
    guided = by_role.get("guided", [])
    wins, details = 0, []
    for d in datasets:
        table = tables[d["name"]]["prompted"]
        ours = mean_of(table, vapl)
        theirs = [(mean_of(table, m), m) for m in guided]
        theirs = [(v, m) for v, m in theirs if v is not None]
        if ours is None or not theirs:
            continue
        best, name = max(theirs)
        win = round(ours, 3) >= round(best, 3)
        wins += win
        details.append(f"{d['title']} {pts(ours - best)} vs {name}")
    needed = min(4, len(datasets))
    lines.append(
        f"- **{'Met' if wins >= needed else 'Missed'}**: with prompts, VAPL >= every "
        f"attention-guided baseline on at least {needed} of {len(datasets)} data sets "
        f"(issue: four of six). VAPL leads on {wins} of {len(details)}: "
        + "; ".join(details)
        + " (VAPL minus the best guided baseline, accuracy points)."
    )
    ablation_parts, all_cost = [], True
    for method in by_role.get("ablation", []):
        costs = []
        for d in datasets:
            table = tables[d["name"]]["prompted"]
            full, ablated = mean_of(table, vapl), mean_of(table, method)
            if full is not None and ablated is not None:
                costs.append((full - ablated, d["title"]))
        if not costs:
            continue
        cost, where = max(costs)
        all_cost &= _points(cost) >= 1
        ablation_parts.append(f"{method} {pts(cost)} on {where}")
    if ablation_parts:
        lines.append(
            f"- **{'Met' if all_cost else 'Missed'}**: each ablation costs at least one point "
            "against full VAPL (prompted accuracy) on at least one data set. Largest cost: "
            + "; ".join(ablation_parts)
            + "."
        )
    return lines


# ----- budget and time ----------------------------------------------------------------------------
def _config(folder: Path) -> dict[str, Any]:
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
        trainer = _config(cell.folder).get("trainer") or {}
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


# ----- sensitivity --------------------------------------------------------------------------------
def sensitivity_section(info: dict[str, Any], output: Path, images: Path, link: str) -> list[str]:
    spec = info.get("sensitivity") or {}
    if not spec.get("points"):
        return []
    base_folder = output / spec["base"]
    base = next(iter(collect_runs([base_folder])), None) if base_folder.is_dir() else None
    base_config = _config(base_folder) if base else {}
    curves: dict[str, list[tuple[float, dict[str, float], bool]]] = {}
    for point in spec["points"]:
        folder = output / point["folder"]
        found = next(iter(collect_runs([folder])), None) if folder.is_dir() else None
        if found is None:
            continue
        accuracy = _head_accuracy(found)
        curves.setdefault(point["parameter"], []).append((float(point["value"]), accuracy, False))
    for parameter in list(curves):
        value = configured_value(base_config, parameter)
        if base is not None and value is not None:
            curves[parameter].append((value, _head_accuracy(base), True))
    if not curves:
        return ["## Sensitivity", "", "(no sensitivity run has finished)"]
    title = f"{spec['method']} on {spec['dataset_title']}, seed {spec['seed']}"
    sensitivity_figure(curves, images / "sensitivity.png", title)
    lines = [
        "## Sensitivity (the paper's Figure 4 in kind)",
        "",
        f"Test accuracy of {title}, one setting changed at a time; the star is the grid's own run "
        "(the configured value). One seed: the spread over seeds of that run is in the tables above.",
        "",
        f"![sensitivity]({link}/sensitivity.png)",
        "",
        "| Setting | Value | Prompted | Unprompted |",
        "|---|---:|---:|---:|",
    ]
    for parameter, points in curves.items():
        for value, accuracy, is_cell in sorted(points, key=lambda p: p[0]):
            mark = " (grid)" if is_cell else ""
            cells = [
                f"{100 * accuracy[h]:.1f}" if h in accuracy else "-"
                for h in ("prompted", "unprompted")
            ]
            lines.append(
                f"| {SYMBOLS.get(parameter, parameter)} | {value:g}{mark} | {' | '.join(cells)} |"
            )
    return lines


def _head_accuracy(result: RunResult) -> dict[str, float]:
    return {
        head: result.metrics[f"test/{head}/acc"]
        for head in ("prompted", "unprompted")
        if f"test/{head}/acc" in result.metrics
    }


# ----- the run-info file -------------------------------------------------------------------------
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
            "base": _relative(Path(sensitivity["base"]), output),
            "points": [
                {**p, "folder": _relative(Path(p["folder"]), output)} for p in sensitivity["points"]
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
                "folder": _relative(r.folder, output),
            }
            for r in runs
        ],
        "sensitivity": sensitivity,
    }
    output.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info, indent=1) + "\n")
    return path


# ----- the page -----------------------------------------------------------------------------------
def headline_table(
    tables: dict[str, dict[str, list[Row]]], datasets: Sequence[dict], methods: Sequence[dict]
) -> str:
    """Methods x data sets, test accuracy with prompts (mean ± std), the best per column bold."""
    shown = [m for m in methods if m["role"] != "ablation"]
    header = "| Method | " + " | ".join(d["title"] for d in datasets) + " |"
    lines = [header, "|---" + "|---:" * len(datasets) + "|"]
    best = {}
    for d in datasets:
        means = [mean_of(tables[d["name"]]["prompted"], m["name"]) for m in shown]
        values = [round(100 * v, 1) for v in means if v is not None]
        best[d["name"]] = max(values) if values else None
    for method in shown:
        cells = []
        for d in datasets:
            row = next(
                (r for r in tables[d["name"]]["prompted"] if r.method == method["name"]), None
            )
            summary = row.mean_std("acc") if row else None
            if summary is None:
                cells.append("-")
                continue
            text = f"{100 * summary[0]:.1f} ± {100 * summary[1]:.1f}"
            bold = round(100 * summary[0], 1) == best[d["name"]]
            cells.append(f"**{text}**" if bold else text)
        lines.append(f"| {method['title']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_page(output: Path, images: Path, link: str, analysis: str | None = None) -> str:
    """The Markdown of the page; figures are written to ``images`` (``link`` in the page)."""
    info = json.loads((output / RUN_INFO).read_text())
    cells = load_cells(output, info)
    datasets = info["datasets"]
    methods = [m for m in info["methods"] if m["role"] != "stage"]
    main_methods = [m for m in methods if m["role"] != "ablation"]
    tables: dict[str, dict[str, list[Row]]] = {}
    for d in datasets:
        tables[d["name"]] = {
            head: rows_for(cells, d["name"], main_methods, head)
            for head in ("prompted", "unprompted")
        }
    finished = sum(c.result is not None for c in cells)
    parts = ["# Results", ""]
    if info.get("trial"):
        parts += [
            "> **TRIAL RUN — not the results of the framework.** "
            + (info.get("note") or "A reduced grid run to calibrate sizes and times.")
            + " The page of record is written by `make results` on the final main.",
            "",
        ]
    parts += [
        f"Written by `vapl results-page` from the run folders of `{info['output']}` "
        f"({finished} of {len(cells)} runs finished), commit `{info['commit']}`"
        + (" (with uncommitted changes)" if info.get("dirty") else "")
        + f", {info.get('finished', '')}. Never edited by hand: `make results` rewrites it.",
        "",
        "Mean ± standard deviation over seeds, in percent, test split; best of a column **bold**, "
        "second <u>underlined</u>. With prompts: VAPL's prompted head (f_m on the refined prompt); "
        "without: its unprompted head (f_o). Every other method has one model, the same row in "
        "both tables. CRAYON's answers come from an oracle (the data's explanations), and Learning "
        "to Look's maps from the data's explanations in place of a CLIP model (an oracle VLM): no "
        "human and no CLIP weights were involved.",
        "",
        "## Headline: accuracy with prompts",
        "",
        headline_table(tables, datasets, methods),
        "",
        "## Goals (issue #13)",
        "",
        *goals(tables, datasets, methods),
    ]
    for d in datasets:
        name = d["name"]
        parts += ["", f"## {d['title']}", ""]
        if d.get("note"):
            parts += [d["note"], ""]
        for head, title in (("prompted", "With prompts"), ("unprompted", "Without prompts")):
            rows = tables[name][head]
            parts += [f"### {title}", "", markdown_table(rows) if rows else "(no finished run)", ""]
        explanation = explanation_table(cells, name, main_methods)
        if explanation:
            parts += ["### Explanations (Grad-CAM against the ground truth)", "", explanation, ""]
        if tables[name]["prompted"]:
            bar_chart({d["title"]: tables[name]["prompted"]}, images / f"{name}.png")
            parts += [f"![{d['title']}]({link}/{name}.png)", ""]
    ablations = [m for m in methods if m["role"] == "ablation"]
    ablations += [m for m in methods if m["role"] == "vapl"]
    if any(m["role"] == "ablation" for m in ablations):
        parts += ["", "## Ablation (the paper's Table 3 in kind; prompted head)", ""]
        for d in datasets:
            rows = rows_for(cells, d["name"], ablations, "prompted")
            if rows:
                parts += [f"### {d['title']}", "", markdown_table(rows), ""]
    parts += ["", *sensitivity_section(info, output, images, link)]
    parts += ["", "## What the numbers say", ""]
    parts += [analysis.strip() if analysis else "(to be written after reading the final run)"]
    parts += ["", *settings_section(info, cells, datasets, methods, output)]
    return "\n".join(parts).rstrip() + "\n"


def settings_section(
    info: dict[str, Any],
    cells: Sequence[Cell],
    datasets: Sequence[dict],
    methods: Sequence[dict],
    output: Path,
) -> list[str]:
    extra = [output / p["folder"] for p in (info.get("sensitivity") or {}).get("points", [])]
    wall, cpu, per_method = timing(cells, extra)
    lines = [
        "## Settings, budget and time",
        "",
        f"- Grid: `{info['grid']}`; seeds {info['seeds']}; overrides for every run: "
        f"`{' '.join(info.get('overrides') or []) or 'none'}`.",
        f"- Commit `{info['commit']}`; {info.get('machine', '')}.",
        f"- Launch `{info.get('launch')}`, {info.get('workers')} worker(s) of {info.get('threads')} "
        f"thread(s). Wall time of the `vapl benchmark` calls: {info.get('wall_s_total', 0) / 60:.1f} "
        f"min; the runs' own: {wall / 60:.1f} min of wall time, {cpu / 60:.1f} min of CPU time.",
        "- CPU minutes per method: "
        + ", ".join(
            f"{m} {s / 60:.1f}" for m, s in sorted(per_method.items(), key=lambda x: -x[1])
        ),
        "",
        "### Data sets",
        "",
        "| Data set | Configs | Overrides | Shortcut |",
        "|---|---|---|---|",
    ]
    for d in datasets:
        lines.append(
            f"| {d['title']} | {', '.join(Path(c).name for c in d['configs'])} | "
            f"`{' '.join(d['overrides'])}` | {'yes' if d.get('shortcut') else 'no'} |"
        )
    lines += [
        "",
        "### Methods",
        "",
        "| Method | Configs | Overrides | Starts from |",
        "|---|---|---|---|",
    ]
    for m in info["methods"]:
        lines.append(
            f"| {m['title']} | {', '.join(Path(c).name for c in m['configs'])} | "
            f"`{' '.join(m['overrides']) or '-'}` | {m.get('start_from') or '-'} |"
        )
    lines += [
        "",
        "### Budget",
        "",
        info.get("budget_note", ""),
        "",
    ]
    for d in datasets:
        lines += [
            f"{d['title']} (first seed):",
            "",
            budget_table(cells, info["methods"], d["name"]),
            "",
        ]
    return lines


def write_page(
    output: str | Path,
    page: str | Path = "docs/results.md",
    images: str | Path | None = None,
    analysis: str | Path | None = None,
    readme: str | Path | None = None,
) -> Path:
    """Write the page (and its figures) from a finished grid in ``output``; return its path."""
    output, page = Path(output), Path(page)
    images = Path(images) if images else page.parent / "images" / "results"
    link = Path(_relative(images, page.parent)).as_posix()
    text = Path(analysis).read_text() if analysis and Path(analysis).is_file() else None
    markdown = render_page(output, images, link, text)
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(markdown)
    if readme:
        update_readme(Path(readme), markdown, _relative(page, Path(readme).parent))
    return page


def _relative(path: Path, start: Path) -> str:
    import os

    return os.path.relpath(path.resolve(), start.resolve())


def update_readme(readme: Path, page: str, link: str) -> None:
    """Replace the README's headline table (between the markers) with the page's."""
    text = readme.read_text()
    if README_BEGIN not in text or README_END not in text:
        raise SystemExit(f"{readme}: no {README_BEGIN} ... {README_END} markers to fill")
    table = page.split("## Headline: accuracy with prompts", 1)[1].split("\n## ", 1)[0].strip()
    source = f"From [{link}]({link})"
    if "TRIAL RUN" in page:
        source += ", a trial run (reduced grid), not the results of record"
    block = f"{README_BEGIN}\n{table}\n\n{source}.\n{README_END}"
    readme.write_text(
        re.sub(
            re.escape(README_BEGIN) + ".*?" + re.escape(README_END),
            lambda _: block,
            text,
            flags=re.S,
        )
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="vapl results-page",
        description=__doc__,
        formatter_class=PlainDescriptionFormatter,
    )
    parser.add_argument("output", help="the results grid's output folder (with run_info.json)")
    parser.add_argument("--page", default="docs/results.md")
    parser.add_argument("--images", default=None, help="default: PAGE_FOLDER/images/results")
    parser.add_argument("--analysis", default=None, help="Markdown for 'What the numbers say'")
    parser.add_argument("--readme", default=None, help="also update this README's table")
    options = parser.parse_args(argv)
    if not (Path(options.output) / RUN_INFO).is_file():
        raise SystemExit(
            f"vapl results-page: {options.output} has no {RUN_INFO}: run the grid first"
        )
    path = write_page(
        options.output, options.page, options.images, options.analysis, options.readme
    )
    print(f"written: {path}")


if __name__ == "__main__":
    main()
