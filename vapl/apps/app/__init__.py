"""``vapl app``: the browser app (Gradio), on this machine only.

    vapl app --checkpoint model.ckpt --image scan.dcm --data /data/mine

opens http://127.0.0.1:7860 with three tabs: **Predict** (draw a prompt on a scan, see the
prediction with and without it), **Annotate prompts** (draw and save the training prompts of a
folder data set) and **Yes/no answers** (CRAYON's answers on each training image's Grad-CAM).
See docs/app.md. The work is done by plain functions that the tests call without a browser:
:mod:`~vapl.apps.app.drawing` (canvas layers <-> prompt), :mod:`~vapl.apps.app.predict`,
:mod:`~vapl.apps.app.annotate`, :mod:`~vapl.apps.app.answers`; the page is
:mod:`~vapl.apps.app.ui`. Needs the ``app`` extra: ``pip install -e ".[app]"``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

DEFAULT_OUT = Path("runs") / "app"


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vapl app",
        description=__doc__.split("\n\n")[0] + " Local, offline, no analytics.",
    )
    parser.add_argument("--checkpoint", default=None, help="a checkpoint to load at the start")
    parser.add_argument("--image", default=None, help="an image, volume or series folder to open")
    parser.add_argument("--data", default=None, help="a folder data set (or folder of images)")
    parser.add_argument("--answers", default=None, help="yes/no answers file (default DATA/...)")
    parser.add_argument(
        "--out", default=str(DEFAULT_OUT), help=f"export folder (default {DEFAULT_OUT})"
    )
    parser.add_argument("--mean", default="", help="preprocessing mean (default: checkpoint's)")
    parser.add_argument("--std", default="", help="preprocessing std (default: checkpoint's)")
    parser.add_argument("--classes", default="", help="class names, comma-separated")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine)"
    )
    parser.add_argument("--port", type=int, default=None, help="default: 7860, or the next free")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Parse ``argv`` and serve the app until interrupted."""
    options = parser().parse_args(list(argv) if argv is not None else None)
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    try:
        from vapl.apps.app.ui import launch
    except ImportError as error:
        if getattr(error, "name", "") and str(error.name).split(".")[0] == "gradio":
            raise SystemExit(
                'vapl app needs Gradio: pip install -e ".[app]" (or make install)'
            ) from None
        raise
    launch(options)
