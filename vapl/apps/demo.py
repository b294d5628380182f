"""``python -m vapl.apps.demo`` (``make demo``): VAPL and the Baseline on the built-in demo data.

Trains and tests both through the ``vapl`` CLI with ``configs/demo.yaml``, at the same number of
epochs of network updates (VAPL's G epochs, which train only g, come on top), prints their budgets
and test metrics side by side, and draws a few test samples with their prompts and refined prompts.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import torch

from vapl.core.metrics import METRIC_NAMES
from vapl.training.budget import budget_of
from vapl.training.cli import build_cli

METHODS = {
    "VAPL": [],
    "Baseline": ["--config", "methods/baseline.yaml"],
}


def run_method(name: str, overlay: list[str], root: Path, extra: list[str]) -> dict[str, float]:
    """Fit on the demo config plus ``overlay``, test the last weights, return the test metrics."""
    args = [
        "fit",
        "--config",
        "demo.yaml",
        *overlay,
        "--trainer.default_root_dir",
        str(root / name),
    ]
    cli = build_cli([*args, *extra])
    config = cli.config.get("fit", cli.config)
    budget = budget_of(config.as_dict())
    print(f"{budget.describe()}; the trainer ran {cli.trainer.current_epoch} epochs", flush=True)
    val = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith("val/")}
    results = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)[0]
    results = {k: float(v) for k, v in results.items()}
    results.update(val)
    results["_budget"] = budget  # type: ignore[assignment]
    results["_module"] = cli.model  # type: ignore[assignment]
    results["_datamodule"] = cli.datamodule  # type: ignore[assignment]
    return results


def format_table(results: dict[str, dict[str, float]]) -> str:
    """Rows: VAPL prompted, VAPL unprompted, Baseline; columns: test metrics and val accuracy."""
    header = f"{'model':<24}" + "".join(f"{m:>10}" for m in METRIC_NAMES) + f"{'val acc':>10}"
    lines = [header, "-" * len(header)]
    for method, metrics in results.items():
        heads = ("prompted", "unprompted") if "test/prompted/acc" in metrics else ("unprompted",)
        for head in heads:
            label = f"{method} ({head})" if len(heads) > 1 else method
            row = "".join(
                f"{metrics.get(f'test/{head}/{m}', float('nan')):>10.3f}" for m in METRIC_NAMES
            )
            row += f"{metrics.get(f'val/{head}/acc', float('nan')):>10.3f}"
            lines.append(f"{label:<24}{row}")
    return "\n".join(lines)


def draw_examples(results: dict[str, dict[str, float]], path: Path, count: int = 4) -> Path:
    """Test samples in the panel style of :mod:`vapl.core.figures`: image, prompt, the refined
    prompt, the Grad-CAM of VAPL's prompted and unprompted models and of the Baseline."""
    from vapl.core.figures import PanelRow, grad_cam_maps, save_panel_figure

    module = results["VAPL"]["_module"]
    dataset = results["VAPL"]["_datamodule"].datasets["test"]
    baseline = results["Baseline"]["_module"]
    batch = torch.utils.data.default_collate([dataset[2 * i] for i in range(count)])
    module.eval()
    baseline.eval()
    with torch.no_grad():
        out = module.predict_both(batch)
        base_probs = torch.softmax(baseline(batch["image"]), dim=1)
    refined = out["refined_prompt"]
    cams = {
        "prompted": grad_cam_maps(module.prompted_model, batch["image"] * refined[:, None]),
        "unprompted": grad_cam_maps(module.unprompted_model, batch["image"]),
        "Baseline": grad_cam_maps(baseline.model, batch["image"]),
    }
    heads = {
        "prompted": out["prompted_probs"],
        "unprompted": out["unprompted_probs"],
        "Baseline": base_probs,
    }
    rows = []
    for i in range(count):
        said = " | ".join(
            f"{name} {int(p[i].argmax())} ({float(p[i].max()):.2f})" for name, p in heads.items()
        )
        rows.append(
            PanelRow(
                batch["image"][i],
                batch["prompt"][i],
                refined[i] if bool(batch["has_prompt"][i]) else None,
                {name: cam[i] for name, cam in cams.items()},
                title=f"{batch['id'][i]} | label {int(batch['label'][i])} | {said}",
            )
        )
    title = (
        "Demo test samples: VAPL prompted (f_m on image x A), VAPL unprompted (f_o), Baseline"
        " (predicted class and probability at the left)"
    )
    return save_panel_figure(path, rows, title)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="runs/demo", help="where runs and the figure go")
    parser.add_argument("--figure", default=None, help="where to save the example figure")
    parser.add_argument("extra", nargs="*", help="extra CLI overrides, e.g. --trainer.max_epochs=2")
    options, unknown = parser.parse_known_args(argv)
    warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter.*")
    root = Path(options.root)
    extra = [*options.extra, *unknown]
    results: dict[str, dict[str, float]] = {}
    for name, overlay in METHODS.items():
        start = time.perf_counter()
        print(f"\n=== {name}: training and testing on the demo data ===", flush=True)
        results[name] = run_method(name, overlay, root, extra)
        print(f"{name} took {time.perf_counter() - start:.0f} s", flush=True)
    figure = draw_examples(results, Path(options.figure or root / "examples.png"))
    budgets = {name: r["_budget"].network_epochs for name, r in results.items()}  # type: ignore[union-attr]
    equal = "equal" if len(set(budgets.values())) == 1 else "UNEQUAL"
    print(f"\nBudgets ({equal} network updates; VAPL's G epochs train only g):")
    for result in results.values():
        print(f"  {result['_budget'].describe()}")  # type: ignore[union-attr]
    print("\nTest metrics on the demo data (test markers are independent of the label):\n")
    print(format_table(results))
    print(f"\nExample prompts and refined prompts: {figure}")


if __name__ == "__main__":
    main()
