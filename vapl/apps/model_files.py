"""Loading a trained checkpoint for prediction: ``vapl predict-image`` and the browser app.

:func:`load_method` rebuilds the method a checkpoint holds (its class is in the checkpoint's
hyper-parameters) and returns its data settings; every way it can fail on the user's file is a
:class:`CheckpointError`, a :class:`~vapl.core.errors.UserInputError` that names the file.
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path

import torch

from vapl.core.errors import UserInputError
from vapl.methods.base import MethodModule


class CheckpointError(UserInputError, ValueError):
    """A checkpoint that cannot be used; the message names the file and the reason."""


class NotACheckpointError(CheckpointError):
    """A file that is not a checkpoint written by ``vapl fit`` / ``vapl fit-test``."""


class UnknownModelError(CheckpointError):
    """A checkpoint whose model class is not a vapl method."""


def _short(error: BaseException, limit: int = 200) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def method_class(class_path: str, checkpoint: Path | str = "checkpoint") -> type[MethodModule]:
    """The :class:`MethodModule` subclass named ``module.Class`` in a checkpoint; else
    :class:`UnknownModelError`."""
    module_name, _, class_name = str(class_path).rpartition(".")
    try:
        cls = getattr(import_module(module_name), class_name) if module_name else None
    except (ImportError, AttributeError):
        cls = None
    if not (isinstance(cls, type) and issubclass(cls, MethodModule)):
        import vapl.methods as methods

        known = ", ".join(sorted(n for n in methods.__all__ if n[0].isupper()))
        raise UnknownModelError(
            f"{checkpoint}: the model class {class_path!r} is not a vapl method "
            f"(vapl.methods has {known})"
        )
    return cls


def load_method(checkpoint: str | Path, map_location: str = "cpu") -> tuple[MethodModule, dict]:
    """The method saved in ``checkpoint`` (its class is in the checkpoint's hyper-parameters), in
    eval mode, and the data settings saved with it (empty if none).

    Raises :class:`CheckpointError` (a :class:`~vapl.core.errors.UserInputError`) for a missing
    file, :class:`NotACheckpointError` for a file that is not a vapl checkpoint and
    :class:`UnknownModelError` for a model class that is not a vapl method. Like ``torch.load``,
    this runs code stored in the file: open checkpoints you trust.
    """
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise CheckpointError(f"{checkpoint}: checkpoint not found")
    try:
        saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    except Exception as error:  # unpickling garbage raises many types
        raise NotACheckpointError(
            f"{checkpoint} is not a vapl checkpoint (torch cannot load it: {_short(error)})"
        ) from error
    hyper = saved.get("hyper_parameters") if isinstance(saved, dict) else None
    class_path = hyper.get("_class_path") if isinstance(hyper, dict) else None
    if not isinstance(saved, dict) or "state_dict" not in saved or not class_path:
        raise NotACheckpointError(
            f"{checkpoint} is not a vapl checkpoint (no model class in it; `vapl fit` and "
            "`vapl fit-test` write checkpoints under the run's checkpoints/ folder)"
        )
    cls = method_class(class_path, checkpoint)
    try:
        model = cls.load_from_checkpoint(checkpoint, map_location=map_location)
    except Exception as error:
        raise CheckpointError(
            f"{checkpoint}: cannot rebuild {cls.__name__} from it ({_short(error)})"
        ) from error
    return model.eval(), dict(saved.get("datamodule_hyper_parameters") or {})


def takes_prompts(model: MethodModule) -> bool:
    """Whether ``model`` uses a prompt at prediction time (VAPL and its ablations)."""
    return hasattr(model, "predict_both")


def ignores_prompt_message(model: MethodModule) -> str:
    """What the JSON and the app say when a model that takes no prompt is given one."""
    return (
        f"{type(model).__name__} ignores prompts: it predicts from the image alone, so the "
        "prompt does not change its prediction (only VAPL and its ablations use a prompt)"
    )
