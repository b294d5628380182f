"""What a grid does besides ``vapl fit-test``: generate the data trees, and CRAYON's stages.

* :func:`prepare_data`: a grid's ``prepare:`` section names generators (a module with a
  ``main(argv)``, e.g. :mod:`datamodules.fixtures_natural`) and their arguments; each writes its
  tree once into ``OUTPUT/data/NAME`` (``{out}`` in the arguments), and a ``.done`` file marks it
  written, so a second ``vapl benchmark`` reuses it.
* CRAYON starts from a trained model: the run it ``start_from`` is exported
  (:func:`vapl.apps.crayon_annotation.export`, into ``RUN/crayon``) and answered by the oracle
  (from the data's ground-truth explanations), once per run, before the fine-tunes read
  ``RUN/crayon/answers.csv`` and the run's checkpoint (:func:`crayon_overrides`).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vapl.results.grid import GridRun

DONE = ".done"
CRAYON_FOLDER = "crayon"
#: The oracle's threshold: an image is "yes" when this share of its Grad-CAM lies on the
#: explanation (``vapl crayon answer``'s default).
ORACLE_THRESHOLD = 0.5


# ----- data trees ---------------------------------------------------------------------------------
def prepare_commands(prepare: dict[str, Any], data: Path) -> list[tuple[Path, str, list[str]]]:
    """``(folder, module, argv)`` of each generator of a ``prepare:`` section."""
    out = []
    for name, spec in (prepare or {}).items():
        if not isinstance(spec, dict) or "module" not in spec:
            raise ValueError(f"prepare.{name} must be a mapping with 'module' and 'args'")
        folder = data / str(name)
        argv = [str(a).replace("{out}", str(folder)) for a in spec.get("args") or []]
        out.append((folder, str(spec["module"]), argv))
    return out


def prepare_data(prepare: dict[str, Any], data: Path) -> list[Path]:
    """Run each generator whose tree is not written yet; return the trees' folders."""
    folders = []
    for folder, module, argv in prepare_commands(prepare, data):
        folders.append(folder)
        if (folder / DONE).is_file():
            continue
        print(f"generating {folder}: python -m {module} {' '.join(argv)}", flush=True)
        importlib.import_module(module).main(argv)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / DONE).write_text(" ".join([module, *argv]) + "\n")
    return folders


# ----- CRAYON's stages ----------------------------------------------------------------------------
def run_checkpoint(folder: Path) -> Path:
    """The checkpoint a finished run was tested with: its one ``*.ckpt`` (``last*.ckpt`` only
    where it is the only one)."""
    found = sorted(folder.rglob("*.ckpt"))
    kept = [p for p in found if not p.name.startswith("last")] or found
    if len(kept) != 1:
        raise FileNotFoundError(
            f"{folder}: expected one checkpoint to start from, found "
            f"{[str(p.relative_to(folder)) for p in found] or 'none'} "
            "(is checkpointing disabled, or does the run keep several?)"
        )
    return kept[0]


def crayon_folder(source: GridRun) -> Path:
    return source.folder / CRAYON_FOLDER


def is_exported(source: GridRun) -> bool:
    return (crayon_folder(source) / "answers.csv").is_file()


def crayon_overrides(source: GridRun) -> list[str]:
    """A CRAYON fine-tune's overrides: the oracle's answers and the original model."""
    return [
        f"--model.init_args.answers={crayon_folder(source) / 'answers.csv'}",
        f"--model.init_args.init_checkpoint={run_checkpoint(source.folder)}",
    ]


def export_args(source: GridRun, overrides: list[str]) -> list[str]:
    """``vapl crayon export`` arguments for a finished run: its data set's configs and overrides,
    so the exported maps match the images the fine-tunes see."""
    args = [
        "--checkpoint",
        str(run_checkpoint(source.folder)),
        "--out",
        str(crayon_folder(source)),
        "--no-pictures",
    ]
    for config in source.configs:
        args += ["--config", config]
    return args + [
        *source.overrides,
        *overrides,
        f"--seed_everything={source.seed}",
        "--trainer.logger=false",
    ]


def export_commands(source: GridRun, overrides: list[str]) -> list[list[str]]:
    """The two commands of CRAYON's annotation stages. They run as ``vapl crayon`` subprocesses
    under every launch: the annotation code lives in :mod:`vapl.apps`, above this layer."""
    vapl = [sys.executable, "-m", "vapl", "crayon"]
    return [
        [*vapl, "export", *export_args(source, overrides)],
        [
            *vapl,
            "answer",
            "--export",
            str(crayon_folder(source)),
            "--oracle",
            f"--threshold={ORACLE_THRESHOLD}",
        ],
    ]
