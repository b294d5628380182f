"""LightningCLI for vapl: model, data and trainer from configs (``vapl fit|validate|test|predict``).

Configs compose left to right; each ``--config`` is looked up with
:func:`vapl.training.configs.resolve_config`. The ``vapl`` command itself, with vapl's own
subcommands, is :mod:`vapl.command`.

Beyond LightningCLI: argument errors are raised (jsonargparse's ``ArgumentError``, for the
command to print in one line) instead of printing the whole usage; a ``ValueError`` a class
raises on its arguments while being built becomes a
:class:`~vapl.training.user_errors.ConfigValueError`; the help is plain text
(:mod:`vapl.training.help`); progress is plain lines when standard error is not a terminal
(:mod:`vapl.training.progress`); and a GPU-sized run on the CPU gets a hint about ``cpu.yaml``.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

from jsonargparse import Namespace
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.cli import ArgsType, LightningCLI
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from datamodules.base import PromptedDataModule
from vapl.core.errors import UserInputError
from vapl.methods.base import MethodModule
from vapl.training.callbacks import RunConfigSaver
from vapl.training.configs import data_set_config_names, resolve_config_args
from vapl.training.help import (
    SUBCOMMAND_DESCRIPTIONS,
    VaplHelpFormatter,
    retitle_groups,
    subcommand_description,
)
from vapl.training.loggers import fill_run_names
from vapl.training.progress import wants_plain_progress
from vapl.training.user_errors import ConfigValueError, causes

PLAIN_PROGRESS_BAR = "vapl.training.progress.PlainProgressBar"
#: Backbones too slow to train at full size on a CPU: :meth:`VaplCLI.after_instantiate_classes`
#: suggests ``cpu.yaml`` when one runs there.
GPU_SIZED_BACKBONES = ("resnet18",)


def _class_name(entry: Any) -> str:
    path = entry if isinstance(entry, str) else getattr(entry, "class_path", "") or ""
    return str(path).rsplit(".", 1)[-1]


def add_plain_progress_bar(config: Any) -> bool:
    """Add :class:`~vapl.training.progress.PlainProgressBar` to a resolved config's callbacks
    unless progress bars are off or a progress bar callback is configured; True if added."""
    trainer = config.trainer
    if trainer.get("enable_progress_bar") is False:
        return False
    callbacks = trainer.get("callbacks") or []
    callbacks = list(callbacks) if isinstance(callbacks, list | tuple) else [callbacks]
    if any("ProgressBar" in _class_name(callback) for callback in callbacks):
        return False
    callbacks.append(Namespace(class_path=PLAIN_PROGRESS_BAR, init_args=Namespace()))
    trainer.callbacks = callbacks
    return True


def _raising_class(error: BaseException) -> str | None:
    """The class whose ``__init__`` raised ``error`` (the outermost such frame), if any."""
    tb = error.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        owner = frame.f_locals.get("self") if frame.f_code.co_name == "__init__" else None
        if owner is not None:
            return type(owner).__name__
        tb = tb.tb_next
    return None


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
        retitle_groups(parser)

    def parse_arguments(self, parser, args: ArgsType) -> None:  # type: ignore[no-untyped-def]
        """LightningCLI's, without its warning about ``args`` and ``sys.argv`` both being given:
        vapl's own commands (``vapl fit-test``, the demo) pass the arguments they resolved."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter")
            super().parse_arguments(parser, args)

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        fill_run_names(config)
        if wants_plain_progress():
            add_plain_progress_bar(config)

    def instantiate_classes(self) -> None:
        """LightningCLI's; a ``ValueError`` or Lightning's ``MisconfigurationException`` raised
        while building a class is raised as a :class:`ConfigValueError` naming the class (module
        docstring). A :class:`UserInputError` is left as it is: ``vapl`` finds it in the chain."""
        try:
            super().instantiate_classes()
        except Exception as error:
            chain = list(causes(error))
            if any(isinstance(cause, UserInputError) for cause in chain):
                raise
            root = chain[-1]
            if isinstance(root, ValueError | MisconfigurationException):
                owner = _raising_class(root)
                raise ConfigValueError(f"{owner}: {root}" if owner else str(root)) from error
            raise

    def after_instantiate_classes(self) -> None:
        """A hint when a GPU-sized model is about to train on the CPU."""
        if self.subcommand not in ("fit", None):
            return
        hparams = getattr(self.model, "hparams", {})
        on_cpu = isinstance(self.trainer.accelerator, CPUAccelerator)
        if on_cpu and hparams.get("backbone") in GPU_SIZED_BACKBONES:
            rank_zero_info(
                f"vapl: training {hparams.get('backbone')} on the CPU is slow at this config's "
                "sizes; for a quick run add --config cpu.yaml after the data set config "
                "(a tiny CNN at 64 px, docs/configs.md)."
            )


def build_cli(args: ArgsType = None, run: bool = True) -> VaplCLI:
    """Parse ``args`` (default: the command line), build model, data and trainer, and run the
    subcommand; returns the CLI object, whose ``trainer``, ``model`` and ``datamodule`` tests read."""
    resolved = resolve_config_args(list(sys.argv[1:] if args is None else args))
    if args is None:  # LightningCLI reads the command line itself: give it the resolved one
        sys.argv = [sys.argv[0], *resolved]
    parser_kwargs: dict[str, Any] = {
        "prog": "vapl",
        "exit_on_error": False,  # vapl.command prints the error in a line or two
        "formatter_class": VaplHelpFormatter,
    }
    if run:
        names = data_set_config_names()
        for name in SUBCOMMAND_DESCRIPTIONS:
            parser_kwargs[name] = {"description": subcommand_description(name, names)}
    return VaplCLI(
        MethodModule,
        PromptedDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        args=None if args is None else resolved,
        run=run,
        parser_kwargs=parser_kwargs,
    )
