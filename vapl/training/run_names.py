"""What a run is called: method, data set and seed, read from its resolved config.

One place decides how runs are named, so W&B run names and groups, benchmark folders and the
comparison tables agree. Plain Python: no Lightning or W&B import.

* The *method* is the model's class name (``Baseline``, ``GRADIA``, ...). VAPL with an ablation
  flag off is ``VAPL-1`` (no refinement), ``VAPL-2`` (no L_Param), ``VAPL-3`` (no L_Activ) or
  ``VAPL-4`` (no learned g); several flags off join them (``VAPL-2+3``). A VAPL run with one of
  the options of :data:`VAPL_VARIANTS` away from its default names it in brackets
  (``VAPL[normalization=max]``, ``VAPL-1[unrefined_attention=keep_undecided]``), so runs that
  differ in what they compute never share a row of a report.
* The *data set* is the datamodule's class name without ``DataModule``, lower case
  (``LIDCDataModule`` is ``lidc``), or its entry in :data:`DATASET_NAMES` (the built-in demo data,
  ``SyntheticDataModule``, is ``demo``, as its config ``demo.yaml`` and its folder ``runs/demo``);
  a datamodule with a ``root`` folder adds its name (``folder-myscans``).
* The *seed* is ``seed_everything``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: VAPL's ablation flags, in the paper's order: flag off -> ablation number.
VAPL_ABLATIONS = {
    "use_refinement": 1,
    "use_param_loss": 2,
    "use_activ_loss": 3,
    "use_weight_fn": 4,
}

#: Data sets named otherwise than after their datamodule class: class name -> data set name.
DATASET_NAMES = {"SyntheticDataModule": "demo"}


#: VAPL's options that change what it computes (not how fast), with their defaults (a test checks
#: them against VAPL's signature): a run away from a default carries it in its method name.
#: ``unrefined_attention`` only matters without refinement (VAPL-1).
VAPL_VARIANTS: dict[str, Any] = {
    "normalization": "total_weight",
    "loss_reduction": "sum",
    "phase_unit": "epoch",
    "g_activ_loss": False,
    "unrefined_attention": "expected",
}


@dataclass(frozen=True)
class RunIdentity:
    """Method, data set and seed of one run."""

    method: str
    dataset: str
    seed: int | None

    @property
    def is_ablation(self) -> bool:
        return bool(re.fullmatch(r"VAPL-[0-9+]+(\[.*\])?", self.method))

    @property
    def name(self) -> str:
        """``method_dataset_seedS``: the W&B run name and benchmark folder name."""
        seed = "none" if self.seed is None else str(self.seed)
        return f"{self.method}_{self.dataset}_seed{seed}"

    @property
    def tags(self) -> list[str]:
        """W&B tags: the method, its family (``VAPL`` for every ablation), ``ablation`` if it is one."""
        tags = [self.method]
        if self.is_ablation:
            tags += ["VAPL", "ablation"]
        return tags


def short_class_name(class_path: str) -> str:
    """``vapl.methods.VAPL`` -> ``VAPL``."""
    return class_path.rsplit(".", 1)[-1]


def method_name(class_path: str, init_args: Mapping[str, Any] | None = None) -> str:
    """The method's display name from the model's class path and init args (module docstring)."""
    name = short_class_name(class_path)
    if name != "VAPL":
        return name
    args = init_args or {}
    off = [str(number) for flag, number in VAPL_ABLATIONS.items() if args.get(flag, True) is False]
    name = f"VAPL-{'+'.join(off)}" if off else "VAPL"
    variants = [
        f"{option}={str(args[option]).lower() if isinstance(args[option], bool) else args[option]}"
        for option, default in VAPL_VARIANTS.items()
        if option in args
        and args[option] != default
        and (option != "unrefined_attention" or args.get("use_refinement", True) is False)
    ]
    return f"{name}[{','.join(variants)}]" if variants else name


def dataset_name(class_path: str, init_args: Mapping[str, Any] | None = None) -> str:
    """The data set's name from the datamodule's class path and init args (module docstring)."""
    name = short_class_name(class_path)
    name = DATASET_NAMES.get(name) or (re.sub(r"DataModule$", "", name) or name).lower()
    root = (init_args or {}).get("root")
    if root:
        name = f"{name}-{Path(str(root)).name}"
    return name


def _as_dict(value: Any) -> dict[str, Any]:
    """A jsonargparse Namespace, a dict or None as a plain dict (one level)."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    if hasattr(value, "as_dict"):
        return value.as_dict()
    return dict(vars(value))


def identity_from_config(config: Any) -> RunIdentity:
    """The identity of a run from its resolved LightningCLI config (a dict or a Namespace with
    ``model``, ``data`` and ``seed_everything``, as in the ``config.yaml`` of a run folder)."""
    config = _as_dict(config)
    model = _as_dict(config.get("model"))
    data = _as_dict(config.get("data"))
    if not model.get("class_path"):
        raise ValueError("the config has no model.class_path: not a vapl run config")
    seed = config.get("seed_everything")
    seed = int(seed) if isinstance(seed, int) and not isinstance(seed, bool) else None
    dataset = (
        dataset_name(data["class_path"], _as_dict(data.get("init_args")))
        if data.get("class_path")
        else "unknown"
    )
    return RunIdentity(
        method=method_name(model["class_path"], _as_dict(model.get("init_args"))),
        dataset=dataset,
        seed=seed,
    )
