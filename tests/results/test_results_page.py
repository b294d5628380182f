"""The results pipeline (``make results``) on a tiny grid: generated cells, in-process runs, CRAYON's
stages, and a page whose tables come from the run folders."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from vapl.results.grid import load_grid, select
from vapl.results.grid import main as benchmark_main
from vapl.results.launch import execute
from vapl.results.page import write_page
from vapl.results.report import Row
from vapl.results.runs import collect_runs
from vapl.results.tables import goals

#: fast_dev_run-sized runs that still log: Lightning's fast_dev_run disables every logger, so the
#: run folders would hold no metrics.csv; one epoch of one batch does the same work and logs.
FAST = [
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=1",
    "--trainer.limit_val_batches=1",
    "--trainer.limit_test_batches=1",
    "--trainer.num_sanity_val_steps=0",
]
TINY_DEMO = [
    "--data.init_args.image_size=16",
    "--data.init_args.n_train=16",
    "--data.init_args.n_val=8",
    "--data.init_args.n_test=8",
    "--data.init_args.batch_size=8",
]


def write_grid(folder: Path, methods: dict, **extra) -> Path:
    grid = {
        "output": str(folder / "out"),
        "seeds": [0],
        "page": str(folder / "docs" / "results.md"),
        "datasets": {
            "demo": {
                "label": "Demo",
                "configs": ["demo.yaml"],
                "overrides": TINY_DEMO,
                "shortcut": True,
            }
        },
        "methods": methods,
        "overrides": [
            "--model.init_args.backbone=tiny",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            *FAST,
        ],
        **extra,
    }
    path = folder / "grid.yaml"
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return path


TWO_METHODS = {
    "Baseline": {"configs": ["methods/baseline.yaml"], "role": "reference"},
    "VAPL": {
        "configs": ["methods/vapl.yaml"],
        "overrides": ["--model.init_args.n_masks=4"],
        "role": "vapl",
    },
}


def _set_metric(folder: Path, key: str, value: float) -> None:
    """Change the last logged value of ``key`` in the run's metrics.csv."""
    (path,) = folder.rglob("metrics.csv")
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    fields = list(rows[0])
    last = max(i for i, row in enumerate(rows) if row.get(key))
    rows[last][key] = str(value)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fields)
        writer.writeheader()
        writer.writerows(rows)


def test_make_results_pipeline_writes_a_page_filled_from_the_run_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    grid = write_grid(tmp_path, TWO_METHODS)
    benchmark_main(["--config", str(grid), "--launch", "inprocess", "--trial", "a test"])
    out = tmp_path / "out"
    info = json.loads((out / "run_info.json").read_text())
    assert [c["method"] for c in info["cells"]] == ["Baseline", "VAPL"]
    assert info["commit"]
    page = (tmp_path / "docs" / "results.md").read_text()
    assert "TRIAL RUN" in page and "a test" in page
    vapl = collect_runs([out / "demo" / "VAPL" / "seed0"])[0]
    prompted = 100 * vapl.metrics["test/prompted/acc"]
    unprompted = 100 * vapl.metrics["test/unprompted/acc"]
    with_prompts = page.split("### With prompts")[1].split("###")[0]
    without = page.split("### Without prompts")[1].split("###")[0]
    assert f"{prompted:.1f}" in next(
        line for line in with_prompts.splitlines() if "| VAPL |" in line
    )
    assert f"{unprompted:.1f}" in next(line for line in without.splitlines() if "| VAPL |" in line)
    assert (tmp_path / "docs" / "images" / "results" / "demo.png").is_file()
    assert (out / "demo" / "VAPL" / "seed0" / "timing.json").is_file()

    # A number changed in a run folder changes the page.
    _set_metric(out / "demo" / "VAPL" / "seed0", "test/prompted/acc", 0.123)
    write_page(out, tmp_path / "docs" / "results.md")
    page = (tmp_path / "docs" / "results.md").read_text()
    with_prompts = page.split("### With prompts")[1].split("###")[0]
    assert "| VAPL | 12.3 |" in with_prompts.replace("**", "").replace("<u>", "").replace(
        "</u>", ""
    )
    headline = page.split("## Headline")[1].split("##")[0]
    assert "12.3 ± 0.0" in headline


def test_the_page_judges_the_ablation_goal_from_the_ablation_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    methods = {
        **TWO_METHODS,
        "VAPL-1": {
            "configs": ["methods/vapl.yaml", "methods/vapl1.yaml"],
            "overrides": ["--model.init_args.n_masks=4"],
            "role": "ablation",
        },
    }
    grid = write_grid(tmp_path, methods)
    benchmark_main(["--config", str(grid), "--launch", "inprocess"])
    out = tmp_path / "out"
    _set_metric(out / "demo" / "VAPL" / "seed0", "test/prompted/acc", 0.9)
    _set_metric(out / "demo" / "VAPL-1" / "seed0", "test/prompted/acc", 0.7)
    page = write_page(out, tmp_path / "docs" / "results.md").read_text()
    goals_text = page.split("## Goals")[1].split("\n## ")[0]
    # The line was missing: the page judged goals on tables without the ablation rows.
    assert "each ablation costs at least one point" in goals_text
    assert "VAPL-1 +20.0 on Demo" in goals_text


def test_an_inprocess_run_does_not_depend_on_what_ran_before_it(tmp_path):
    grid = write_grid(tmp_path, TWO_METHODS)
    runs, settings = load_grid(grid)
    execute(runs, settings["overrides"], "inprocess")  # Baseline, then VAPL, in one process
    after = collect_runs([runs[1].folder])[0].metrics
    alone, _ = load_grid(grid, tmp_path / "alone")
    execute([alone[1]], settings["overrides"], "inprocess")  # VAPL alone
    assert collect_runs([alone[1].folder])[0].metrics == pytest.approx(after)


def test_crayon_cells_start_from_an_exported_and_answered_run(tmp_path, monkeypatch):
    # `vapl crayon export` and `answer` run as subprocesses: they import this checkout
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[2]))
    methods = {
        "original": {"configs": ["methods/baseline.yaml"], "role": "stage"},
        "CRAYON-Pruning": {
            "configs": ["methods/crayon_pruning.yaml"],
            "start_from": "original",
            "crayon": True,
            "role": "guided",
        },
    }
    grid = write_grid(tmp_path, methods)
    runs, settings = load_grid(grid)
    assert runs[1].start_from is runs[0]
    (pruning,) = select(runs, settings, methods=["CRAYON-Pruning"])[1:]
    assert pruning is runs[1]
    outcomes = execute(list(reversed(runs)), settings["overrides"], "inprocess")
    assert [o.run.method for o in outcomes] == ["original", "CRAYON-Pruning"]  # source first
    assert all(o.code == 0 for o in outcomes)
    answers = runs[0].folder / "crayon" / "answers.csv"
    assert answers.is_file()
    config = yaml.safe_load(next(runs[1].folder.rglob("config.yaml")).read_text())
    assert config["model"]["init_args"]["answers"] == str(answers)
    assert config["model"]["init_args"]["init_checkpoint"].startswith(str(runs[0].folder))


def test_grid_entries_placeholders_roles_and_errors(tmp_path):
    methods = {
        "Baseline": ["methods/baseline.yaml"],
        "LtL": {"configs": ["methods/learning_to_look_oracle.yaml"], "label": "LtL (oracle)"},
    }
    grid = write_grid(tmp_path, methods)
    spec = yaml.safe_load(grid.read_text())
    spec["datasets"]["demo"]["overrides"] = ["--data.init_args.root={data}/mnist"]
    grid.write_text(yaml.safe_dump(spec))
    runs, settings = load_grid(grid)
    assert runs[0].overrides == (f"--data.init_args.root={tmp_path / 'out' / 'data'}/mnist",)
    assert settings["methods"]["LtL"].title == "LtL (oracle)"
    assert settings["methods"]["Baseline"].role == "method"
    spec["methods"]["LtL"]["start_from"] = "nothing"
    grid.write_text(yaml.safe_dump(spec))
    with pytest.raises(ValueError, match="start_from names 'nothing'"):
        load_grid(grid)
    spec["methods"]["LtL"] = {"configs": [], "colour": "red"}
    grid.write_text(yaml.safe_dump(spec))
    with pytest.raises(ValueError, match="unknown keys"):
        load_grid(grid)


def _row(method: str, accuracies: list[float]) -> Row:
    row = Row(method, method, "prompted")
    row.values["acc"] = accuracies
    row.seeds = list(range(len(accuracies)))
    return row


def test_goals_are_judged_on_the_mean_accuracies():
    datasets = [{"name": "a", "title": "A", "shortcut": True}]
    methods = [
        {"name": "Baseline", "role": "reference"},
        {"name": "VAPL", "role": "vapl"},
        {"name": "GRADIA", "role": "guided"},
        {"name": "VAPL-1", "role": "ablation"},
    ]
    tables = {
        "a": {
            "prompted": [_row("Baseline", [0.5]), _row("VAPL", [0.7, 0.5]), _row("GRADIA", [0.61])],
            "unprompted": [_row("Baseline", [0.5]), _row("VAPL", [0.56])],
        }
    }
    tables["a"]["prompted"].append(_row("VAPL-1", [0.595]))
    lines = goals(tables, datasets, methods)
    assert lines[0].startswith("- **Met**") and "prompted +10.0, unprompted +6.0" in lines[0]
    assert lines[1].startswith("- **Missed**") and "A -1.0 vs GRADIA" in lines[1]
    assert lines[2].startswith("- **Missed**") and "VAPL-1 +0.5 on A" in lines[2]
