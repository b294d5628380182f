"""Balanced against i.i.d. masks end to end: accuracy against N and against wall time.

    vapl benchmark --config benchmark/masks.yaml --launch inprocess --workers 1 --threads 1
    python -m vapl.results.mask_sweep                       (or: make masks, both steps)

Reads the run folders the grid ``configs/benchmark/masks.yaml`` wrote (``OUTPUT/DATASET/METHOD/
seedS``): the test accuracy of both heads from each run's ``metrics.csv``, the sampler and N from
its ``config.yaml`` (``model.init_args.balanced_masks`` and ``n_masks``), the cell's wall time
from the ``timing.json`` the launcher wrote. Writes the figure (accuracy against N and against
wall time, mean ± standard deviation over seeds) and a section of ``docs/performance.md`` between
``<!-- masks:begin -->`` and ``<!-- masks:end -->``: a table per data set and the conclusion.

The rule (issue 16): the smallest balanced N whose mean test accuracy is within one standard
deviation of i.i.d. masks at the reference N (1024), i.e. ``mean_b >= mean_ref - std_ref``; a
balanced N better than the reference by more than a standard deviation matches too (the goal is
no loss of accuracy). Standard deviations are the sample ones (``n - 1``), as in ``vapl report``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from vapl.results.runs import collect_runs

HEADS = ("prompted", "unprompted")
SAMPLERS = ("iid", "balanced")
REFERENCE_N = 1024
BEGIN, END = "<!-- masks:begin -->", "<!-- masks:end -->"
HEADING = "## Accuracy against N: balanced and i.i.d. masks end to end"


@dataclass(frozen=True)
class Cell:
    """One finished run: data set, sampler, N, seed, test accuracy per head, wall seconds."""

    dataset: str
    sampler: str
    n_masks: int
    seed: int
    acc: dict[str, float]
    wall_s: float | None
    cpu_s: float | None = None


@dataclass(frozen=True)
class Summary:
    """The seeds of one (data set, sampler, N): mean and sample standard deviation."""

    dataset: str
    sampler: str
    n_masks: int
    seeds: int
    acc: dict[str, tuple[float, float]]
    wall_s: tuple[float, float] | None
    cpu_s: tuple[float, float] | None = None


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return statistics.fmean(values), std


def read_cells(output: str | Path) -> list[Cell]:
    """Every finished VAPL run under ``output/DATASET/METHOD/seedS``."""
    cells = []
    for folder in sorted(Path(output).glob("*/*/seed*")):
        runs = collect_runs([folder])
        if not runs:
            continue
        run = runs[0]
        config = yaml.safe_load((run.path / "config.yaml").read_text())
        args = (config.get("model") or {}).get("init_args") or {}
        if "n_masks" not in args:
            raise ValueError(f"{run.path}/config.yaml: no model.init_args.n_masks (not VAPL?)")
        timing = folder / "timing.json"
        times = json.loads(timing.read_text()) if timing.is_file() else {}
        acc = {h: run.metrics[f"test/{h}/acc"] for h in HEADS if f"test/{h}/acc" in run.metrics}
        cells.append(
            Cell(
                dataset=folder.parent.parent.name,
                sampler="balanced" if args.get("balanced_masks") else "iid",
                n_masks=int(args["n_masks"]),
                seed=int(config.get("seed_everything") or 0),
                acc=acc,
                wall_s=times.get("wall_s"),
                cpu_s=times.get("cpu_s"),
            )
        )
    return cells


def summarise(cells: Sequence[Cell]) -> list[Summary]:
    """One summary per (data set, sampler, N), sorted that way."""
    groups: dict[tuple[str, str, int], list[Cell]] = defaultdict(list)
    for cell in cells:
        groups[cell.dataset, cell.sampler, cell.n_masks].append(cell)
    out = []
    for (dataset, sampler, n), group in sorted(groups.items()):
        acc = {
            h: mean_std([c.acc[h] for c in group]) for h in HEADS if all(h in c.acc for c in group)
        }
        walls = [c.wall_s for c in group if c.wall_s is not None]
        cpus = [c.cpu_s for c in group if c.cpu_s is not None]
        out.append(
            Summary(
                dataset,
                sampler,
                n,
                len(group),
                acc,
                mean_std(walls) if walls else None,
                mean_std(cpus) if cpus else None,
            )
        )
    return out


def find(summaries: Sequence[Summary], dataset: str, sampler: str, n: int) -> Summary | None:
    return next(
        (s for s in summaries if (s.dataset, s.sampler, s.n_masks) == (dataset, sampler, n)), None
    )


def matches(candidate: Summary, reference: Summary, head: str) -> bool:
    """``candidate``'s mean accuracy is at least the reference's mean minus its std."""
    mean, _ = candidate.acc[head]
    ref_mean, ref_std = reference.acc[head]
    return mean >= ref_mean - ref_std - 1e-12


def smallest_match(
    summaries: Sequence[Summary],
    dataset: str,
    head: str,
    sampler: str = "balanced",
    reference_n: int = REFERENCE_N,
) -> int | None:
    """The smallest N of ``sampler`` on ``dataset`` within one std of i.i.d. at ``reference_n``
    (``None``: no such N, or no reference run)."""
    reference = find(summaries, dataset, "iid", reference_n)
    if reference is None or head not in reference.acc:
        return None
    found = sorted(
        s.n_masks
        for s in summaries
        if s.dataset == dataset and s.sampler == sampler and head in s.acc
        if matches(s, reference, head)
    )
    return found[0] if found else None


def _cell(summary: tuple[float, float] | None, seeds: int, scale: float, digits: int) -> str:
    if summary is None:
        return "-"
    mean, std = summary
    text = f"{mean * scale:.{digits}f}"
    return text if seeds < 2 else f"{text} ± {std * scale:.{digits}f}"


def conclusions(summaries: Sequence[Summary]) -> list[str]:
    """One line per data set and head: the smallest matching balanced N and its ratio."""
    lines = []
    for dataset in sorted({s.dataset for s in summaries}):
        for head in HEADS:
            reference = find(summaries, dataset, "iid", REFERENCE_N)
            if reference is None or head not in reference.acc:
                lines.append(f"- {dataset}, {head}: no i.i.d. run at N = {REFERENCE_N}.")
                continue
            mean, std = reference.acc[head]
            ref = f"i.i.d. N = {REFERENCE_N}: {100 * mean:.1f} ± {100 * std:.1f} %"
            balanced = smallest_match(summaries, dataset, head)
            iid = smallest_match(summaries, dataset, head, sampler="iid")
            if balanced is None:
                lines.append(f"- {dataset}, {head} ({ref}): no balanced N within one std.")
                continue
            cells = [x.acc[head] for x in summaries if x.dataset == dataset and head in x.acc]
            spread = max(m for m, _ in cells) - min(m for m, _ in cells)
            noise = statistics.fmean(sd for _, sd in cells)
            ratio = REFERENCE_N / balanced
            goal = "at most" if balanced * 10 <= REFERENCE_N else "more than"
            lines.append(
                f"- {dataset}, {head} ({ref}): smallest balanced N within one std = "
                f"**{balanced}**, {ratio:g} times fewer masks ({goal} 1/10 of {REFERENCE_N}); "
                f"smallest i.i.d. N within one std = {iid}. The means of all {len(cells)} "
                f"settings lie within {100 * spread:.1f} points of each other; the standard "
                f"deviation between seeds averages {100 * noise:.1f} points."
            )
    return lines


def markdown(summaries: Sequence[Summary], labels: dict[str, str] | None = None) -> str:
    """The tables (accuracy in percent, wall seconds per cell) and the conclusion lines."""
    labels = labels or {}
    parts = []
    for dataset in sorted({s.dataset for s in summaries}):
        parts += [
            f"**{labels.get(dataset, dataset)}**",
            "",
            "| Masks | N | Prompted acc (%) | Unprompted acc (%) | Wall per run (s) "
            "| CPU per run (s) | Seeds |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        rows = [s for s in summaries if s.dataset == dataset]
        rows.sort(key=lambda s: (SAMPLERS.index(s.sampler), s.n_masks))
        for s in rows:
            parts.append(
                f"| {s.sampler} | {s.n_masks} | "
                + " | ".join(_cell(s.acc.get(h), s.seeds, 100.0, 1) for h in HEADS)
                + f" | {_cell(s.wall_s, s.seeds, 1.0, 0)} | {_cell(s.cpu_s, s.seeds, 1.0, 0)}"
                + f" | {s.seeds} |"
            )
        parts.append("")
    parts += [
        f"Smallest balanced N whose mean test accuracy is within one standard deviation of "
        f"i.i.d. masks at N = {REFERENCE_N} (mean >= reference mean - reference std):",
        "",
        *conclusions(summaries),
    ]
    return "\n".join(parts) + "\n"


def figure(summaries: Sequence[Summary], path: str | Path, labels: dict[str, str] | None = None):
    """Accuracy against N (log axis) and against wall time, per data set and head."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    labels = labels or {}
    datasets = sorted({s.dataset for s in summaries})
    fig, axes = plt.subplots(
        len(datasets), 4, figsize=(16, 3.4 * len(datasets)), squeeze=False, sharey="row"
    )
    styles = {"iid": ("tab:red", "o", "i.i.d."), "balanced": ("tab:blue", "s", "balanced")}
    for row, dataset in zip(axes, datasets):
        for column, (head, against) in enumerate([(h, x) for x in ("n", "wall") for h in HEADS]):
            ax = row[column]
            for sampler in SAMPLERS:
                points = sorted(
                    (s for s in summaries if (s.dataset, s.sampler) == (dataset, sampler)),
                    key=lambda s: s.n_masks,
                )
                points = [s for s in points if head in s.acc and (against == "n" or s.wall_s)]
                if not points:
                    continue
                color, marker, name = styles[sampler]
                xs = [s.n_masks if against == "n" else s.wall_s[0] for s in points]
                xerr = None if against == "n" else [s.wall_s[1] for s in points]
                ys = [100 * s.acc[head][0] for s in points]
                yerr = [100 * s.acc[head][1] for s in points]
                ax.errorbar(
                    xs, ys, yerr=yerr, xerr=xerr, color=color, marker=marker, capsize=3, label=name
                )
                if against == "n":
                    for s, x, y in zip(points, xs, ys):
                        ax.annotate(
                            str(s.n_masks),
                            (x, y),
                            fontsize=7,
                            alpha=0.6,
                            xytext=(3, 3),
                            textcoords="offset points",
                        )
                else:
                    for s, x, y in zip(points, xs, ys):
                        ax.annotate(
                            str(s.n_masks),
                            (x, y),
                            fontsize=7,
                            color=color,
                            xytext=(3, 3),
                            textcoords="offset points",
                        )
            reference = find(summaries, dataset, "iid", REFERENCE_N)
            if reference is not None and head in reference.acc:
                mean, std = (100 * v for v in reference.acc[head])
                ax.axhspan(
                    mean - std,
                    mean + std,
                    color="tab:red",
                    alpha=0.1,
                    label=f"i.i.d. N={REFERENCE_N} ± 1 std",
                )
            if against == "n":
                ax.set_xscale("log", base=2)
                ticks = sorted({s.n_masks for s in summaries if s.dataset == dataset})
                ax.set_xticks(ticks, [str(t) for t in ticks], fontsize=7)
                ax.minorticks_off()
            else:
                ax.set_xscale("log")
                ax.xaxis.set_major_formatter(ScalarFormatter())
                ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel("N (masks)" if against == "n" else "wall time per run (s)")
            ax.set_title(f"{labels.get(dataset, dataset)}: {head}", fontsize=9)
            ax.grid(alpha=0.3)
            if column == 0:
                ax.set_ylabel("test accuracy (%)")
        row[0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_section(doc: str | Path, body: str) -> Path:
    """Replace what lies between the markers in ``doc`` (appended, with a heading, if absent)."""
    doc = Path(doc)
    text = doc.read_text() if doc.is_file() else ""
    block = f"{BEGIN}\n{body.rstrip()}\n{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        text = head + block + tail
    else:
        text = text.rstrip() + f"\n\n{HEADING}\n\n{block}\n"
    doc.write_text(text)
    return doc


def settings_lines(
    cells: Sequence[Cell], grid: str, output: Path, figure_path: Path, note: str = ""
) -> str:
    walls = [c.wall_s for c in cells if c.wall_s is not None]
    cpus = [c.cpu_s for c in cells if c.cpu_s is not None]
    total = f"{sum(walls) / 60:.1f} min" if walls else "not recorded"
    if cpus:
        total += f" of wall time and {sum(cpus) / 60:.1f} min of CPU time"
    seeds = sorted({c.seed for c in cells})
    return (
        f"From `make masks` (grid `{grid}`, run folders `{output}`, seeds {seeds}, "
        f"{len(cells)} runs, together {total}; one thread per run on a shared 2-core machine, "
        "so wall times compare within this run only; CPU time is the steadier measure of cost). "
        + (f"{note.strip()} " if note.strip() else "")
        + "Written by `python -m vapl.results.mask_sweep`; do not edit by hand.\n\n"
        f"![accuracy against N and wall time]({_relative(figure_path)})\n"
    )


def _relative(figure_path: Path) -> str:
    parts = figure_path.parts
    return str(Path(*parts[1:])) if parts and parts[0] == "docs" else str(figure_path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m vapl.results.mask_sweep",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", default="benchmark/masks.yaml", help="the sweep's grid file")
    parser.add_argument("--out", default=None, help="run folders (default: the grid's output)")
    parser.add_argument("--doc", default="docs/performance.md")
    parser.add_argument("--figure", default="docs/images/masks_accuracy.png")
    parser.add_argument("--note", default="", help="a sentence on how this run was made")
    options = parser.parse_args(argv)
    from vapl.results.grid import load_grid

    _, settings = load_grid(options.config, options.out)
    output = Path(settings["output"])
    cells = read_cells(output)
    if not cells:
        raise SystemExit(f"mask_sweep: no finished runs under {output}")
    labels = {name: entry.title for name, entry in settings["datasets"].items()}
    summaries = summarise(cells)
    figure_path = figure(summaries, options.figure, labels)
    body = settings_lines(cells, options.config, output, Path(options.figure), options.note)
    body += "\n" + markdown(summaries, labels)
    doc = write_section(options.doc, body)
    print(markdown(summaries, labels))
    print(f"written: {figure_path}, {doc}")


if __name__ == "__main__":
    main()
