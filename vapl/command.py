"""The ``vapl`` command: LightningCLI's fit, validate, test and predict, and vapl's own commands.

``vapl fit --config demo.yaml --config methods/baseline.yaml`` builds model, data and trainer
with :func:`vapl.training.cli.build_cli`. vapl's own subcommands are dispatched before LightningCLI
is built (:data:`EXTRA_COMMANDS`): ``fit-test`` (fit, then test the best checkpoint in the same
run), ``report`` (comparison tables from finished runs), ``benchmark`` (a grid of methods, data
sets and seeds), ``predict-image`` (one image and a drawn prompt) and ``crayon`` (CRAYON's
annotation stages). ``vapl COMMAND --help`` describes each.
"""

from __future__ import annotations

import importlib
import sys

from lightning.pytorch.cli import ArgsType

#: vapl's own subcommands beside LightningCLI's: name -> module with a ``main(argv)``.
EXTRA_COMMANDS = {
    "crayon": "vapl.apps.crayon_annotation",
    "fit-test": "vapl.training.fit_then_test",
    "report": "vapl.results.report",
    "benchmark": "vapl.results.grid",
    "predict-image": "vapl.apps.predict_image",
    "app": "vapl.apps.app",
}


def main(args: ArgsType = None) -> None:
    """Entry point of the ``vapl`` console script; ``main([...])`` runs it in-process."""
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] in EXTRA_COMMANDS:
        importlib.import_module(EXTRA_COMMANDS[argv[0]]).main(argv[1:])
        return
    if argv[:1] in (["-h"], ["--help"]):
        print(f"vapl's own subcommands: {', '.join(EXTRA_COMMANDS)} (vapl COMMAND --help)\n")
    from vapl.training.cli import build_cli

    build_cli(args)


if __name__ == "__main__":
    main()
