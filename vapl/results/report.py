"""``vapl report RUNS...``: the paper's comparison tables from finished runs.

Reads every finished run under the given folders (CSV logs and W&B run folders, see
:mod:`vapl.results.runs`) and writes to ``--out`` (default ``FIRST_FOLDER/report``):

* ``report.md`` and ``report.tex``: per data set, methods by accuracy, precision, recall and F1
  on the test split, as mean ± standard deviation over seeds (in percent; the sample standard
  deviation, ``n - 1``; a single seed shows the mean alone), the best of each column in bold and
  the second underlined; then the ablation table (VAPL-1 to VAPL-4 and VAPL, prompted head);
* ``bars.png``: the main table as a bar chart, the standard deviation as error bars where a row
  has two seeds or more, the legend below the bars;
* ``results.csv``: one line per run, head and metric, for your own analysis.

Rows: a method that predicts with and without a prompt (VAPL) has a row per head,
``VAPL (prompted)`` and ``VAPL (unprompted)``; the other methods one row. The main table prints to
the terminal too.
"""

from __future__ import annotations

import argparse
import csv
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from vapl.core.metrics import METRIC_NAMES
from vapl.results.runs import RunResult, collect_runs
from vapl.training.help import PlainDescriptionFormatter

HEADS = ("prompted", "unprompted")
METRIC_TITLES = {"acc": "Accuracy", "precision": "Precision", "recall": "Recall", "f1": "F1"}
ABLATION_ORDER = ("VAPL-1", "VAPL-2", "VAPL-3", "VAPL-4", "VAPL")


@dataclass
class Row:
    """One line of a table: a method's head on one data set, with one value per seed."""

    label: str
    method: str
    head: str
    values: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    seeds: list[int | None] = field(default_factory=list)

    def mean_std(self, metric: str) -> tuple[float, float] | None:
        values = self.values.get(metric, [])
        if not values:
            return None
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return statistics.fmean(values), std


def _method_order(method: str) -> tuple[int, str]:
    if method == "Baseline":
        return 0, method
    if method.startswith("VAPL"):
        return 2, method
    return 1, method


def build_rows(results: Sequence[RunResult], split: str = "test") -> dict[str, list[Row]]:
    """Data set -> rows (one per method and head), each holding the per-seed values."""
    rows: dict[tuple[str, str, str], Row] = {}
    for result in results:
        metrics = result.split_metrics(split)
        heads = [h for h in HEADS if any(f"{split}/{h}/{m}" in metrics for m in METRIC_NAMES)]
        for head in heads:
            label = (
                result.identity.method if len(heads) == 1 else f"{result.identity.method} ({head})"
            )
            key = (result.identity.dataset, result.identity.method, head)
            row = rows.setdefault(key, Row(label, result.identity.method, head))
            row.seeds.append(result.identity.seed)
            for metric in METRIC_NAMES:
                value = metrics.get(f"{split}/{head}/{metric}")
                if value is not None:
                    row.values[metric].append(value)
    tables: dict[str, list[Row]] = defaultdict(list)
    for (dataset, _, _), row in sorted(
        rows.items(), key=lambda item: (item[0][0], _method_order(item[0][1]), item[0][2])
    ):
        tables[dataset].append(row)
    return dict(tables)


def split_ablations(
    tables: dict[str, list[Row]],
) -> tuple[dict[str, list[Row]], dict[str, list[Row]]]:
    """(main tables without VAPL-1..4, ablation tables: VAPL-1..4 and VAPL, prompted head)."""
    main = {d: [r for r in rows if not r.method.startswith("VAPL-")] for d, rows in tables.items()}
    ablation = {}
    for dataset, rows in tables.items():
        picked = [
            replace(r, label=r.method)
            for r in rows
            if r.method in ABLATION_ORDER and r.head == "prompted"
        ]
        if any(r.method != "VAPL" for r in picked):
            ablation[dataset] = sorted(picked, key=lambda r: ABLATION_ORDER.index(r.method))
    return main, ablation


def format_cell(summary: tuple[float, float] | None, n: int, percent: bool = True) -> str:
    if summary is None:
        return "-"
    scale = 100.0 if percent else 1.0
    digits = 1 if percent else 3
    mean, std = summary
    text = f"{mean * scale:.{digits}f}"
    return text if n < 2 else f"{text} ± {std * scale:.{digits}f}"


def rank_marks(rows: Sequence[Row], metric: str, percent: bool = True) -> dict[int, str]:
    """Row index -> ``best`` or ``second`` for one column, by the mean as displayed (equal
    displayed means share a mark)."""
    digits = 1 if percent else 3
    scale = 100.0 if percent else 1.0
    shown = {}
    for i, row in enumerate(rows):
        summary = row.mean_std(metric)
        if summary is not None:
            shown[i] = round(summary[0] * scale, digits)
    levels = sorted(set(shown.values()), reverse=True)
    marks = {}
    for i, value in shown.items():
        if value == levels[0]:
            marks[i] = "best"
        elif len(levels) > 1 and value == levels[1]:
            marks[i] = "second"
    return marks


def _decorate(cell: str, mark: str | None, style: str) -> str:
    if mark is None or cell == "-":
        return cell
    if style == "md":
        return f"**{cell}**" if mark == "best" else f"<u>{cell}</u>"
    return f"\\textbf{{{cell}}}" if mark == "best" else f"\\underline{{{cell}}}"


def markdown_table(rows: Sequence[Row], metrics: Sequence[str] = METRIC_NAMES) -> str:
    header = "| Method | " + " | ".join(METRIC_TITLES.get(m, m) for m in metrics) + " | Seeds |"
    lines = [header, "|---" + "|---:" * (len(metrics) + 1) + "|"]
    marks = {m: rank_marks(rows, m) for m in metrics}
    for i, row in enumerate(rows):
        cells = [
            _decorate(
                format_cell(row.mean_std(m), len(row.values.get(m, []))), marks[m].get(i), "md"
            )
            for m in metrics
        ]
        lines.append(f"| {row.label} | " + " | ".join(cells) + f" | {len(row.seeds)} |")
    return "\n".join(lines)


def latex_table(rows: Sequence[Row], caption: str, metrics: Sequence[str] = METRIC_NAMES) -> str:
    marks = {m: rank_marks(rows, m) for m in metrics}
    lines = [
        "\\begin{table}[t]",
        "\\centering",
        f"\\caption{{{caption}}}",
        "\\begin{tabular}{l" + "c" * len(metrics) + "}",
        "\\toprule",
        "Method & " + " & ".join(METRIC_TITLES.get(m, m) for m in metrics) + " \\\\",
        "\\midrule",
    ]
    for i, row in enumerate(rows):
        cells = []
        for m in metrics:
            cell = format_cell(row.mean_std(m), len(row.values.get(m, []))).replace("±", "$\\pm$")
            cells.append(_decorate(cell, marks[m].get(i), "tex"))
        lines.append(f"{row.label} & " + " & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines)


def bar_chart(
    tables: dict[str, list[Row]], path: Path, metrics: Sequence[str] = METRIC_NAMES
) -> Path:
    """One panel per data set: metrics on the x axis, one bar per row. Error bars show the
    standard deviation over seeds where a row has two or more (none for a single seed); the
    legend sits below the bars, never over them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = list(dict.fromkeys(row.label for rows in tables.values() for row in rows))
    palette = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    colour = {
        label: palette(i % palette.N) for i, label in enumerate(labels)
    }  # same in every panel
    most_rows = max(len(rows) for rows in tables.values())
    legend_rows = -(-most_rows // 3)
    figure, axes = plt.subplots(
        1,
        len(tables),
        figsize=(5.5 * len(tables), 3.4 + 0.25 * legend_rows),
        squeeze=False,
        layout="constrained",
    )
    for ax, (dataset, rows) in zip(axes[0], tables.items()):
        width = 0.8 / max(len(rows), 1)
        positions = np.arange(len(metrics))
        seeds = sorted({len(row.seeds) for row in rows})
        for i, row in enumerate(rows):
            summaries = [row.mean_std(m) or (float("nan"), 0.0) for m in metrics]
            x = positions + i * width - 0.4 + width / 2
            means = np.array([100 * s[0] for s in summaries])
            ax.bar(x, means, width, label=row.label, color=colour[row.label])
            counts = np.array([len(row.values.get(m, [])) for m in metrics])
            spread = counts > 1  # a single seed has no standard deviation to draw
            if spread.any():
                stds = np.array([100 * s[1] for s in summaries])
                ax.errorbar(
                    x[spread],
                    means[spread],
                    yerr=stds[spread],
                    fmt="none",
                    ecolor="0.2",
                    elinewidth=1,
                    capsize=max(2.0, 40 * width),
                )
        ax.set_xticks(positions, [METRIC_TITLES.get(m, m) for m in metrics])
        ax.set_ylim(0, 100)
        ax.set_ylabel("%")
        n = "/".join(str(s) for s in seeds)
        spread_note = ", std as error bars" if max(seeds) > 1 else ""
        ax.set_title(f"{dataset} (mean over {n} seed{'s' if seeds != [1] else ''}{spread_note})")
        ax.legend(
            fontsize=7,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.1),
            ncols=min(3, len(rows)),
            frameon=False,
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def write_results_csv(results: Sequence[RunResult], path: Path, split: str = "test") -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["dataset", "method", "seed", "head", "metric", "value", "source", "path"])
        for r in results:
            for key, value in sorted(r.split_metrics(split).items()):
                parts = key.split("/")
                if len(parts) == 3 and parts[2] in METRIC_NAMES:
                    writer.writerow(
                        [
                            r.identity.dataset,
                            r.identity.method,
                            r.identity.seed,
                            parts[1],
                            parts[2],
                            value,
                            r.source,
                            r.path,
                        ]
                    )
    return path


def render_markdown(main: dict[str, list[Row]], ablation: dict[str, list[Row]], split: str) -> str:
    parts = [f"# Results ({split} split)", ""]
    parts.append(
        "Mean ± standard deviation over seeds, in percent; best in **bold**, second <u>underlined</u>."
    )
    for dataset, rows in main.items():
        parts += ["", f"## {dataset}", "", markdown_table(rows)]
    if ablation:
        parts += ["", "# Ablation (prompted prediction)"]
        for dataset, rows in ablation.items():
            parts += ["", f"## {dataset}", "", markdown_table(rows)]
    return "\n".join(parts) + "\n"


def render_latex(main: dict[str, list[Row]], ablation: dict[str, list[Row]], split: str) -> str:
    tables = [
        latex_table(rows, f"{dataset}: {split} results (mean $\\pm$ std over seeds, \\%)")
        for dataset, rows in main.items()
    ]
    tables += [
        latex_table(rows, f"{dataset}: ablation, prompted prediction (\\%)")
        for dataset, rows in ablation.items()
    ]
    return "% needs \\usepackage{booktabs}\n" + "\n\n".join(tables) + "\n"


def write_report(
    results: Sequence[RunResult], out: str | Path, split: str = "test"
) -> dict[str, Path]:
    """Write report.md, report.tex, bars.png and results.csv to ``out``; return their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    main, ablation = split_ablations(build_rows(results, split))
    paths = {
        "markdown": out / "report.md",
        "latex": out / "report.tex",
        "results": write_results_csv(results, out / "results.csv", split),
    }
    paths["markdown"].write_text(render_markdown(main, ablation, split))
    paths["latex"].write_text(render_latex(main, ablation, split))
    if main:
        paths["bars"] = bar_chart(main, out / "bars.png")
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="vapl report",
        description=__doc__,
        formatter_class=PlainDescriptionFormatter,
    )
    parser.add_argument("runs", nargs="+", help="folders to search for finished runs")
    parser.add_argument("--out", default=None, help="output folder (default: FIRST_RUNS/report)")
    parser.add_argument("--split", default="test", choices=("test", "val"), help="which metrics")
    options = parser.parse_args(argv)
    results = collect_runs(options.runs)
    if not results:
        raise SystemExit(f"vapl report: no finished run under {', '.join(options.runs)}")
    paths = write_report(results, options.out or Path(options.runs[0]) / "report", options.split)
    print(paths["markdown"].read_text())
    print(f"{len(results)} runs. Written: {', '.join(str(p) for p in paths.values())}")


if __name__ == "__main__":
    main()
