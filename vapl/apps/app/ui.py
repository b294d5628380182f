"""The Gradio page: three tabs, each built by its module, and the server's settings.

Private by default: the server binds 127.0.0.1, makes no share link, sends no analytics, keeps no
run history, serves no monitoring or MCP endpoint, and the page loads nothing from outside (system
fonts; Gradio's front end is bundled in the package).
"""

from __future__ import annotations

import functools
import logging
import os
from argparse import Namespace
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from datamodules.folder_csv import FolderDataError  # noqa: E402
from vapl.apps.app.drawing import RED_HEX, YELLOW_HEX  # noqa: E402
from vapl.core.errors import UserInputError  # noqa: E402
from vapl.core.yesno import AnswerError  # noqa: E402

log = logging.getLogger("vapl.app")

#: Errors that are the user's input: shown as their message, nothing else.
USER_ERRORS = (UserInputError, FolderDataError, AnswerError, OSError)

#: Keyboard shortcuts: key -> the buttons it presses (the first one visible on the page).
SHORTCUTS = {
    "y": ["yesno-yes"],
    "n": ["yesno-no"],
    "k": ["yesno-skip"],
    "s": ["annotate-save"],
    "ArrowRight": ["annotate-next"],
    "ArrowLeft": ["annotate-prev"],
    "u": ["annotate-first"],
}

KEYS_JS = """
() => {
  const shortcuts = %s;
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const target = event.target;
    if (target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA" ||
                   target.tagName === "SELECT" || target.isContentEditable)) return;
    for (const id of shortcuts[event.key] || []) {
      const button = document.getElementById(id);
      if (button && button.offsetParent !== null && !button.disabled) {
        event.preventDefault();
        button.click();
        return;
      }
    }
  });
}
"""

CSS = """
.vapl-status p { margin: 0.2em 0; }
#predict-tiles { min-height: 280px; }
"""


def message(error: BaseException) -> str:
    """What the page says about an error: the message of a user error, a short line otherwise."""
    if isinstance(error, USER_ERRORS):
        text = str(error)
        if isinstance(error, OSError) and error.filename and str(error.filename) not in text:
            text = f"{error.filename}: {text}"
        return f"**Cannot do that:** {text}"
    return (
        f"**Unexpected error** ({type(error).__name__}: {error}). Nothing was written; the "
        "details are in the terminal that runs `vapl app`."
    )


def guarded(status: gr.components.Component) -> Callable[[Callable], Callable]:
    """Wrap a handler that returns ``{component: value}``: an error becomes a message in
    ``status`` (no traceback on the page; unexpected errors are logged with theirs)."""

    def decorate(handler: Callable) -> Callable:
        @functools.wraps(handler)
        def wrapper(*args: Any) -> dict:
            try:
                return handler(*args)
            except Exception as error:  # every error becomes a message on the page
                if not isinstance(error, USER_ERRORS):
                    log.exception("vapl app: %s failed", handler.__name__)
                return {status: message(error)}

        return wrapper

    return decorate


def drawing_editor(elem_id: str, label: str) -> gr.ImageEditor:
    """The drawing widget: the image as background, a red and a yellow brush, the eraser; no
    upload, crop or resize (the canvas must stay the image's shape)."""
    return gr.ImageEditor(
        label=label,
        type="numpy",
        image_mode="RGBA",
        sources=(),
        transforms=(),
        layers=False,
        brush=gr.Brush(colors=[RED_HEX, YELLOW_HEX], default_color=RED_HEX, color_mode="fixed"),
        eraser=gr.Eraser(),
        elem_id=elem_id,
        height=560,
    )


def status_box(elem_id: str) -> gr.Markdown:
    return gr.Markdown(elem_id=elem_id, elem_classes=["vapl-status"])


def build_app(options: Namespace) -> gr.Blocks:
    """The page; ``options`` as :func:`vapl.apps.app.main` parses them."""
    from vapl.apps.app import ui_annotate, ui_predict, ui_yesno

    with gr.Blocks(title="vapl", analytics_enabled=False) as app:
        gr.Markdown(
            "## vapl: prompt a model, annotate prompts and yes/no answers\n"
            "Red brush: **indispensable** (look here). Yellow brush: **precluded** (ignore "
            "that). Everything else is undecided. Shortcuts (outside text fields): Annotate "
            "<kbd>&larr;</kbd> <kbd>&rarr;</kbd> previous / next, <kbd>u</kbd> first without a "
            "prompt, <kbd>s</kbd> save; Yes/no <kbd>y</kbd> <kbd>n</kbd> <kbd>k</kbd> (skip)."
        )
        with gr.Tabs():
            with gr.Tab("Predict", id="predict", elem_id="tab-predict"):
                ui_predict.build(options)
            with gr.Tab("Annotate prompts", id="annotate", elem_id="tab-annotate"):
                ui_annotate.build(options)
            with gr.Tab("Yes/no answers (CRAYON)", id="yesno", elem_id="tab-yesno"):
                ui_yesno.build(options)
    return app


def theme() -> gr.themes.Theme:
    """Gradio's default look with system fonts, so that nothing is fetched from a font CDN."""
    return gr.themes.Default(
        font=["system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif"],
        font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "monospace"],
    )


def launch(options: Namespace, block: bool = True) -> gr.Blocks:
    """Build the page and serve it on ``options.host:options.port``."""
    import json

    app = build_app(options)
    if options.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("vapl app: serving on %s: other machines can reach it", options.host)
    allowed = [str(Path(options.out).expanduser().resolve())]
    app.queue(default_concurrency_limit=1).launch(
        server_name=options.host,
        server_port=options.port,
        share=False,
        inbrowser=False,
        show_error=False,
        prevent_thread_lock=not block,
        allowed_paths=allowed,
        footer_links=[],
        run_history=False,
        enable_monitoring=False,
        mcp_server=False,
        pwa=False,
        ssr_mode=False,
        theme=theme(),
        css=CSS,
        js=KEYS_JS % json.dumps(SHORTCUTS),
    )
    return app
