"""One prompt reader for every entry point: gray code, colour drawings and NPY, by content."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from vapl.core.prompt_files import (
    EmptyPromptWarning,
    is_colour_drawing,
    prompt_from_colours,
    read_prompt,
    write_prompt,
)
from vapl.core.prompts import INDISPENSABLE, PRECLUDED, UNDECIDED, PromptError


@pytest.mark.parametrize("suffix", [".png", ".npy"])
def test_prompt_files_round_trip(tmp_path, suffix):
    prompt = torch.tensor([[1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]])
    path = write_prompt(prompt, tmp_path / f"p{suffix}")
    assert torch.equal(read_prompt(path, shape=(2, 3)), prompt)


def test_gray_code_with_its_tolerance(tmp_path):
    Image.fromarray(np.array([[255, 0, 17, 128, 240, 15, 239]], dtype=np.uint8)).save(
        tmp_path / "p.png"
    )
    prompt = read_prompt(tmp_path / "p.png")
    assert prompt.tolist() == [[1.0, 0.0, -1.0, -1.0, 1.0, 0.0, -1.0]]


def test_gray_saved_as_rgb_is_gray_code(tmp_path):
    gray = np.array([[255, 0], [128, 255]], dtype=np.uint8)
    Image.fromarray(np.repeat(gray[..., None], 3, axis=2)).save(tmp_path / "p.png")
    assert read_prompt(tmp_path / "p.png").tolist() == [[1.0, 0.0], [-1.0, 1.0]]


def test_red_is_indispensable_yellow_precluded_and_everything_else_undecided():
    pixels = [
        (255, 0, 0, 255),  # red
        (191, 64, 64, 255),  # red antialiased over gray
        (255, 255, 0, 255),  # yellow
        (255, 217, 0, 255),  # vapl's own overlay yellow
        (128, 128, 128, 255),  # the image underneath
        (255, 255, 255, 255),  # white
        (255, 0, 0, 0),  # red on a hidden layer
        (255, 140, 0, 255),  # dark orange: neither
        (255, 128, 128, 255),  # red half blended with white: an edge, undecided
    ]
    rgba = np.array([pixels], dtype=np.uint8)
    assert prompt_from_colours(rgba).tolist() == [[1, 1, 0, 0, -1, -1, -1, -1, -1]]


def test_a_drawing_over_a_gray_image_reads_by_colour_not_by_the_first_channel(tmp_path):
    """The case of the demo's drawn prompt: white and black image pixels are not gray code."""
    image = np.zeros((4, 4, 3), dtype=np.uint8)
    image[0] = 255  # white image pixels: gray code would call them indispensable
    image[1, :2] = (255, 0, 0)  # red stroke
    image[2, :2] = (255, 230, 0)  # yellow stroke
    Image.fromarray(image).save(tmp_path / "drawn.png")
    prompt = read_prompt(tmp_path / "drawn.png")
    expected = torch.full((4, 4), UNDECIDED)
    expected[1, :2] = INDISPENSABLE
    expected[2, :2] = PRECLUDED
    assert torch.equal(prompt, expected)
    # Forced gray, the same file reads by its first channel.
    forced = read_prompt(tmp_path / "drawn.png", kind="gray")
    assert forced[0].tolist() == [1.0] * 4 and forced[2, 0] == INDISPENSABLE


def test_a_jpeg_drawing_reads_despite_compression_noise(tmp_path):
    image = np.full((16, 16, 3), 128, dtype=np.uint8)
    image[2:8, 2:8] = (255, 0, 0)
    image[9:15, 9:15] = (255, 255, 0)
    Image.fromarray(image).save(tmp_path / "drawn.jpg", quality=85)
    prompt = read_prompt(tmp_path / "drawn.jpg")
    assert bool((prompt[3:7, 3:7] == INDISPENSABLE).all())
    assert bool((prompt[10:14, 10:14] == PRECLUDED).all())
    assert bool((prompt[0] == UNDECIDED).all())


def test_colour_detection_ignores_chroma_noise_and_transparent_pixels():
    noisy_gray = np.array([[(120, 130, 125, 255), (10, 40, 20, 255)]], dtype=np.uint8)
    assert not is_colour_drawing(noisy_gray)
    hidden_red = np.array([[(255, 0, 0, 0), (128, 128, 128, 255)]], dtype=np.uint8)
    assert not is_colour_drawing(hidden_red)
    assert is_colour_drawing(np.array([[(0, 200, 0, 255)]], dtype=np.uint8))


def test_a_prompt_that_says_nothing_warns_errors_or_passes_as_configured(tmp_path):
    green = np.zeros((3, 3, 3), dtype=np.uint8)
    green[1] = (0, 200, 0)
    Image.fromarray(green).save(tmp_path / "green.png")
    with pytest.warns(EmptyPromptWarning, match=r"green.png: no indispensable or precluded"):
        prompt = read_prompt(tmp_path / "green.png")
    assert bool((prompt == UNDECIDED).all())
    with pytest.raises(PromptError, match="red and yellow mark them"):
        read_prompt(tmp_path / "green.png", on_empty="error")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_prompt(tmp_path / "green.png", on_empty="ignore")


def test_sizes_must_match_and_errors_name_the_file(tmp_path):
    Image.fromarray(np.zeros((3, 4, 3), dtype=np.uint8)).save(tmp_path / "c.png")
    with pytest.raises(
        PromptError, match=r"c.png: prompt is 3 x 4 pixels and does not match the image \(5 x 5\)"
    ):
        read_prompt(tmp_path / "c.png", shape=(5, 5))
    with pytest.raises(PromptError, match=r"missing.png: file not found"):
        read_prompt(tmp_path / "missing.png")
    (tmp_path / "p.gif").write_bytes(b"GIF89a")
    with pytest.raises(PromptError, match=r"p.gif: prompt files are .png, .jpg, .jpeg, .npy"):
        read_prompt(tmp_path / "p.gif")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(PromptError, match=r"broken.png: cannot read prompt"):
        read_prompt(tmp_path / "broken.png")


def test_npy_holds_the_values_themselves(tmp_path):
    np.save(tmp_path / "p.npy", np.array([[-1, 0, 1]], dtype=np.int8))
    assert read_prompt(tmp_path / "p.npy").tolist() == [[UNDECIDED, PRECLUDED, INDISPENSABLE]]
    np.save(tmp_path / "bad.npy", np.array([[1, 3]], dtype=np.int64))
    with pytest.raises(PromptError, match="bad.npy"):
        read_prompt(tmp_path / "bad.npy")
