"""The page without a browser: it builds, binds this machine only, and turns errors into words."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("gradio")

import gradio as gr  # noqa: E402

from vapl.apps.app import parser  # noqa: E402
from vapl.apps.app.predict import AppInputError  # noqa: E402
from vapl.apps.app.ui import SHORTCUTS, build_app, guarded, message  # noqa: E402
from vapl.apps.model_files import NotACheckpointError  # noqa: E402


def test_the_defaults_keep_the_app_on_this_machine_and_quiet():
    options = parser().parse_args([])
    assert options.host == "127.0.0.1" and options.out == os.path.join("runs", "app")
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"  # set before gradio is imported


def test_the_page_builds_with_every_control_the_docs_and_shortcuts_name():
    app = build_app(parser().parse_args(["--checkpoint", "m.ckpt", "--data", "d"]))
    assert isinstance(app, gr.Blocks) and app.analytics_enabled is False
    ids = {block.elem_id for block in app.blocks.values() if getattr(block, "elem_id", None)}
    for name in ("predict-run", "predict-save-prompt", "pred-with", "pred-without"):
        assert name in ids
    assert {button for buttons in SHORTCUTS.values() for button in buttons} <= ids
    editors = [b for b in app.blocks.values() if isinstance(b, gr.ImageEditor)]
    assert len(editors) == 2
    for editor in editors:
        assert editor.brush.colors == ["#ff0000", "#ffff00"] and editor.brush.color_mode == "fixed"
        assert not editor.sources and not editor.transforms  # no upload, crop or resize


def test_errors_become_a_message_and_never_a_traceback(caplog):
    status = gr.Markdown()

    @guarded(status)
    def user_mistake():
        raise NotACheckpointError("notes.txt is not a vapl checkpoint (no model class in it)")

    @guarded(status)
    def bug():
        raise KeyError("oops")

    assert user_mistake() == {
        status: "**Cannot do that:** notes.txt is not a vapl checkpoint (no model class in it)"
    }
    shown = bug()[status]
    assert shown.startswith("**Unexpected error** (KeyError: 'oops')") and "Traceback" not in shown
    assert "Traceback" in caplog.text  # the terminal has it
    assert message(FileNotFoundError(2, "No such file", "a.dcm")) == (
        "**Cannot do that:** [Errno 2] No such file: 'a.dcm'"
    )
    assert (
        message(AppInputError("open an image first")) == "**Cannot do that:** open an image first"
    )
