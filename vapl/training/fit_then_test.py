"""``vapl fit-test ARGS``: ``vapl fit ARGS``, then test the best checkpoint in the same run.

The test metrics land in the same CSV log and the same W&B run as the training curves, which is
what the comparison tables (``vapl report``) and the W&B dashboard read. ARGS are those of
``vapl fit`` (configs, overrides). "Best" is what the trainer's checkpoint callback kept: by
default the last epoch; configure a ``ModelCheckpoint`` with ``monitor`` to select on validation.
Without checkpoints (``fast_dev_run``, ``enable_checkpointing: false``) the final weights are tested.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger

from vapl.training.wandb_records import wait_until_finished


def fit_then_test(args: list[str]) -> dict[str, float]:
    """Fit with the ``vapl fit`` arguments ``args``, test, and return the test metrics."""
    from vapl.training.cli import build_cli

    cli = build_cli(["fit", *args])
    trainer = cli.trainer
    if trainer.interrupted:
        return {}
    checkpoint = trainer.checkpoint_callback
    best = getattr(checkpoint, "best_model_path", "") if checkpoint is not None else ""
    results: list[dict[str, Any]] = trainer.test(
        cli.model, datamodule=cli.datamodule, ckpt_path="best" if best else None
    )
    if trainer.is_global_zero:
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger) and logger._experiment is not None:
                run_folder = Path(logger.experiment.dir).parent
                logger.experiment.finish()  # flush the run folder now, not at interpreter exit
                wait_until_finished(run_folder)
    return {k: float(v) for k, v in (results[0] if results else {}).items()}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["-h"], ["--help"]):
        from vapl.training.help import plain_text

        print(plain_text(__doc__))
        print("The options of `vapl fit` follow:\n")
        from vapl.training.cli import build_cli

        build_cli(["fit", "--help"])
        return
    fit_then_test(argv)


if __name__ == "__main__":
    main()
