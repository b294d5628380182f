"""``vapl fit-test ARGS``: ``vapl fit ARGS``, then test the best checkpoint in the same run.

The test metrics land in the same CSV log and the same W&B run as the training curves, which is
what the comparison tables (``vapl report``) and the W&B dashboard read. ARGS are those of
``vapl fit`` (configs, overrides). "Best" is the epoch whose validation selection metric was best
(:class:`vapl.training.checkpoints.RunCheckpoint`: ``val/prompted/acc`` for VAPL, ``val/acc`` for
single-model methods; ``--checkpoint.monitor`` chooses another). Without validation, or without
checkpoints (``fast_dev_run``, ``enable_checkpointing: false``), the final weights are tested.
Which checkpoint was tested is written to ``tested_checkpoint.json`` in the run folder and to the
W&B run's config (``tested_checkpoint``); ``vapl report`` shows it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.loggers import WandbLogger

from vapl.training.checkpoints import RunCheckpoint
from vapl.training.wandb_records import wait_until_finished

#: The file in a run folder that says which checkpoint the test metrics come from.
TESTED_CHECKPOINT = "tested_checkpoint.json"


def tested_checkpoint(trainer: Trainer) -> dict[str, Any]:
    """What ``ckpt_path="best"`` would load: ``{"checkpoint": "best", "epoch", "monitor",
    "score", "path"}``, or ``{"checkpoint": "last"}`` (the final weights)."""
    callback = trainer.checkpoint_callback
    if isinstance(callback, RunCheckpoint):
        return callback.describe()
    path = getattr(callback, "best_model_path", "") if callback is not None else ""
    if not path:
        return {"checkpoint": "last"}
    score = getattr(callback, "best_model_score", None)
    return {
        "checkpoint": "best",
        "epoch": None,
        "monitor": getattr(callback, "monitor", None),
        "score": None if score is None else float(score),
        "path": path,
    }


def run_selected_test(
    trainer: Trainer, model: Any, datamodule: Any
) -> tuple[dict[str, float], dict]:
    """Test the checkpoint of the best validation epoch (the final weights if none was chosen);
    return the test metrics and :func:`tested_checkpoint`'s description, which is also
    recorded in the run folder and the W&B runs."""
    selected = tested_checkpoint(trainer)
    best = selected["checkpoint"] == "best"
    results = trainer.test(model, datamodule=datamodule, ckpt_path="best" if best else None)
    if trainer.is_global_zero:
        _record(trainer, selected)
    metrics = {k: float(v) for k, v in (results[0] if results else {}).items()}
    return metrics, selected


def _record(trainer: Trainer, selected: dict[str, Any]) -> None:
    if trainer.log_dir is not None and trainer.loggers:
        folder = Path(trainer.log_dir)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / TESTED_CHECKPOINT).write_text(json.dumps(selected, indent=1) + "\n")
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.config.update({"tested_checkpoint": selected}, allow_val_change=True)


def fit_then_test(args: list[str]) -> dict[str, float]:
    """Fit with the ``vapl fit`` arguments ``args``, test, and return the test metrics."""
    from vapl.training.cli import build_cli

    cli = build_cli(["fit", *args])
    trainer = cli.trainer
    if trainer.interrupted:
        return {}
    results, _ = run_selected_test(trainer, cli.model, cli.datamodule)
    if trainer.is_global_zero:
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger) and logger._experiment is not None:
                run_folder = Path(logger.experiment.dir).parent
                logger.experiment.finish()  # flush the run folder now, not at interpreter exit
                wait_until_finished(run_folder)
    return results


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
