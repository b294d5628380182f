from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_torch_and_torchvision_load_together():
    import torch
    import torchvision.ops

    kept = torchvision.ops.nms(
        torch.tensor([[0.0, 0, 2, 2], [0, 0, 2, 2.1]]), torch.tensor([1.0, 0.5]), 0.5
    )
    assert kept.tolist() == [0]


@pytest.mark.slow
def test_an_installed_wheel_finds_its_bundled_configs_without_the_source_tree(tmp_path):
    wheels, target, work = tmp_path / "wheels", tmp_path / "site", tmp_path / "work"
    work.mkdir()
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT)], check=True)
    wheel = next(wheels.glob("vapl-*.whl"))
    subprocess.run(
        [*pip, "install", "-q", "--no-deps", "--target", str(target), str(wheel)], check=True
    )
    script = (
        "import vapl.training.configs as c, vapl.command as command; "
        "print(c.bundled_config_dir()); "
        "command.main(['fit', '--config', 'demo.yaml', '--config', 'methods/baseline.yaml', "
        "'--data.init_args.image_size=16', '--data.init_args.n_train=8', "
        "'--trainer.fast_dev_run=true', '--trainer.enable_progress_bar=false'])"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=work, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines()[0] == str(target / "vapl" / "configs")
