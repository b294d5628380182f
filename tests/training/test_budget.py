"""Equal budgets: every bundled data set config gives every method overlay the same number of
epochs of network updates (VAPL's G epochs come on top), read from the composed configs as
``vapl fit --config X.yaml --config methods/Y.yaml`` would run them; nothing is trained."""

from __future__ import annotations

import pytest

from vapl.core.schedule import phase_at, schedule_length, trainer_epochs
from vapl.results.grid import load_grid
from vapl.training.budget import budget_of, compose_config
from vapl.training.configs import bundled_config_dir

CONFIGS = bundled_config_dir()
#: Data set configs (they name a data class); overlays such as cpu.yaml are composed onto them.
DATASETS = sorted(p.name for p in CONFIGS.glob("*.yaml") if "class_path" in p.read_text())
METHODS = sorted(f"methods/{p.name}" for p in (CONFIGS / "methods").glob("*.yaml"))
#: Arguments a data set config needs before it parses (its required settings).
REQUIRED = {"folder.yaml": ["--data.init_args.root=images"]}
#: Trainer settings that would end a run before its epochs: no config may set them.
LIMITS = ("max_steps", "max_time", "limit_train_batches")


def _budget(configs: list[str], extra: list[str]) -> tuple:
    args = [a for c in configs for a in ("--config", c)]
    config = compose_config([*args, *extra])
    trainer = config["trainer"]
    assert trainer.get("max_steps") in (None, -1), configs
    assert trainer.get("max_time") is None and trainer.get("limit_train_batches") in (None, 1.0)
    return budget_of(config)


@pytest.mark.parametrize("dataset", DATASETS)
def test_every_method_overlay_gets_the_data_sets_network_epochs(dataset):
    extra = REQUIRED.get(dataset, [])
    alone = _budget([dataset], extra)  # the data set config's own method: VAPL
    assert alone.method == "VAPL" and alone.phase_unit == "epoch"
    assert alone.trainer_epochs > alone.network_epochs  # the G epochs come on top
    for method in METHODS:
        budget = _budget([dataset, method], extra)
        assert budget.network_epochs == alone.network_epochs, (dataset, method, budget)
        if budget.phase_unit is not None:  # VAPL with a G phase: epochs as phases, G on top
            assert budget.phase_unit == "epoch", (dataset, method)
        else:
            assert budget.trainer_epochs == budget.network_epochs, (dataset, method, budget)


GRIDS = sorted(f"benchmark/{p.name}" for p in (CONFIGS / "benchmark").glob("*.yaml"))


@pytest.mark.parametrize("grid", GRIDS)
def test_the_benchmark_grids_give_every_method_the_same_network_epochs(grid):
    runs, settings = load_grid(grid)
    budgets: dict[str, set] = {}
    for run in {(r.dataset, r.method): r for r in runs}.values():
        budget = _budget(list(run.configs), settings["overrides"])
        budgets.setdefault(run.dataset, set()).add(budget.network_epochs)
    assert all(len(values) == 1 for values in budgets.values()), budgets


def test_the_schedule_gives_exactly_the_budget_of_f_units():
    for budget in range(1, 13):
        for f, g in ((1, 1), (2, 1), (3, 3), (5, 5), (4, 0)):
            total = schedule_length(budget, f, g)
            phases = [phase_at(u, f, g, budget) for u in range(total)]
            assert phases.count("F") == budget, (budget, f, g)
            assert phases[-1] == ("G" if g else "F")  # every F phase ends with a G phase
            assert trainer_epochs(budget, "epoch", f, g) == total
    # the paper: 10 cycles of 5 + 5, 50 network epochs
    assert schedule_length(50, 5, 5) == 100
    assert "".join(phase_at(u, 5, 5, 50) for u in range(10)) == "FFFFFGGGGG"
