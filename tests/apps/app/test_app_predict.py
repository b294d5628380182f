"""The Predict tab's functions: a drawing gives the prediction `vapl predict-image` gives."""

from __future__ import annotations

import json
import shlex

import numpy as np
import pytest
import torch

from vapl.apps.app import predict as logic
from vapl.apps.app.drawing import RED_RGBA, YELLOW_RGBA, display_zoom
from vapl.apps.model_files import NotACheckpointError
from vapl.apps.predict_image import main as predict_image_main
from vapl.apps.predict_image import predict_files, write_demo_case
from vapl.apps.scan_io import WINDOW_PRESETS, ScanFileError
from vapl.core.prompt_files import read_prompt


def _strokes(shape: tuple[int, int]) -> list[np.ndarray]:
    """Two layers as the canvas returns them: a red stroke, then a yellow one with an eraser
    gap, at the shown size (the image's times the zoom)."""
    zoom = display_zoom(shape)
    height, width = shape[0] * zoom, shape[1] * zoom
    red = np.zeros((height, width, 4), np.uint8)
    red[height // 3 : height // 3 + 3 * zoom, width // 4 : 3 * width // 4] = RED_RGBA
    yellow = np.zeros_like(red)
    yellow[: 2 * zoom, : 2 * zoom] = YELLOW_RGBA  # over the corner marker
    yellow[:zoom, :zoom] = 0  # erased again
    return [red, yellow]


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    return write_demo_case(tmp_path_factory.mktemp("case"), image_size=24)


@pytest.mark.parametrize("window", [None, "lung"])
def test_a_drawing_predicts_as_predict_image_does_on_the_saved_prompt(
    vapl_checkpoint, case, tmp_path, window, capsys
):
    loaded = logic.load_model(vapl_checkpoint)
    window = WINDOW_PRESETS.get(window)
    scan = logic.open_scan(case["dicom"], loaded.channels, window)
    result, prompt = logic.predict_drawing(loaded, scan, _strokes((24, 24)), mean=0.4, std=0.2)
    assert result.has_prompt and result.prompted_probs is not None
    assert int((prompt == 1).sum()) == 3 * 12 and int((prompt == 0).sum()) == 3
    saved = logic.export_prompt(prompt, tmp_path / "out", logic.file_stem(scan))
    assert saved.name == "scan_prompt.png"
    assert torch.equal(read_prompt(saved, (24, 24)), prompt)
    # through the files, as the command line does
    again = predict_files(vapl_checkpoint, case["dicom"], saved, window=window, mean=0.4, std=0.2)
    assert torch.equal(again.prompted_probs, result.prompted_probs)
    assert torch.equal(again.unprompted_probs, result.unprompted_probs)
    assert torch.equal(again.refined_prompt, result.refined_prompt)
    # the command the page shows, run as it stands, writes the JSON the page exports
    exported = json.loads(logic.export_result(result, tmp_path / "out", "scan").read_text())
    line = logic.command_line(vapl_checkpoint, scan, saved, mean=0.4, std=0.2)
    words = shlex.split(line)
    assert words[:2] == ["vapl", "predict-image"]
    at = words.index("--window")  # the file's own window is written out too
    assert [float(w) for w in words[at + 1 : at + 3]] == list(window or (500.0, 5000.0))
    predict_image_main([*words[2:], "--json", str(tmp_path / "cli.json")])
    assert json.loads((tmp_path / "cli.json").read_text()) == exported
    assert exported["prompt_given"] is True and exported["warnings"] == []


def test_no_drawing_or_nothing_red_or_yellow_is_no_prompt(vapl_checkpoint, case):
    loaded = logic.load_model(vapl_checkpoint)
    scan = logic.open_scan(case["png"], loaded.channels)
    result, prompt = logic.predict_drawing(loaded, scan, [], mean=0.4, std=0.2)
    assert prompt is None and result.as_dict()["with_prompt"] is None
    green = np.zeros((384, 384, 4), np.uint8)
    green[10:50, 10:50] = (0, 255, 0, 255)
    result, prompt = logic.predict_drawing(loaded, scan, [green], mean=0.4, std=0.2)
    assert prompt is None and not result.has_prompt
    assert result.warnings == [
        "the drawing marks no pixel red or yellow: predicted without a prompt"
    ]
    with pytest.raises(logic.AppInputError, match="nothing to save: draw a prompt"):
        logic.export_prompt(prompt, "/nonexistent/never/written", "x")


def test_a_model_that_ignores_prompts_says_so(baseline_checkpoint, case):
    loaded = logic.load_model(baseline_checkpoint)
    assert not loaded.takes_prompts
    assert "This model ignores prompts" in loaded.describe()
    scan = logic.open_scan(case["png"], loaded.channels)
    result, _ = logic.predict_drawing(loaded, scan, _strokes((24, 24)), mean=0.4, std=0.2)
    assert logic.probabilities(result, prompted=True) is None
    assert set(logic.probabilities(result, prompted=False)) == {"class 0", "class 1"}
    text = logic.summary_text(result)
    assert "Baseline gives one prediction: the prompt is not used." in text
    assert "Baseline ignores prompts" in text


def test_the_pictures_and_the_colour_bar(vapl_checkpoint, case):
    loaded = logic.load_model(vapl_checkpoint)
    scan = logic.open_scan(case["png"], loaded.channels)
    result, _ = logic.predict_drawing(loaded, scan, _strokes((24, 24)), mean=0.4, std=0.2)
    pictures = logic.result_pictures(result)
    assert [title for _, title in pictures] == [
        "image",
        "prompt",
        "refined prompt",
        "Grad-CAM prompted",
        "Grad-CAM unprompted",
    ]
    assert all(p.dtype == np.uint8 and p.shape[0] >= 256 for p, _ in pictures)
    bar = logic.colour_bar(width=64, height=4)
    assert bar.shape == (4, 64, 3) and bar.dtype == np.uint8
    # Blues, as every figure draws the refined prompt: #f7fbff (white) at 0, #08306b at 1
    assert bar[:, 0].tolist() == [[247, 251, 255]] * 4
    assert bar[:, -1].tolist() == [[8, 48, 107]] * 4


def test_bad_input_is_a_message_naming_it(tmp_path, case, dicom_without_pixels):
    (tmp_path / "x.ckpt").write_text("hello")
    with pytest.raises(NotACheckpointError, match="x.ckpt is not a vapl checkpoint"):
        logic.load_model(tmp_path / "x.ckpt")
    with pytest.raises(logic.AppInputError, match="no checkpoint given"):
        logic.load_model("")
    with pytest.raises(logic.AppInputError, match="no image given"):
        logic.open_scan(" ")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(ScanFileError, match="broken.png: "):
        logic.open_scan(tmp_path / "broken.png")
    with pytest.raises(ScanFileError, match="nopixels.dcm: no pixel data"):
        logic.open_scan(dicom_without_pixels)
    assert logic.parse_floats("0.4, 0.5 0.6", "mean") == [0.4, 0.5, 0.6]
    assert logic.parse_floats("", "mean") is None
    with pytest.raises(logic.AppInputError, match="mean: 'a' is not a number"):
        logic.parse_floats("a", "mean")
    assert logic.parse_names(" yes , no ,") == ["yes", "no"]
