"""Run names, W&B mode selection and the loggers the vapl command configures (no run is started)."""

from __future__ import annotations

import os

import pytest

from vapl.training.cli import build_cli
from vapl.training.loggers import WandbRunLogger, has_api_key, resolve_mode
from vapl.training.run_names import (
    VAPL_VARIANTS,
    RunIdentity,
    dataset_name,
    identity_from_config,
    method_name,
)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({}, "VAPL"),
        ({"use_refinement": False}, "VAPL-1"),
        ({"use_param_loss": False}, "VAPL-2"),
        ({"use_activ_loss": False}, "VAPL-3"),
        ({"use_weight_fn": False}, "VAPL-4"),
        ({"use_param_loss": False, "use_activ_loss": False}, "VAPL-2+3"),
    ],
)
def test_vapl_ablations_are_named_after_the_flags_they_turn_off(flags, expected):
    assert method_name("vapl.methods.VAPL", {"n_masks": 8, **flags}) == expected


def test_vapl_variants_carry_their_options_and_defaults_match_the_signature():
    import inspect

    from vapl.methods import VAPL

    signature = inspect.signature(VAPL.__init__).parameters
    for option, default in VAPL_VARIANTS.items():
        assert signature[option].default == default, option
    path = "vapl.methods.VAPL"
    assert method_name(path, {"normalization": "total_weight", "loss_reduction": "sum"}) == "VAPL"
    assert method_name(path, {"normalization": "max"}) == "VAPL[normalization=max]"
    assert (
        method_name(path, {"use_refinement": False, "unrefined_attention": "keep_undecided"})
        == "VAPL-1[unrefined_attention=keep_undecided]"
    )
    assert method_name(path, {"unrefined_attention": "keep_undecided"}) == "VAPL"  # unused
    both = method_name(path, {"use_param_loss": False, "g_activ_loss": True, "phase_unit": "batch"})
    assert both == "VAPL-2[phase_unit=batch,g_activ_loss=true]"
    assert RunIdentity("VAPL-1[unrefined_attention=keep_undecided]", "x", 0).is_ablation


def test_other_methods_and_datasets_are_named_after_their_class():
    assert method_name("vapl.methods.Baseline", {"lr": 1.0}) == "Baseline"
    assert dataset_name("datamodules.SyntheticDataModule") == "demo"
    assert dataset_name("datamodules.FolderDataModule", {"root": "/data/lung_ct/"}) == (
        "folder-lung_ct"
    )
    identity = identity_from_config(
        {
            "seed_everything": 3,
            "model": {"class_path": "vapl.methods.VAPL", "init_args": {"use_weight_fn": False}},
            "data": {"class_path": "datamodules.SyntheticDataModule", "init_args": {}},
        }
    )
    assert identity == RunIdentity("VAPL-4", "demo", 3)
    assert identity.name == "VAPL-4_demo_seed3"
    assert identity.tags == ["VAPL-4", "VAPL", "ablation"]


def test_the_wandb_overlay_names_the_run_groups_it_and_adds_the_dashboard(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    cli = build_cli(
        [
            "--config",
            "demo.yaml",
            "--config",
            "methods/vapl3.yaml",
            "--config",
            "logger/wandb.yaml",
            "--seed_everything=7",
        ],
        run=False,
    )
    csv_logger, wandb_logger = cli.trainer.loggers
    assert isinstance(wandb_logger, WandbRunLogger)
    settings = wandb_logger._wandb_init
    assert settings["name"] == "VAPL-3_demo_seed7"
    assert settings["group"] == "demo"
    assert settings["tags"] == ["VAPL-3", "VAPL", "ablation", "demo"]
    assert settings["mode"] == "offline"
    assert "anonymous" not in settings  # W&B warns that the setting has no effect
    assert wandb_logger._experiment is None  # nothing started yet
    assert csv_logger.log_dir.endswith(os.path.join("demo", "VAPL-3_demo_seed7", "version_0"))
    assert [type(c).__name__ for c in cli.trainer.callbacks].count("WandbDashboard") == 1


def test_a_config_without_wandb_gets_no_dashboard(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = build_cli(["--config", "demo.yaml"], run=False)
    assert "WandbDashboard" not in [type(c).__name__ for c in cli.trainer.callbacks]
    # demo.yaml's CSV log is named after the run: runs/demo/VAPL_demo_seed0/version_N
    assert cli.trainer.loggers[0].log_dir.endswith(
        os.path.join("demo", "VAPL_demo_seed0", "version_0")
    )


def test_mode_is_offline_unless_logged_in_or_set(tmp_path):
    empty = tmp_path / "netrc-empty"
    empty.write_text("")
    logged_in = tmp_path / "netrc"
    logged_in.write_text("machine api.wandb.ai\n  login user\n  password abc123\n")
    assert resolve_mode(environ={}, netrc_path=empty) == "offline"
    assert resolve_mode(environ={}, netrc_path=logged_in) == "online"
    assert resolve_mode(environ={"WANDB_API_KEY": "k"}, netrc_path=empty) == "online"
    assert resolve_mode(environ={"WANDB_MODE": "dryrun"}, netrc_path=logged_in) == "offline"
    assert resolve_mode(environ={"WANDB_MODE": "disabled"}, netrc_path=empty) == "disabled"
    assert resolve_mode("offline", environ={"WANDB_API_KEY": "k"}) == "offline"
    other_host = {"WANDB_BASE_URL": "https://wandb.example.org"}
    assert not has_api_key(other_host, netrc_path=logged_in)
    with pytest.raises(ValueError, match="online, offline or disabled"):
        resolve_mode(environ={"WANDB_MODE": "sometimes"})


def test_an_unreachable_server_means_offline_without_touching_the_environment(
    tmp_path, monkeypatch
):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "not-a-real-key")
    # A reserved documentation address (RFC 5737) that no server answers.
    monkeypatch.setenv("WANDB_BASE_URL", "https://192.0.2.1:9")
    with pytest.warns(UserWarning, match="logged offline"):
        logger = WandbRunLogger(save_dir=str(tmp_path), probe_timeout=0.2)
    assert logger.mode == "offline" and logger._wandb_init["mode"] == "offline"
    assert "WANDB_MODE" not in os.environ


def test_a_failing_wandb_start_falls_back_to_offline_then_to_disabled(tmp_path, monkeypatch):
    import wandb

    import vapl.training.loggers

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setattr(vapl.training.loggers, "host_reachable", lambda host, timeout: True)
    real_init, modes = wandb.init, []

    def failing_init(**kwargs):
        modes.append(kwargs["mode"])
        if kwargs["mode"] != "disabled":
            raise TimeoutError("the service did not answer")
        return real_init(**kwargs)

    monkeypatch.setattr(wandb, "init", failing_init)
    logger = WandbRunLogger(save_dir=str(tmp_path), mode="online")
    with pytest.warns(UserWarning, match="did not start"):
        run = logger.experiment
    assert modes == ["online", "offline", "disabled"]
    assert logger.mode == "disabled"
    logger.log_metrics({"val/acc": 0.5}, step=0)  # logging goes on, to nowhere
    run.finish()
    assert "WANDB_MODE" not in os.environ
