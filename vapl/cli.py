"""The ``vapl`` command: LightningCLI with fit, validate, test and predict.

``vapl fit --config demo.yaml --config methods/baseline.yaml``: each ``--config`` that is not an
existing file is looked up in the bundled ``configs/`` folder, so configs work from any directory,
also when vapl is installed without its source tree. Configs compose left to right.

vapl's own subcommands are dispatched before LightningCLI is built (:data:`EXTRA_COMMANDS`):
``fit-test`` (fit, then test the best checkpoint in the same run), ``report`` (comparison tables
from finished runs), ``benchmark`` (a grid of methods, data sets and seeds) and ``predict-image``
(one image and a drawn prompt). ``vapl COMMAND --help`` describes each.
"""

from __future__ import annotations

import importlib
import sys
from importlib import resources
from pathlib import Path

from lightning.pytorch.cli import ArgsType, LightningCLI

from datamodules.base import PromptedDataModule
from vapl.callbacks import RunConfigSaver
from vapl.loggers import fill_run_names
from vapl.methods.base import MethodModule

CONFIG_FLAGS = ("--config", "-c")
#: vapl's own subcommands beside LightningCLI's: name -> module with a ``main(argv)``.
EXTRA_COMMANDS = {
    "crayon": "vapl.crayon",
    "fit-test": "vapl.fit_test",
    "report": "vapl.report",
    "benchmark": "vapl.benchmark",
    "predict-image": "vapl.predict_image",
}


def bundled_config_dir() -> Path:
    """The configs shipped with vapl: inside the installed package, else the source tree's."""
    packaged = Path(str(resources.files("vapl") / "configs"))
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "configs"


def resolve_config(name: str) -> str:
    """A config path as given when it is a file, else the bundled config of that name."""
    if Path(name).is_file():
        return name
    bundled = bundled_config_dir()
    for candidate in (bundled / name, bundled / f"{name}.yaml"):
        if candidate.is_file():
            return str(candidate)
    available = sorted(str(p.relative_to(bundled)) for p in bundled.rglob("*.yaml"))
    raise SystemExit(
        f"vapl: config {name!r} is neither a file nor a bundled config. "
        f"Bundled configs: {', '.join(available)}"
    )


def resolve_config_args(args: list[str]) -> list[str]:
    """Rewrite every ``--config X`` / ``--config=X`` / ``-c X`` with :func:`resolve_config`."""
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in CONFIG_FLAGS and i + 1 < len(args):
            out += [arg, resolve_config(args[i + 1])]
            i += 2
            continue
        flag, sep, value = arg.partition("=")
        if sep and flag in CONFIG_FLAGS:
            arg = f"{flag}={resolve_config(value)}"
        out.append(arg)
        i += 1
    return out


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


def main(args: ArgsType = None) -> None:
    """Entry point of the ``vapl`` console script; ``main([...])`` runs it in-process."""
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] in EXTRA_COMMANDS:
        importlib.import_module(EXTRA_COMMANDS[argv[0]]).main(argv[1:])
        return
    if argv[:1] in (["-h"], ["--help"]):
        print(f"vapl's own subcommands: {', '.join(EXTRA_COMMANDS)} (vapl COMMAND --help)\n")
    build_cli(args)


if __name__ == "__main__":
    main()
