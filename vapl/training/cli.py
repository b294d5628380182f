"""LightningCLI for vapl: model, data and trainer from configs (``vapl fit|validate|test|predict``).

Configs compose left to right; each ``--config`` is looked up with
:func:`vapl.training.configs.resolve_config`. The ``vapl`` command itself, with vapl's own
subcommands, is :mod:`vapl.command`.
"""

from __future__ import annotations

import sys

from lightning.pytorch.cli import ArgsType, LightningCLI

from datamodules.base import PromptedDataModule
from vapl.methods.base import MethodModule
from vapl.training.callbacks import RunConfigSaver
from vapl.training.configs import resolve_config_args
from vapl.training.loggers import fill_run_names


class VaplCLI(LightningCLI):
    """LightningCLI with the model's class count and input channels taken from the datamodule,
    W&B runs named after method, data set and seed, and the full config logged to W&B."""

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

    def before_instantiate_classes(self) -> None:
        fill_run_names(self.config[self.subcommand] if self.subcommand else self.config)


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
