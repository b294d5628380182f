"""Bad input through the page's own handlers (what a click runs): one sentence in the tab's
status line, no traceback, and nothing written anywhere."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("gradio")

from datamodules.folder_example import write_example_folder  # noqa: E402
from vapl.apps.app import parser  # noqa: E402
from vapl.apps.app.drawing import RED_RGBA, display_zoom  # noqa: E402
from vapl.apps.app.ui import build_app  # noqa: E402
from vapl.apps.predict_image import write_demo_case  # noqa: E402

CANNOT = "**Cannot do that:** "


def _red_stroke(size: int) -> dict:
    """An editor value: nothing underneath (no image open), one red layer at the shown size."""
    shown = size * display_zoom((size, size))
    layer = np.zeros((shown, shown, 4), np.uint8)
    layer[shown // 3 : shown // 2, shown // 4 : shown // 2] = RED_RGBA
    return {"background": None, "layers": [layer], "composite": None}


def _files(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def page_and_files(tmp_path_factory, vapl_checkpoint, dicom_without_pixels):
    """The page built as `vapl app --out OUT` builds it, and a folder of bad and good inputs."""
    work = tmp_path_factory.mktemp("bad")
    (work / "notes.ckpt").write_text("not a checkpoint\n")
    saved = torch.load(vapl_checkpoint, map_location="cpu", weights_only=False)
    saved["hyper_parameters"]["_class_path"] = "somewhere.else.Model"
    torch.save(saved, work / "unknown.ckpt")
    (work / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (work / "nopixels.dcm").write_bytes(dicom_without_pixels.read_bytes())
    case = write_demo_case(work / "case", image_size=16)
    write_example_folder(work / "data", n=2, image_size=16)
    app = build_app(parser().parse_args(["--out", str(work / "out")]))
    return app, work, case


def _click(app, elem_id: str, *inputs) -> dict[str, object]:
    """Run the handler that a click on ``elem_id`` runs; its outputs by their elem_id."""
    for function in app.fns.values():
        for block, event in function.targets:
            if event == "click" and getattr(app.blocks[block], "elem_id", None) == elem_id:
                result = function.fn(*inputs)
                return {getattr(c, "elem_id", None): value for c, value in result.items()}
    raise AssertionError(f"no click handler on {elem_id}")


def test_bad_input_is_one_sentence_in_the_status_line_and_nothing_is_written(page_and_files):
    app, work, case = page_and_files
    before = _files(work)
    image_open = {"image": str(case["png"]), "window": None, "slice": None}
    nothing_drawn = {"background": None, "layers": [], "composite": None}
    cases = [
        (
            "predict-load",
            "predict-status",
            (str(work / "notes.ckpt"), {}),
            "is not a vapl checkpoint",
        ),
        (
            "predict-load",
            "predict-status",
            (str(work / "unknown.ckpt"), {}),
            "the model class 'somewhere.else.Model' is not a vapl method",
        ),
        ("predict-load", "predict-status", (str(work / "gone.ckpt"), {}), "checkpoint not found"),
        ("predict-open", "predict-status", (str(work / "broken.png"), {}), "broken.png: "),
        ("predict-open", "predict-status", (str(work / "nopixels.dcm"), {}), "no pixel data"),
        # a prompt drawn on nothing: no image open
        (
            "predict-run",
            "predict-status",
            (_red_stroke(16), {}, "", "", ""),
            "open an image first: there is nothing to predict on",
        ),
        (
            "predict-save-prompt",
            "predict-status",
            (_red_stroke(16), {}, str(work / "out"), "", "", ""),
            "open an image first: a prompt needs an image under it",
        ),
        (
            "predict-save-prompt",
            "predict-status",
            (nothing_drawn, image_open, str(work / "out"), "", "", ""),
            "nothing to save: draw a prompt (red or yellow) on the image first",
        ),
        (
            "predict-save-result",
            "predict-status",
            (image_open, str(work / "out")),
            "nothing to save yet: press Predict first",
        ),
        ("annotate-save", "annotate-status", (_red_stroke(16), {}), "open a folder first"),
        (
            "yesno-start",
            "yesno-status",
            (str(work / "notes.ckpt"), str(work / "data"), "", "", ""),
            "is not a vapl checkpoint",
        ),
        ("yesno-yes", "yesno-status", ({},), "press Start first"),
    ]
    for button, status, inputs, words in cases:
        shown = _click(app, button, *inputs)
        assert set(shown) == {status}, f"{button}: only the status line changes"
        text = str(shown[status])
        assert text.startswith(CANNOT) and words in text, (button, text)
        assert "Traceback" not in text and "Error(" not in text
    assert _files(work) == before  # nothing written, not even the export folder
    assert not (work / "out").exists()


def test_a_drawing_saved_on_an_open_folder_image_needs_red_or_yellow(page_and_files):
    app, work, _ = page_and_files
    before = _files(work)
    opened = _click(app, "annotate-open", str(work / "data"))
    assert opened["annotate-progress"] == "**4 of 6 prompted**"
    state = next(value for key, value in opened.items() if key is None)  # the tab's gr.State
    green = np.zeros((16 * display_zoom((16, 16)),) * 2 + (4,), np.uint8)
    green[20:200, 20:200] = (0, 255, 0, 255)
    shown = _click(app, "annotate-save", {"background": None, "layers": [green]}, state)
    assert shown == {
        "annotate-status": CANNOT + "nothing drawn: paint red or yellow on the image, then save"
    }
    assert _files(work) == before
