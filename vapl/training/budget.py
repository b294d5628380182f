"""The training budget a composed config gives its method, read without building anything.

Every method gets ``trainer.max_epochs`` epochs of network updates: the Baseline and the other
single-model methods train that many epochs; VAPL trains f_m and f_o in that many epochs of F
phases and runs its G phases (g only) on top, so its trainer runs longer
(:mod:`vapl.core.schedule`). :func:`compose_config` parses ``--config`` files and overrides as
``vapl fit`` does, and :func:`budget_of` turns the result into a :class:`Budget`; the demo prints
it, and a test checks that every bundled data set config gives every method overlay the same.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jsonargparse import Namespace
from lightning.pytorch.cli import ArgsType

from vapl.core.schedule import phase_at, trainer_epochs
from vapl.training.cli import VaplCLI
from vapl.training.configs import resolve_config_args


@dataclass(frozen=True)
class Budget:
    """What a run trains: epochs of network updates, and the epochs its trainer runs."""

    method: str
    network_epochs: int | None  # None: no max_epochs (a step or time limit decides)
    trainer_epochs: int | None
    phase_unit: str | None = None  # VAPL with a G phase: "epoch" or "batch"
    g_length: int = 0  # G phase length in phase units

    def describe(self) -> str:
        if self.network_epochs is None:
            return f"{self.method}: no epoch budget (max_epochs not set)"
        text = f"{self.method}: {self.network_epochs} epochs of network updates"
        if self.trainer_epochs != self.network_epochs:
            g_epochs = self.trainer_epochs - self.network_epochs
            if self.phase_unit == "epoch":
                text += f" + {g_epochs} G epochs (g only)"
            else:
                text += f" + G batches (g only), {self.trainer_epochs} trainer epochs in all"
        return text


class _ConfigReader(VaplCLI):
    """The ``vapl`` parser, built once: nothing parsed at construction, nothing instantiated."""

    def parse_arguments(self, parser: Any, args: ArgsType) -> None:
        self.config = Namespace()

    def _set_seed(self) -> None:
        pass

    def before_instantiate_classes(self) -> None:
        pass

    def instantiate_classes(self) -> None:
        pass

    def after_instantiate_classes(self) -> None:
        pass


@functools.lru_cache(maxsize=1)
def _reader() -> _ConfigReader:
    from datamodules.base import PromptedDataModule
    from vapl.methods.base import MethodModule

    return _ConfigReader(
        MethodModule,
        PromptedDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        save_config_callback=None,
        load_from_checkpoint_support=False,
        args=[],
        run=False,
    )


def compose_config(args: list[str]) -> dict[str, Any]:
    """The config ``vapl fit ARGS`` would run (``ARGS`` without ``fit``), as a plain dict: configs
    composed and checked by the ``vapl`` parser, no class instantiated."""
    return _reader().parser.parse_args(resolve_config_args(list(args))).as_dict()


def _defaults(class_path: str) -> dict[str, Any]:
    module, _, name = class_path.rpartition(".")
    cls = getattr(__import__(module, fromlist=[name]), name)
    return {
        k: p.default
        for k, p in inspect.signature(cls.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def budget_of(config: Mapping[str, Any]) -> Budget:
    """The :class:`Budget` of a composed config (:func:`compose_config`, or a run's config.yaml).

    For VAPL with epoch phases the network epochs are counted on the schedule the module will
    run (:func:`vapl.core.schedule.phase_at`), not assumed.
    """
    model = dict(config.get("model") or {})
    class_path = str(model.get("class_path", "?"))
    method = class_path.rsplit(".", 1)[-1]
    trainer = dict(config.get("trainer") or {})
    epochs = trainer.get("max_epochs")
    if epochs is None or int(epochs) < 0:
        return Budget(method, None, None)
    epochs = int(epochs)
    if method != "VAPL":
        return Budget(method, epochs, epochs)
    args = {**_defaults(class_path), **dict(model.get("init_args") or {})}
    if not (args["use_refinement"] and args["use_weight_fn"]):
        return Budget(method, epochs, epochs)
    unit = args["phase_unit"]
    f, g = (
        (args["f_epochs"], args["g_epochs"])
        if unit == "epoch"
        else (args["f_steps"], args["g_steps"])
    )
    total = trainer_epochs(epochs, unit, f, g)
    if unit == "epoch":  # count the F epochs of the schedule the module will follow
        network = sum(phase_at(u, f, g, epochs) == "F" for u in range(total))
    else:  # F batches stop at epochs x batches per epoch (VAPL.on_train_start)
        network = epochs
    return Budget(method, network, total, unit, g)
