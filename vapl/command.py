"""The ``vapl`` command: every vapl command, dispatched from one table (:data:`COMMANDS`).

``vapl fit|validate|test|predict`` are LightningCLI's (:func:`vapl.training.cli.build_cli`); the
others are vapl's own, each a module with a ``main(argv)``. ``vapl`` and ``vapl --help`` list them
all with the bundled configs; ``vapl COMMAND --help`` describes one.

An error that is the user's input (a bad config value, a missing file or folder, bad data; see
:mod:`vapl.training.user_errors`) is printed as a short message, which names the file and line
where it has them, and the command exits with status 2. ``--debug`` (anywhere on the command line)
or ``VAPL_DEBUG=1`` shows the traceback instead. Any other error is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import textwrap
from dataclasses import dataclass

from lightning.pytorch.cli import ArgsType

#: The module of LightningCLI's subcommands (``fit``, ...), which take the command name too.
LIGHTNING = "vapl.training.cli"


@dataclass(frozen=True)
class Command:
    """One ``vapl`` command: the module that runs it and what it does, in one line."""

    module: str
    summary: str


#: Every ``vapl`` command, in the order ``vapl --help`` lists them: the one dispatch table.
COMMANDS: dict[str, Command] = {
    "fit": Command(LIGHTNING, "train a method on a data set: vapl fit --config demo.yaml"),
    "validate": Command(LIGHTNING, "evaluate a checkpoint on the validation split"),
    "test": Command(LIGHTNING, "evaluate a checkpoint on the test split: --ckpt_path CKPT"),
    "predict": Command(LIGHTNING, "predict the data's predict split with a checkpoint"),
    "fit-test": Command(
        "vapl.training.fit_then_test", "fit, then test the best checkpoint in the same run"
    ),
    "report": Command("vapl.results.report", "comparison tables and bars.png from finished runs"),
    "benchmark": Command(
        "vapl.results.grid", "a grid of methods, data sets and seeds, then report"
    ),
    "results-page": Command(
        "vapl.results.page", "docs/results.md from a finished results grid (make results)"
    ),
    "predict-image": Command(
        "vapl.apps.predict_image", "one image (DICOM, NIfTI, PNG) with and without a drawn prompt"
    ),
    "crayon": Command("vapl.apps.crayon_annotation", "CRAYON's yes/no annotation: export, answer"),
    "app": Command("vapl.apps.app", "the browser app: draw a prompt on an image, see predictions"),
    "configs": Command("vapl.training.configs", "list the bundled configs, one line each"),
}


def available_commands() -> dict[str, Command]:
    """The commands whose module is installed (a command can be listed before it lands)."""
    return {
        name: command
        for name, command in COMMANDS.items()
        if command.module == LIGHTNING or importlib.util.find_spec(command.module) is not None
    }


def usage() -> str:
    """What ``vapl`` and ``vapl --help`` print: every command and the bundled configs."""
    from vapl.training.configs import data_set_config_names

    commands = available_commands()
    width = max(len(name) for name in commands) + 2
    lines = [
        "usage: vapl COMMAND [OPTIONS]        (vapl COMMAND --help: a command's options)",
        "",
        "Visual attention-prompted prediction and learning (VAPL) on PyTorch Lightning.",
        "",
        "commands:",
        *(f"  {name:<{width}}{command.summary}" for name, command in commands.items()),
        "",
        "bundled data set configs (vapl configs lists them all, with the method overlays):",
        textwrap.fill(
            "  ".join(data_set_config_names()), 96, initial_indent="  ", subsequent_indent="  "
        ),
        "",
        "examples:",
        "  vapl fit --config demo.yaml                                  # VAPL on the demo data",
        "  vapl fit --config demo.yaml --config methods/baseline.yaml   # the Baseline",
        "  vapl fit --config folder.yaml --config cpu.yaml --data.init_args.root=DIR",
        "",
        "--debug (or VAPL_DEBUG=1) shows the traceback of an error.",
    ]
    return "\n".join(lines)


def run_command(argv: list[str], args_given: bool) -> None:
    """Run the command ``argv[0]`` with the rest of ``argv``."""
    command = COMMANDS[argv[0]]
    if command.module == LIGHTNING:
        from vapl.training.cli import build_cli

        build_cli(argv if args_given else None)
        return
    importlib.import_module(command.module).main(argv[1:])


def main(args: ArgsType = None) -> None:
    """Entry point of the ``vapl`` console script; ``main([...])`` runs it in-process."""
    from vapl.training.user_errors import USER_ERROR_STATUS, debug_requested, user_error_message

    debug, argv = debug_requested(list(sys.argv[1:] if args is None else args))
    if args is None:
        sys.argv = [sys.argv[0], *argv]
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return
    name = argv[0]
    if name not in available_commands():
        print(f"vapl: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        raise SystemExit(USER_ERROR_STATUS)
    try:
        run_command(argv, args_given=args is not None)
    except (Exception, SystemExit) as error:
        found = None if debug else user_error_message(error, name)
        if found is None:
            raise
        message, hint = found
        print(f"vapl {name}: error: {message}", file=sys.stderr)
        if hint:
            print(hint, file=sys.stderr)
        raise SystemExit(USER_ERROR_STATUS) from None


if __name__ == "__main__":
    main()
