"""``vapl report`` on generated runs, and the benchmark grid (without training)."""

from __future__ import annotations

import csv
import os
import statistics
import sys
from pathlib import Path

import pytest
import yaml

from vapl.results.grid import command, is_finished, load_grid, run_config
from vapl.results.grid import main as benchmark_main
from vapl.results.report import build_rows, main, rank_marks, split_ablations
from vapl.results.runs import collect_runs
from vapl.training.wandb_records import read_wandb_run, wait_until_finished

METRICS = ("acc", "precision", "recall", "f1")


def write_csv_run(
    folder: Path,
    model: dict,
    seed: int,
    test: dict[str, float],
    dataset: str = "datamodules.SyntheticDataModule",
) -> Path:
    """A run folder as the vapl command leaves it: config.yaml and metrics.csv (val rows, then
    a test row)."""
    folder.mkdir(parents=True)
    config = {
        "seed_everything": seed,
        "model": model,
        "data": {"class_path": dataset, "init_args": {}},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    columns = ["epoch", "step", "val/unprompted/acc", *test]
    with (folder / "metrics.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerow({"epoch": 0, "step": 1, "val/unprompted/acc": 0.5})
        writer.writerow({"epoch": 1, "step": 3, "val/unprompted/acc": 0.75})
        writer.writerow({"epoch": 2, "step": 4, **test})
    return folder


def heads(values: dict[str, tuple[float, float, float, float]]) -> dict[str, float]:
    return {f"test/{h}/{m}": v for h, vs in values.items() for m, v in zip(METRICS, vs)}


BASELINE = {"class_path": "vapl.methods.Baseline", "init_args": {}}
VAPL = {"class_path": "vapl.methods.VAPL", "init_args": {}}
VAPL1 = {"class_path": "vapl.methods.VAPL", "init_args": {"use_refinement": False}}

# acc of the three seeds; precision, recall, f1 are acc - 0.1, acc - 0.2, acc - 0.3
BASELINE_ACC = (0.70, 0.72, 0.74)
VAPL_PROMPTED_ACC = (0.80, 0.90, 0.85)
VAPL_UNPROMPTED_ACC = (0.75, 0.75, 0.75)
VAPL1_PROMPTED_ACC = (0.78, 0.80, 0.82)


def _four(acc: float) -> tuple[float, float, float, float]:
    return acc, acc - 0.1, acc - 0.2, acc - 0.3


@pytest.fixture
def runs(tmp_path) -> Path:
    root = tmp_path / "runs"
    for seed in range(3):
        write_csv_run(
            root / f"b{seed}", BASELINE, seed, heads({"unprompted": _four(BASELINE_ACC[seed])})
        )
        both = {
            "prompted": _four(VAPL_PROMPTED_ACC[seed]),
            "unprompted": _four(VAPL_UNPROMPTED_ACC[seed]),
        }
        write_csv_run(root / f"v{seed}", VAPL, seed, heads(both))
        both1 = {"prompted": _four(VAPL1_PROMPTED_ACC[seed]), "unprompted": _four(0.7)}
        write_csv_run(root / f"a{seed}", VAPL1, seed, heads(both1))
    # an unfinished run (no test metrics) and a duplicate of seed 0 written earlier
    write_csv_run(root / "unfinished", BASELINE, 5, {})
    old = write_csv_run(root / "old-b0", BASELINE, 0, heads({"unprompted": _four(0.1)}))
    os.utime(old / "metrics.csv", (1, 1))
    return root


def test_runs_are_read_once_per_method_dataset_and_seed(runs):
    results = collect_runs([runs])
    assert len(results) == 9  # 3 methods x 3 seeds; unfinished and older duplicate left out
    baseline_0 = next(
        r for r in results if r.identity.method == "Baseline" and r.identity.seed == 0
    )
    assert baseline_0.path.name == "b0"
    assert baseline_0.best_val == {"val/unprompted/acc": 0.75}


def test_the_table_holds_mean_and_std_over_seeds_with_best_bold_and_second_underlined(runs):
    main_tables, ablation = split_ablations(build_rows(collect_runs([runs])))
    rows = main_tables["demo"]
    assert [r.label for r in rows] == ["Baseline", "VAPL (prompted)", "VAPL (unprompted)"]
    mean, std = rows[1].mean_std("acc")
    assert mean == pytest.approx(0.85)
    assert std == pytest.approx(statistics.stdev(VAPL_PROMPTED_ACC))  # 0.05
    assert rank_marks(rows, "acc") == {1: "best", 2: "second"}  # 85.0 > 75.0 > 72.0
    assert [r.label for r in ablation["demo"]] == ["VAPL-1", "VAPL"]

    out = runs / "report"
    main([str(runs), "--out", str(out)])
    markdown = (out / "report.md").read_text()
    assert (
        "| VAPL (prompted) | **85.0 ± 5.0** | **75.0 ± 5.0** | **65.0 ± 5.0** | **55.0 ± 5.0** | 3 |"
        in markdown
    )
    assert "| VAPL (unprompted) | <u>75.0 ± 0.0</u> |" in markdown
    assert "| Baseline | 72.0 ± 2.0 | 62.0 ± 2.0 |" in markdown
    ablation_md = markdown.split("# Ablation")[1]
    assert "| VAPL-1 | <u>80.0 ± 2.0</u> |" in ablation_md
    assert "| VAPL | **85.0 ± 5.0** |" in ablation_md
    latex = (out / "report.tex").read_text()
    assert "VAPL (prompted) & \\textbf{85.0 $\\pm$ 5.0}" in latex
    assert "VAPL (unprompted) & \\underline{75.0 $\\pm$ 0.0}" in latex
    from PIL import Image

    assert Image.open(out / "bars.png").size[0] > 300
    with (out / "results.csv").open() as handle:
        lines = list(csv.DictReader(handle))
    assert len(lines) == 3 * 4 + 3 * 8 + 3 * 8  # baseline one head, VAPL and VAPL-1 two


def test_a_wandb_offline_run_folder_is_read_like_a_csv_run(tmp_path, monkeypatch):
    import wandb

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "home"))
    config = {
        "seed_everything": 4,
        "model": {"class_path": "vapl.methods.GRADIA", "init_args": {}},
        "data": {"class_path": "datamodules.SyntheticDataModule", "init_args": {}},
    }
    run = wandb.init(dir=str(tmp_path), mode="offline", project="p", config={"config": config})
    run.log({"val/unprompted/acc": 0.5, "test/unprompted/acc": 0.25, "test/unprompted/f1": 0.5})
    run.summary["best/val/unprompted/acc"] = 0.625
    folder = Path(run.dir).parent
    run.finish()
    wait_until_finished(folder, timeout=120)  # W&B's service writes the file in the background
    assert "WANDB_MODE" not in os.environ
    (result,) = collect_runs([tmp_path])
    assert (result.identity.method, result.identity.dataset, result.identity.seed) == (
        "GRADIA",
        "demo",
        4,
    )
    assert result.source == "wandb"
    assert result.split_metrics("test") == {"test/unprompted/acc": 0.25, "test/unprompted/f1": 0.5}
    assert result.best_val == {"val/unprompted/acc": 0.625}
    assert read_wandb_run(result.path).finished


GRID = """
output: {output}
seeds: [0, 1]
datasets:
  synthetic: [demo.yaml]
methods:
  Baseline: [methods/baseline.yaml]
  VAPL-4: [methods/vapl4.yaml]
overrides: ["--trainer.max_epochs=1"]
wandb: true
"""


def test_the_benchmark_grid_skips_finished_runs_and_prints_one_command_per_job(tmp_path, capsys):
    grid = tmp_path / "grid.yaml"
    grid.write_text(GRID.format(output=tmp_path / "out"))
    runs, settings = load_grid(grid)
    assert [(r.dataset, r.method, r.seed) for r in runs] == [
        ("synthetic", "Baseline", 0),
        ("synthetic", "Baseline", 1),
        ("synthetic", "VAPL-4", 0),
        ("synthetic", "VAPL-4", 1),
    ]
    assert runs[2].folder == tmp_path / "out" / "synthetic" / "VAPL-4" / "seed0"
    assert runs[2].configs[0].endswith("configs/demo.yaml")
    assert runs[2].configs[1].endswith("configs/methods/vapl4.yaml")
    generated = run_config(runs[2], settings["wandb"])
    assert generated["seed_everything"] == 0
    assert [lg["class_path"].rsplit(".", 1)[1] for lg in generated["trainer"]["logger"]] == [
        "CSVLogger",
        "WandbRunLogger",
    ]
    args = command(runs[2], settings["overrides"])
    assert args[:4] == [sys.executable, "-m", "vapl", "fit-test"]
    assert args[-3:] == ["--config", str(runs[2].folder / "run.yaml"), "--trainer.max_epochs=1"]

    # seed 1 of the Baseline already finished: only three jobs are left
    write_csv_run(
        runs[1].folder / "version_0",
        BASELINE,
        1,
        heads({"unprompted": _four(0.5)}),
    )
    assert is_finished(runs[1]) and not is_finished(runs[0])
    benchmark_main(["--config", str(grid), "--launch", "print"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    assert all("fit-test" in line and "run.yaml" in line for line in lines)
    assert (runs[0].folder / "run.yaml").is_file()


@pytest.mark.slow
def test_a_benchmark_runs_the_grid_skips_what_finished_and_ends_with_the_report(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[2]))
    grid = tmp_path / "grid.yaml"
    grid.write_text(
        GRID.format(output=tmp_path / "out")
        .replace("seeds: [0, 1]", "seeds: [0]")
        .replace("wandb: true", "wandb: false")
    )
    tiny = [
        "--",
        "--data.init_args.n_train=16",
        "--data.init_args.n_val=8",
        "--data.init_args.n_test=8",
        "--data.init_args.image_size=16",
        "--trainer.enable_progress_bar=false",
    ]
    benchmark_main(["--config", str(grid), "--fail-fast", *tiny])
    markdown = (tmp_path / "out" / "report" / "report.md").read_text()
    assert "| Baseline |" in markdown and "| VAPL-4 |" in markdown  # the ablation table
    logs = sorted((tmp_path / "out").rglob("log.txt"))
    assert len(logs) == 2
    before = [p.stat().st_mtime for p in logs]
    benchmark_main(["--config", str(grid), *tiny])  # everything finished: nothing runs again
    assert [p.stat().st_mtime for p in logs] == before
