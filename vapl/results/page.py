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
from pathlib import Path
from typing import Any

from vapl.results.report import Row, bar_chart, markdown_table
from vapl.results.run_info import RUN_INFO, budget_table, relative_path, timing
from vapl.results.sensitivity import sensitivity_section
from vapl.results.tables import (
    Cell,
    explanation_table,
    goals,
    headline_table,
    load_cells,
    rows_for,
)
from vapl.training.help import PlainDescriptionFormatter

HEADS = ("prompted", "unprompted")
README_BEGIN = "<!-- results-table:begin -->"
README_END = "<!-- results-table:end -->"


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
        *goals(_tables_with_ablations(cells, datasets, methods), datasets, methods),
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


def _tables_with_ablations(
    cells: Sequence[Cell], datasets: Sequence[dict], methods: Sequence[dict]
) -> dict[str, dict[str, list[Row]]]:
    """Both heads' rows of every method, ablations included (the goals compare them with VAPL)."""
    return {
        d["name"]: {head: rows_for(cells, d["name"], methods, head) for head in HEADS}
        for d in datasets
    }


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
    link = Path(relative_path(images, page.parent)).as_posix()
    text = Path(analysis).read_text() if analysis and Path(analysis).is_file() else None
    markdown = render_page(output, images, link, text)
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(markdown)
    if readme:
        update_readme(Path(readme), markdown, relative_path(page, Path(readme).parent))
    return page


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
