"""The mask sweep's reader, summary, rule and page section on tiny fake run folders."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from vapl.results.mask_sweep import (
    BEGIN,
    END,
    find,
    main,
    read_cells,
    smallest_match,
    summarise,
    write_section,
)


def fake_run(
    output: Path,
    dataset: str,
    n: int,
    balanced: bool,
    seed: int,
    acc: tuple[float, float],
    wall: float,
) -> None:
    """A grid cell as `vapl benchmark` leaves it: timing.json, version_0/config.yaml and
    metrics.csv with a test row."""
    method = f"{'balanced' if balanced else 'iid'}-{n}"
    folder = output / dataset / method / f"seed{seed}"
    run = folder / "version_0"
    run.mkdir(parents=True)
    config = {
        "seed_everything": seed,
        "model": {
            "class_path": "vapl.methods.VAPL",
            "init_args": {"n_masks": n, "balanced_masks": balanced},
        },
        "data": {"class_path": "datamodules.SyntheticDataModule", "init_args": {}},
    }
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    columns = ["epoch", "val/prompted/acc", "test/prompted/acc", "test/unprompted/acc"]
    with (run / "metrics.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerow({"epoch": 0, "val/prompted/acc": 0.5})
        writer.writerow({"epoch": 1, "test/prompted/acc": acc[0], "test/unprompted/acc": acc[1]})
    (folder / "timing.json").write_text(json.dumps({"wall_s": wall, "cpu_s": wall / 2}))


# prompted accuracies of seeds 0, 1, 2 (unprompted: prompted - 0.1), wall seconds of the seeds
IID_1024 = (0.80, 0.84, 0.82)  # mean 0.82, sample std 0.02
BALANCED = {
    16: (0.70, 0.74, 0.72),  # mean 0.72 < 0.80: no
    32: (0.79, 0.81, 0.80),  # mean 0.80 >= 0.82 - 0.02: yes (the smallest)
    64: (0.83, 0.83, 0.83),  # yes
}
IID_64 = (0.76, 0.78, 0.77)  # mean 0.77: no


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    out = tmp_path / "runs"
    for seed in range(3):
        fake_run(
            out,
            "demo",
            1024,
            False,
            seed,
            (IID_1024[seed], IID_1024[seed] - 0.1),
            100.0 + 10 * seed,
        )
        fake_run(out, "demo", 64, False, seed, (IID_64[seed], IID_64[seed] - 0.1), 10.0)
        for n, accs in BALANCED.items():
            fake_run(out, "demo", n, True, seed, (accs[seed], accs[seed] - 0.1), float(n))
    return out


def test_reads_sampler_n_seed_accuracy_and_wall_from_the_folders(sweep: Path) -> None:
    cells = read_cells(sweep)
    assert len(cells) == 3 * 5
    cell = next(c for c in cells if (c.sampler, c.n_masks, c.seed) == ("iid", 1024, 2))
    assert cell.dataset == "demo"
    assert cell.acc == pytest.approx({"prompted": 0.82, "unprompted": 0.72})
    assert (cell.wall_s, cell.cpu_s) == (120.0, 60.0)


def test_means_and_sample_standard_deviations(sweep: Path) -> None:
    summaries = summarise(read_cells(sweep))
    reference = find(summaries, "demo", "iid", 1024)
    assert reference is not None and reference.seeds == 3
    mean, std = reference.acc["prompted"]
    assert mean == pytest.approx(0.82) and std == pytest.approx(0.02)  # (0.02^2 * 2 / 2) ** 0.5
    assert reference.acc["unprompted"] == pytest.approx((0.72, 0.02))
    assert reference.wall_s == pytest.approx((110.0, 10.0))
    assert reference.cpu_s == pytest.approx((55.0, 5.0))
    assert find(summaries, "demo", "balanced", 64).acc["prompted"] == pytest.approx((0.83, 0.0))


def test_smallest_balanced_n_within_one_std_of_iid_1024(sweep: Path) -> None:
    summaries = summarise(read_cells(sweep))
    assert smallest_match(summaries, "demo", "prompted") == 32
    assert smallest_match(summaries, "demo", "unprompted") == 32
    assert smallest_match(summaries, "demo", "prompted", sampler="iid") == 1024
    assert smallest_match(summaries, "other", "prompted") is None


def test_no_match_when_every_balanced_n_falls_short(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    for seed, acc in enumerate((0.9, 0.9, 0.9)):  # std 0: only >= 0.9 matches
        fake_run(out, "demo", 1024, False, seed, (acc, acc), 1.0)
        fake_run(out, "demo", 16, True, seed, (0.899, 0.9), 1.0)
    summaries = summarise(read_cells(out))
    assert smallest_match(summaries, "demo", "prompted") is None
    assert smallest_match(summaries, "demo", "unprompted") == 16


def test_section_is_replaced_between_the_markers(tmp_path: Path) -> None:
    doc = tmp_path / "performance.md"
    doc.write_text(f"# Page\n\nbefore\n\n{BEGIN}\nold table\n{END}\n\nafter\n")
    write_section(doc, "new table")
    write_section(doc, "newer table")
    text = doc.read_text()
    assert "old table" not in text and "new table\n" not in text
    assert text == f"# Page\n\nbefore\n\n{BEGIN}\nnewer table\n{END}\n\nafter\n"


def test_main_writes_the_figure_and_the_section(sweep: Path, tmp_path: Path, capsys) -> None:
    grid = tmp_path / "grid.yaml"
    grid.write_text(
        yaml.safe_dump(
            {
                "output": str(sweep),
                "datasets": {"demo": {"label": "Demo data", "configs": []}},
                "methods": {"iid-64": {"configs": []}},
            }
        )
    )
    doc, png = tmp_path / "perf.md", tmp_path / "images" / "masks.png"
    doc.write_text("# Performance\n")
    main(["--config", str(grid), "--doc", str(doc), "--figure", str(png)])
    text = doc.read_text()
    assert png.stat().st_size > 1000
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    assert "| balanced | 32 | 80.0 ± 1.0 | 70.0 ± 1.0 | 32 ± 0 | 16 ± 0 | 3 |" in text
    assert "| iid | 1024 | 82.0 ± 2.0 | 72.0 ± 2.0 | 110 ± 10 | 55 ± 5 | 3 |" in text
    assert "**Demo data**" in text
    assert "smallest balanced N within one std = **32**, 32 times fewer masks (at most 1/10" in text
    # means 0.82, 0.77, 0.72, 0.80, 0.83; seed std 0.02, 0.01, 0.02, 0.01, 0: mean 0.012
    assert (
        "within 11.0 points of each other; the standard deviation between seeds averages 1.2"
        in (text)
    )
