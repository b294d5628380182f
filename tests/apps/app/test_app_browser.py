"""`vapl app` in a real headless browser (Chromium from the system's packages, driven by
Playwright): draw with the mouse, predict, save, annotate, answer. Marked ``browser``: run by
``make test-browser`` and ``make test-full``; ``make browser-deps`` installs Chromium.

``VAPL_APP_SCREENSHOTS=docs/images`` also writes the three tabs' screenshots for docs/app.md.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.folder_example import write_example_folder
from vapl.apps.app.drawing import display_zoom
from vapl.apps.predict_image import predict_files, write_demo_case
from vapl.core.prompt_files import read_prompt
from vapl.core.yesno import read_answers

pytestmark = pytest.mark.browser
playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("no Chromium: `make browser-deps` installs it", allow_module_level=True)
expect = playwright_api.expect
ROOT = Path(__file__).resolve().parents[3]
WAIT_MS = 180_000  # this machine is shared: a step may wait for the CPU
expect.set_options(timeout=WAIT_MS)
IMAGE = 48  # the demo case's size: shown at zoom 8 on a 384-pixel canvas
DATA_IMAGE = 16  # the folder data set's: shown at zoom 24
VIEWPORT = {"width": 1400, "height": 2800}  # tall enough for every tab without scrolling


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory, vapl_checkpoint):
    """`vapl app` serving a tiny VAPL checkpoint, a demo case and a folder data set."""
    work = tmp_path_factory.mktemp("app")
    case = write_demo_case(work / "case", image_size=IMAGE)
    write_example_folder(work / "data", n=2, image_size=DATA_IMAGE)
    (work / "notes.ckpt").write_text("not a checkpoint\n")
    port = _free_port()
    log = (work / "app.log").open("w")
    command = [str(Path(sys.executable).with_name("vapl")), "app", "--port", str(port)]
    command += ["--checkpoint", str(vapl_checkpoint), "--image", str(case["dicom"])]
    command += ["--data", str(work / "data"), "--out", str(work / "out")]
    command += ["--mean", "0.4", "--std", "0.2"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    server = subprocess.Popen(command, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 300
    while True:
        try:
            urllib.request.urlopen(url, timeout=5).read(100)
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"vapl app did not start:\n{(work / 'app.log').read_text()}")
            time.sleep(1)
    yield {"url": url, "work": work, "case": case, "checkpoint": vapl_checkpoint}
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
    log.close()


@pytest.fixture(scope="module")
def page(served):
    with playwright_api.sync_playwright() as driver:
        browser = driver.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--headless",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        context = browser.new_context(viewport=VIEWPORT)
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        outside = []
        page.on("request", lambda r: outside.append(r.url) if _leaves(r.url) else None)
        page.goto(served["url"])
        page.outside_requests = outside
        yield page
        context.close()
        browser.close()


def _leaves(url: str) -> bool:
    return not url.startswith(("http://127.0.0.1", "ws://127.0.0.1", "data:", "blob:"))


#: The bottom of the lowest visible element of the open tab (below it the tall viewport is empty;
#: the page's footer sits at the viewport's bottom).
CONTENT_BOTTOM = """() => Math.ceil(Math.max(...[...document.querySelectorAll("[id^=tab-] *")]
    .filter((e) => e.offsetParent !== null)
    .map((e) => e.getBoundingClientRect().bottom)))"""


def _screenshot(page, name: str, tmp: Path) -> None:
    """The page down to its end, within the (tall) viewport: a full-page screenshot resizes the
    viewport, and Gradio's image editor does not recover from that (it stays "processing")."""
    folder = os.environ.get("VAPL_APP_SCREENSHOTS")
    target = Path(folder) if folder else tmp
    target.mkdir(parents=True, exist_ok=True)
    height = min(page.evaluate(CONTENT_BOTTOM) + 24, VIEWPORT["height"])
    clip = {"x": 0, "y": 0, "width": VIEWPORT["width"], "height": height}
    page.screenshot(path=str(target / name), clip=clip)


class Canvas:
    """Screen coordinates of image pixels on an editor's canvas (the image is centred)."""

    def __init__(self, page, editor: str, size: int) -> None:
        self.page = page
        self.editor = editor
        self.size = size
        self.zoom = display_zoom((size, size))
        box = page.locator(f"{editor} canvas").first.bounding_box()
        self.centre = (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        label = page.locator(editor).get_by_text(re.compile(r"^\d+%$")).first
        self.scale = int(label.inner_text().rstrip("%")) / 100  # screen px per canvas px

    def screen(self, row: float, col: float) -> tuple[float, float]:
        """The screen point at the centre of image pixel (row, col)."""
        half = self.size * self.zoom / 2
        x = self.centre[0] + ((col + 0.5) * self.zoom - half) * self.scale
        y = self.centre[1] + ((row + 0.5) * self.zoom - half) * self.scale
        return x, y

    def stroke(self, row: float, cols: tuple[float, float]) -> None:
        """A horizontal mouse stroke along image row ``row`` from ``cols[0]`` to ``cols[1]``:
        press, three moves, release. The brush fills the line between two pointer events, and
        each event redraws the canvas (slow in software rendering), so few events suffice."""
        mouse = self.page.mouse
        mouse.move(*self.screen(row, cols[0]))
        mouse.down()
        mouse.move(*self.screen(row, cols[1]), steps=3)
        mouse.up()

    def colour(self, index: int) -> None:
        """Pick the brush colour: 0 red, 1 yellow."""
        self.page.locator(f"{self.editor} button[aria-label=Color]").click()
        self.page.locator(f"{self.editor} .swatch button").nth(index).click()


def _settled(page, editor: str, before: bytes | None = None) -> bytes:
    """Wait until the middle of the editor's canvas (where the image is; Gradio's timers sit in
    the corners) shows something other than ``before`` and has stopped changing: the new image is
    drawn, so strokes made now stay on it. Returns those pixels."""
    box = page.locator(f"{editor} canvas").first.bounding_box()
    middle = {
        "x": box["x"] + box["width"] * 0.3,
        "y": box["y"] + box["height"] * 0.2,
        "width": box["width"] * 0.4,
        "height": box["height"] * 0.6,
    }
    deadline = time.monotonic() + WAIT_MS / 1000
    last = None
    while time.monotonic() < deadline:
        shot = page.screenshot(clip=middle)
        if shot == last and shot != before:
            return shot
        last = shot
        page.wait_for_timeout(300)
    raise AssertionError(f"the canvas of {editor} did not settle on a new picture")


def _label(page, elem_id: str) -> dict[str, float]:
    """The class -> probability a label widget shows (percentages as shown)."""
    lines = [line.strip() for line in page.locator(elem_id).inner_text().splitlines()]
    pairs = {}
    for name, value in zip(lines, lines[1:]):
        if re.fullmatch(r"\d+(\.\d+)?%", value):
            pairs[name] = float(value.rstrip("%")) / 100
    return pairs


def _marked_rows_and_cols(prompt: torch.Tensor, value: float) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.nonzero(prompt.numpy() == value)
    return rows, cols


def test_predict_draw_save_annotate_and_answer_in_a_browser(served, page, tmp_path):
    work = served["work"]
    # ----- Predict: a wrong checkpoint first, then the real one -------------------------------
    expect(page.locator("#predict-editor canvas").first).to_be_visible()
    page.locator("#predict-checkpoint textarea, #predict-checkpoint input").first.fill(
        str(work / "notes.ckpt")
    )
    page.click("#predict-load")
    expect(page.locator("#predict-status")).to_contain_text("is not a vapl checkpoint")
    expect(page.locator("#predict-status")).not_to_contain_text("Traceback")
    page.locator("#predict-checkpoint textarea, #predict-checkpoint input").first.fill(
        str(served["checkpoint"])
    )
    page.click("#predict-load")
    expect(page.locator("#predict-model")).to_contain_text("VAPL")
    blank = _settled(page, "#predict-editor")
    page.click("#predict-open")
    expect(page.locator("#predict-status")).to_contain_text("Opened")
    _settled(page, "#predict-editor", blank)
    canvas = Canvas(page, "#predict-editor", IMAGE)
    red_row, yellow_row, span = 14.0, 32.0, (12.0, 34.0)
    canvas.stroke(red_row, span)
    canvas.colour(1)
    canvas.stroke(yellow_row, span)
    page.click("#predict-run")
    expect(page.locator("#predict-status")).to_contain_text("Without it")
    with_prompt, without_prompt = _label(page, "#pred-with"), _label(page, "#pred-without")
    assert set(with_prompt) == set(without_prompt) == {"class 0", "class 1"}
    _screenshot(page, "app_predict.png", tmp_path)
    page.click("#predict-save-prompt")
    expect(page.locator("#predict-status")).to_contain_text("Prompt saved to")
    saved = work / "out" / "scan_prompt.png"
    prompt = read_prompt(saved, (IMAGE, IMAGE))
    for value, row in ((1.0, red_row), (0.0, yellow_row)):
        rows, cols = _marked_rows_and_cols(prompt, value)
        assert len(rows) >= 15, f"too few pixels of value {value} saved"
        # under the stroke: nearer its row than the other stroke's, within its span
        assert np.abs(rows - row).max() < (yellow_row - red_row) / 2
        assert cols.min() >= span[0] - 4 and cols.max() <= span[1] + 4
        assert prompt[int(row), int(sum(span) / 2)] == value  # the stroke's middle is marked
    # the page showed what predict-image gives on the saved prompt (rounded as shown)
    again = predict_files(
        served["checkpoint"], served["case"]["dicom"], saved, mean=0.4, std=0.2
    ).as_dict()
    for page_probs, head in ((with_prompt, "with_prompt"), (without_prompt, "without_prompt")):
        for name, probability in again[head]["probabilities"].items():
            assert abs(page_probs[name] - probability) <= 0.006
    # ----- Annotate: two images of the folder data set ----------------------------------------
    page.get_by_role("tab", name="Annotate prompts").click()
    shown = _settled(page, "#annotate-editor")
    page.click("#annotate-open")
    expect(page.locator("#annotate-progress")).to_contain_text("4 of 6 prompted")
    expect(page.locator("#annotate-where")).to_contain_text("Image 1 of 6")
    saved_rows = []
    for image_number in (1, 4):  # the example data's rows without a prompt
        expect(page.locator("#annotate-where")).to_contain_text(f"Image {image_number} of 6")
        _settled(page, "#annotate-editor", shown)  # the image is drawn: strokes will stay
        Canvas(page, "#annotate-editor", DATA_IMAGE).stroke(8.0, (3.0, 12.0))
        shown = _settled(page, "#annotate-editor")
        page.keyboard.press("s")
        expect(page.locator("#annotate-status")).to_contain_text("Saved")
        saved_rows.append(image_number - 1)
        if image_number == 1:
            expect(page.locator("#annotate-progress")).to_contain_text("5 of 6 prompted")
            _screenshot(page, "app_annotate.png", tmp_path)
            page.keyboard.press("u")
    expect(page.locator("#annotate-progress")).to_contain_text("6 of 6 prompted")
    lines = (work / "data" / "labels.csv").read_text().splitlines()
    for row in saved_rows:
        cells = lines[1 + row].split(",")
        assert cells[3] == "prompts/" + Path(cells[0]).with_suffix(".png").name
        marked = read_prompt(work / "data" / cells[3], (DATA_IMAGE, DATA_IMAGE))
        assert int((marked == 1).sum()) >= 4
    assert (work / "data" / "labels.csv.bak").is_file()
    # ----- Yes/no: answer two training images with keys ---------------------------------------
    page.get_by_role("tab", name="Yes/no answers (CRAYON)").click()
    page.click("#yesno-start")
    expect(page.locator("#yesno-progress")).to_contain_text("0 of 2 answered")
    expect(page.locator("#yesno-caption")).to_contain_text("Image 1 of 2")
    _screenshot(page, "app_yesno.png", tmp_path)
    page.keyboard.press("y")
    expect(page.locator("#yesno-progress")).to_contain_text("1 of 2 answered")
    page.keyboard.press("n")
    expect(page.locator("#yesno-progress")).to_contain_text("2 of 2 answered")
    answers_file = work / "data" / "crayon_answers.csv"
    assert answers_file.read_text().splitlines() == [
        "kind,key,answer",
        "image,images/train-00000.png,yes",
        "image,images/train-00001.npy,no",
    ]
    assert read_answers(answers_file, ["images/train-00000.png", "images/train-00001.npy"])
    assert page.outside_requests == []  # nothing fetched from outside this machine
