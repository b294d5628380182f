"""LightningCLI for vapl: model, data and trainer from configs (``vapl fit|validate|test|predict``).

Configs compose left to right; each ``--config`` is looked up with
:func:`vapl.training.configs.resolve_config`. The ``vapl`` command itself, with vapl's own
subcommands, is :mod:`vapl.command`.

Every run keeps its checkpoints by :class:`~vapl.training.checkpoints.RunCheckpoint` (options
``--checkpoint.*``; left out with ``--trainer.enable_checkpointing=false`` or when the config
names its own ``ModelCheckpoint``). ``vapl fit ... --ckpt_path last`` resumes in the same run
folder (:mod:`vapl.training.run_folders`), and a run that fails before writing anything leaves no
run folder behind.
"""

from __future__ import annotations

import sys
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import ArgsType, LightningCLI

from datamodules.base import PromptedDataModule
from vapl.methods.base import MethodModule
from vapl.training.callbacks import RunConfigSaver
from vapl.training.checkpoints import RunCheckpoint
from vapl.training.configs import resolve_config_args
from vapl.training.loggers import fill_run_names
from vapl.training.run_folders import remove_unused_run_folder, resume_in_run_folder


class VaplCLI(LightningCLI):
    """LightningCLI with the model's class count and input channels taken from the datamodule,
    W&B runs named after method, data set and seed, the full config logged to W&B, vapl's
    checkpoint policy and resuming in the same run folder."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        kwargs.setdefault("save_config_callback", RunConfigSaver)
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:  # type: ignore[no-untyped-def]
        parser.link_arguments(
            "data.num_classes", "model.init_args.num_classes", apply_on="instantiate"
        )
        parser.link_arguments(
            "data.in_channels", "model.init_args.in_channels", apply_on="instantiate"
        )
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")

    def before_instantiate_classes(self) -> None:
        fill_run_names(self.config[self.subcommand] if self.subcommand else self.config)

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The trainer, with :class:`RunCheckpoint` unless checkpointing is off or the config
        configures its own ``ModelCheckpoint``."""
        callbacks = [
            self._get(self.config_init, c) for c in self._parser(self.subcommand).callback_keys
        ]
        config = {**self._get(self.config_init, "trainer", default={}), **kwargs}
        own = config.get("callbacks") or []
        own = own if isinstance(own, list) else [own]
        if config.get("enable_checkpointing") is False or any(
            isinstance(c, ModelCheckpoint) for c in own
        ):
            callbacks = [c for c in callbacks if not isinstance(c, RunCheckpoint)]
        return self._instantiate_trainer(config, callbacks)

    def before_fit(self) -> None:
        """``--ckpt_path last`` (or a checkpoint in a run folder) continues in that folder."""
        arguments = self.config_init[self.subcommand]
        ckpt_path = arguments.get("ckpt_path")
        if ckpt_path:
            arguments["ckpt_path"] = resume_in_run_folder(self.trainer, str(ckpt_path))

    def _run_subcommand(self, subcommand: str) -> None:
        try:
            super()._run_subcommand(subcommand)
        except BaseException:
            remove_unused_run_folder(getattr(self, "trainer", None))
            raise


def build_cli(args: ArgsType = None, run: bool = True) -> VaplCLI:
    """Parse ``args`` (default: the command line), build model, data and trainer, and run the
    subcommand; returns the CLI object, whose ``trainer``, ``model`` and ``datamodule`` tests read."""
    resolved = resolve_config_args(list(sys.argv[1:] if args is None else args))
    if args is None:  # LightningCLI reads the command line itself: give it the resolved one
        sys.argv = [sys.argv[0], *resolved]
    return VaplCLI(
        MethodModule,
        PromptedDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        args=None if args is None else resolved,
        run=run,
    )
