"""The sensitivity study (the paper's Figure 4 in kind): VAPL's test accuracy against one setting
at a time, on one data set and seed, everything else as in the grid.

A grid's ``sensitivity:`` section names the cell it varies and the values of each setting:

    sensitivity:
      dataset: demo
      method: VAPL
      seed: 0
      parameters:                   # model.init_args.NAME: the values besides the grid's own
        lambda_param: [0.01, 1.0]
        n_masks: [8, 64]

Each value is one run in ``OUTPUT/sensitivity/NAME=VALUE``; the grid's own cell (data set, method,
seed) is the point at the configured value, read from its ``config.yaml``. The figure has one
panel per setting with the prompted and unprompted accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: How the page names each setting (the paper's symbols).
SYMBOLS = {
    "lambda_param": "λ1 (L_Param)",
    "lambda_activ": "λ2 (L_Activ)",
    "lambda_agg": "λ3 (L_Agg)",
    "p": "p",
    "n_masks": "N (masks)",
}
#: Settings drawn on a log axis.
LOG_SCALE = {"lambda_param", "lambda_activ", "lambda_agg", "n_masks"}
FOLDER = "sensitivity"


@dataclass(frozen=True)
class SensitivityPoint:
    """One run of the study: ``parameter`` set to ``value`` in ``folder``."""

    parameter: str
    value: float
    folder: Path


def sensitivity_runs(settings: dict[str, Any], runs: list[Any]) -> tuple[list[Any], dict]:
    """The study's runs (GridRun) from a grid's settings and cells, and its description for the
    run-info file (``{}`` without a ``sensitivity:`` section)."""
    from vapl.results.grid import GridRun

    spec = settings.get("sensitivity")
    if not spec:
        return [], {}
    dataset, method = str(spec["dataset"]), str(spec["method"])
    seed = int(spec.get("seed", 0))
    base = next((r for r in runs if (r.dataset, r.method, r.seed) == (dataset, method, seed)), None)
    if base is None:
        raise ValueError(
            f"{settings['source']}: sensitivity names the cell {dataset} / {method} / seed {seed}, "
            "which is not in the grid"
        )
    root = Path(settings["output"]) / FOLDER
    out, points = [], []
    for parameter, values in (spec.get("parameters") or {}).items():
        for value in values:
            folder = root / f"{parameter}={value}"
            override = f"--model.init_args.{parameter}={value}"
            out.append(
                GridRun(
                    dataset,
                    f"{method}[{parameter}={value}]",
                    seed,
                    base.configs,
                    folder,
                    (*base.overrides, override),
                )
            )
            points.append({"parameter": parameter, "value": value, "folder": str(folder)})
    description = {
        "dataset": dataset,
        "method": method,
        "seed": seed,
        "base": str(base.folder),
        "points": points,
    }
    return out, description


def configured_value(config: dict[str, Any], parameter: str) -> float | None:
    """The value of ``model.init_args.PARAMETER`` in a run's resolved ``config.yaml``."""
    value = ((config.get("model") or {}).get("init_args") or {}).get(parameter)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def sensitivity_figure(
    curves: dict[str, list[tuple[float, dict[str, float], bool]]], path: Path, title: str
) -> Path:
    """One panel per setting: ``curves[setting] = [(value, {head: accuracy}, is_grid_cell)]``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(curves)
    figure, axes = plt.subplots(
        1, len(names), figsize=(3.2 * len(names), 3.0), squeeze=False, sharey=True
    )
    for ax, name in zip(axes[0], names):
        points = sorted(curves[name], key=lambda p: p[0])
        for head, style in (("prompted", "o-"), ("unprompted", "s--")):
            xs = [v for v, acc, _ in points if head in acc]
            ys = [100 * acc[head] for _, acc, _ in points if head in acc]
            if xs:
                ax.plot(xs, ys, style, label=head, markersize=4)
        for value, acc, is_cell in points:
            if is_cell and "prompted" in acc:
                ax.plot([value], [100 * acc["prompted"]], "k*", markersize=10)
        if name in LOG_SCALE:
            ax.set_xscale("log")
        ax.set_xlabel(SYMBOLS.get(name, name))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy (%)")
    axes[0][0].legend(fontsize=7, loc="lower left")
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
