"""DDP on the CPU (gloo, two processes): the same results as one process with the same global
batch, the same weights on every process, per-process masks, and resuming.

Tolerance: parameters, buffers and validation metrics within 1e-4 (absolute) of the single-process
run; the processes' weights identical (difference 0). The backbone is ``tiny_gn`` (group norm):
batch norm normalises each process's half-batch on its own, and SyncBatchNorm needs GPUs.

``ddp_fork`` runs in about 3 s and is part of ``make test``; ``ddp_spawn`` (about 30 s here, it
imports everything again in each process) and the ``vapl`` command in a subprocess are ``slow``.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint

from datamodules.base import EpochSeededSampler
from vapl.methods import VAPL, Baseline
from vapl.results.runs import collect_runs
from vapl.training.callbacks import RankConsistencyCheck
from vapl.training.tiny import tiny_data, tiny_method, tiny_trainer
from vapl.training.wandb_records import read_wandb_run

TOLERANCE = 1e-4  # float sums in another order, amplified by a few Adam steps
DIFFERENT = 1e-3  # what a run with another batch differs by, at least
FORK = "ddp_fork_find_unused_parameters_true"
SPAWN = "ddp_spawn_find_unused_parameters_true"


class SaveRankState(Callback):
    """Each process writes its final weights and metrics to ``folder/rankR.pt``."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def on_fit_end(self, trainer, module) -> None:
        state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        torch.save(
            {"state": state, "metrics": metrics},
            Path(self.folder) / f"rank{trainer.global_rank}.pt",
        )


def _fit(
    folder: Path,
    devices: int,
    strategy: str,
    batch_size: int,
    method: str = "vapl",
    max_epochs: int = 2,
    ckpt_path: str | None = None,
    checkpoint_dir: Path | None = None,
    phases: dict | None = None,
) -> list[dict]:
    """Fit on tiny demo data; return every process's final weights and metrics. VAPL alternates
    F and G epochs (``max_epochs`` of each, one by one) unless ``phases`` says otherwise."""
    folder.mkdir(parents=True, exist_ok=True)
    seed_everything(0)
    if method == "vapl":
        phases = phases or dict(f_epochs=1, g_epochs=1)
        model = tiny_method(VAPL, backbone="tiny_gn", lr=1e-2, **phases)
    else:
        model = tiny_method(Baseline, backbone="tiny_gn", lr=1e-2)
    data = tiny_data(n_train=32, n_val=16, batch_size=batch_size)
    callbacks = [SaveRankState(str(folder)), RankConsistencyCheck()]
    if checkpoint_dir is not None:
        callbacks.append(ModelCheckpoint(dirpath=checkpoint_dir, save_last=True, save_top_k=0))
    trainer = tiny_trainer(
        devices=devices,
        strategy=strategy,
        max_epochs=max_epochs,
        enable_checkpointing=checkpoint_dir is not None,
        callbacks=callbacks,
    )
    trainer.fit(model, datamodule=data, ckpt_path=ckpt_path)
    return [torch.load(folder / f"rank{r}.pt") for r in range(devices)]


def _max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(
        float((a[k].double() - b[k].double()).abs().max()) if a[k].numel() else 0.0
        for k in a
        if a[k].is_floating_point()
    )


def _assert_same_as_one_process(ranks: list[dict], single: dict) -> None:
    for rank in ranks[1:]:
        assert _max_difference(rank["state"], ranks[0]["state"]) == 0.0
    assert _max_difference(ranks[0]["state"], single["state"]) < TOLERANCE
    val_keys = [k for k in single["metrics"] if k.startswith("val/")]
    assert any(k.endswith("/loss") for k in val_keys)
    for rank in ranks:
        for key in val_keys:
            assert rank["metrics"][key] == pytest.approx(single["metrics"][key], abs=TOLERANCE), key


def test_the_sampler_splits_each_global_batch_across_processes():
    single = list(EpochSeededSampler(20, seed=3))
    for epoch in (0, 1):
        samplers = [EpochSeededSampler(20, seed=3, num_replicas=2, rank=r) for r in range(2)]
        one = EpochSeededSampler(20, seed=3)
        for sampler in (*samplers, one):
            sampler.set_epoch(epoch)
        order = list(one)
        parts = [list(s) for s in samplers]
        for k in range(0, 10, 4):  # local batches of 4 -> global batches of 8
            assert sorted(parts[0][k : k + 4] + parts[1][k : k + 4]) == sorted(
                order[2 * k : 2 * k + 8]
            )
    # one process: the order is unchanged (a resumed single-process run sees the same batches)
    generator = torch.Generator().manual_seed(3 * 1_000_003)
    assert single == torch.randperm(20, generator=generator).tolist()
    # an odd size is padded by repeating the start of the order
    odd = [list(EpochSeededSampler(5, num_replicas=2, rank=r)) for r in range(2)]
    assert len(odd[0]) == len(odd[1]) == 3 and sorted(odd[0] + odd[1])[:5] == sorted(
        set(odd[0] + odd[1])
    )


@pytest.mark.parametrize("method", ["vapl", "baseline"])
@pytest.mark.parametrize("strategy", [FORK, pytest.param(SPAWN, marks=pytest.mark.slow)])
def test_two_processes_end_like_one_process_with_the_same_global_batch(
    tmp_path, monkeypatch, strategy, method
):
    monkeypatch.chdir(tmp_path)
    single = _fit(tmp_path / "one", 1, "auto", batch_size=16, method=method)[0]
    ranks = _fit(tmp_path / "two", 2, strategy, batch_size=8, method=method)
    _assert_same_as_one_process(ranks, single)
    if method == "vapl":
        # g, both networks and the phase counter were all updated, and agree
        assert ranks[0]["metrics"]["train/loss_agg"] == pytest.approx(
            single["metrics"]["train/loss_agg"], abs=TOLERANCE
        )
    # the comparison can fail: one process with the per-process batch ends elsewhere
    other = _fit(tmp_path / "half", 1, "auto", batch_size=8, method=method)[0]
    assert _max_difference(other["state"], single["state"]) > DIFFERENT
    # without a logger the consistency check writes nothing, least of all into the current folder
    assert not list(tmp_path.rglob("rank_consistency.json"))


def test_a_ddp_run_resumed_mid_cycle_ends_like_an_uninterrupted_one(tmp_path):
    # 32 samples, global batch 16: 2 batches an epoch; a cycle is 1 F + 2 G batches, so epoch 1
    # ends in the middle of a G phase (batch phases: the budget of 1 epoch of network updates runs
    # 3 trainer epochs, whose batches follow the same cycle as the 3-epoch run's first 6).
    batches = dict(phase_unit="batch", f_steps=1, g_steps=2)
    uninterrupted = _fit(tmp_path / "full", 2, FORK, batch_size=8, max_epochs=3, phases=batches)
    _fit(
        tmp_path / "first", 2, FORK, batch_size=8, max_epochs=1,
        checkpoint_dir=tmp_path / "ckpt", phases=batches,
    )  # fmt: skip
    resumed = _fit(
        tmp_path / "resumed",
        2,
        FORK,
        batch_size=8,
        max_epochs=3,
        ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"),
        phases=batches,
    )
    for a, b in zip(resumed, uninterrupted):
        assert _max_difference(a["state"], b["state"]) < TOLERANCE
        assert a["metrics"]["val/prompted/loss"] == pytest.approx(
            b["metrics"]["val/prompted/loss"], abs=TOLERANCE
        )


CLI_ARGS = [
    "--config",
    "demo.yaml",
    "--model.init_args.backbone=tiny_gn",
    "--model.init_args.n_masks=8",
    "--model.init_args.f_epochs=1",
    "--model.init_args.g_epochs=1",
    "--data.init_args.n_train=32",
    "--data.init_args.n_val=16",
    "--data.init_args.n_test=16",
    "--data.init_args.image_size=16",
    "--trainer.max_epochs=2",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.callbacks+=vapl.training.callbacks.RankConsistencyCheck",
]


def _last_values(root: Path) -> dict[str, float]:
    (path,) = root.rglob("metrics.csv")
    values: dict[str, float] = {}
    with path.open() as handle:
        for row in csv.DictReader(handle):
            values.update({k: float(v) for k, v in row.items() if v not in ("", None)})
    return values


@pytest.mark.slow
def test_the_vapl_command_under_ddp_matches_one_process(tmp_path):
    script = Path(sys.executable).with_name("vapl")
    if not script.exists():
        pytest.skip("the vapl console script is not installed in this environment")
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_CONFIG_DIR": str(tmp_path / "wandb-home"),
        "WANDB_CACHE_DIR": str(tmp_path / "wandb-home"),
        "WANDB_DATA_DIR": str(tmp_path / "wandb-home"),
    }
    two_processes = ["--config", "trainer/ddp_cpu.yaml", "--data.init_args.batch_size=8"]
    runs = {
        "one": ["--data.init_args.batch_size=16"],
        "two": [*two_processes, "--config", "logger/wandb.yaml"],  # W&B under DDP too
    }
    for name, extra in runs.items():
        (tmp_path / name).mkdir()
        result = subprocess.run(
            [str(script), "fit-test", *CLI_ARGS, *extra],
            cwd=tmp_path / name,
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr[-3000:]
    assert "Starting with 2 processes" in result.stderr + result.stdout
    one, two = _last_values(tmp_path / "one"), _last_values(tmp_path / "two")
    compared = [k for k in one if k.startswith(("val/", "test/"))]
    assert "test/prompted/acc" in compared and "val/unprompted/loss" in compared
    for key in compared:
        assert two[key] == pytest.approx(one[key], abs=TOLERANCE), key
    (consistency,) = (tmp_path / "two").rglob("rank_consistency.json")
    assert json.loads(consistency.read_text()) == {"world_size": 2, "max_difference": 0.0}
    (wandb_run,) = collect_runs([tmp_path / "two" / "runs" / "wandb"])  # one run, from rank 0
    assert wandb_run.metrics["test/prompted/acc"] == pytest.approx(one["test/prompted/acc"])
    assert read_wandb_run(wandb_run.path).summary["val/samples"]["count"] == 4
