from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vapl.methods import VAPL, Baseline
from vapl.training.cli import build_cli
from vapl.training.configs import ConfigNotFoundError, bundled_config_dir, resolve_config_args

TINY_DATA = [
    "--data.init_args.n_train=16",
    "--data.init_args.n_val=8",
    "--data.init_args.n_test=8",
    "--data.init_args.image_size=16",
    "--data.init_args.batch_size=8",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]
TINY = [
    *TINY_DATA,
    "--model.init_args.n_masks=8",
    "--trainer.max_epochs=1",
    "--trainer.log_every_n_steps=1",
]
FAST = [*TINY_DATA, "--trainer.fast_dev_run=true"]


def _logged_keys(root: Path) -> set[str]:
    keys: set[str] = set()
    for path in root.rglob("metrics.csv"):
        with path.open() as handle:
            keys |= set(next(csv.reader(handle)))
    return keys


def test_fit_then_test_on_the_demo_config_logs_the_shared_metric_keys(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # bundled configs are found from any directory
    phases = ["--model.init_args.f_epochs=1", "--model.init_args.g_epochs=1"]
    cli = build_cli(["fit", "--config", "demo.yaml", *TINY, *phases])
    assert isinstance(cli.model, VAPL)
    assert cli.model.hparams.num_classes == cli.datamodule.num_classes == 2
    assert cli.model.hparams.in_channels == cli.datamodule.in_channels == 1
    checkpoint = next(tmp_path.rglob("*.ckpt"))
    build_cli(["test", "--config", "demo.yaml", *TINY, "--ckpt_path", str(checkpoint)])
    keys = _logged_keys(tmp_path / "runs")
    for stage in ("val", "test"):
        for head in ("prompted", "unprompted"):
            for metric in ("acc", "precision", "recall", "f1"):
                assert f"{stage}/{head}/{metric}" in keys
    assert {"train/loss_pred", "train/loss_param", "train/loss_activ", "train/loss_agg"} <= keys


def test_a_method_overlay_composes_after_the_dataset_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = build_cli(["fit", "--config", "demo.yaml", "--config", "methods/baseline.yaml", *FAST])
    assert isinstance(cli.model, Baseline)
    assert cli.model.hparams.backbone == "tiny"  # kept from the dataset config


@pytest.mark.parametrize("overlay", ["vapl1", "vapl2", "vapl3", "vapl4"])
def test_each_ablation_overlay_sets_its_flag(tmp_path, monkeypatch, overlay):
    monkeypatch.chdir(tmp_path)
    cli = build_cli(
        ["--config", "demo.yaml", "--config", f"methods/{overlay}.yaml", *TINY], run=False
    )
    flags = {
        "vapl1": "use_refinement",
        "vapl2": "use_param_loss",
        "vapl3": "use_activ_loss",
        "vapl4": "use_weight_fn",
    }
    for name in flags.values():
        assert cli.model.hparams[name] is (name != flags[overlay])


def test_an_unknown_config_name_lists_the_bundled_ones():
    with pytest.raises(ConfigNotFoundError, match="demo.yaml"):
        resolve_config_args(["fit", "--config", "no-such-config.yaml"])


def test_config_arguments_in_every_spelling_are_resolved(tmp_path):
    own = tmp_path / "mine.yaml"
    own.write_text("{}\n")
    bundled = str(bundled_config_dir() / "demo.yaml")
    args = ["fit", "-c", "demo", f"--config={own}", "--config", "methods/baseline.yaml"]
    assert resolve_config_args(args) == [
        "fit",
        "-c",
        bundled,
        f"--config={own}",
        "--config",
        str(bundled_config_dir() / "methods/baseline.yaml"),
    ]


def test_the_console_script_runs_from_another_directory(tmp_path):
    script = Path(sys.executable).with_name("vapl")
    if not script.exists():
        pytest.skip("the vapl console script is not installed in this environment")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    result = subprocess.run(
        [str(script), "fit", "--config", "demo.yaml", *FAST],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "fast_dev_run" in result.stderr + result.stdout


def test_vapl_commands_passing_their_arguments_get_no_warning_about_it(monkeypatch, recwarn):
    # vapl fit-test ARGS: sys.argv holds the command line, build_cli gets the resolved ARGS
    monkeypatch.setattr(sys, "argv", ["vapl", "fit-test", "--config", "demo.yaml"])
    build_cli(["--config", "demo.yaml", *FAST], run=False)
    assert not [w for w in recwarn if "args parameter" in str(w.message)]
