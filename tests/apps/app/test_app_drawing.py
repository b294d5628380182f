"""Canvas layers <-> prompt: colours, compositing, the zoom's block vote, refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import ImageColor

from vapl.apps.app.drawing import (
    RED_HEX,
    YELLOW_HEX,
    DrawingError,
    block_vote,
    compose_layers,
    display_image,
    display_zoom,
    editor_value,
    prompt_from_layers,
    prompt_layer,
)
from vapl.core.errors import UserInputError
from vapl.core.prompt_files import prompt_from_colours


def _layer(height, width, pixels=None):
    """A transparent RGBA layer with ``{(y, x): (r, g, b, a)}`` painted."""
    layer = np.zeros((height, width, 4), dtype=np.uint8)
    for (y, x), rgba in (pixels or {}).items():
        layer[y, x] = rgba
    return layer


def test_the_brush_colours_are_exactly_what_the_reader_calls_red_and_yellow():
    red = ImageColor.getrgb(RED_HEX)
    yellow = ImageColor.getrgb(YELLOW_HEX)
    assert (red, yellow) == ((255, 0, 0), (255, 255, 0))
    picture = np.array([[[*red, 255], [*yellow, 255]]], dtype=np.uint8)
    assert prompt_from_colours(picture).tolist() == [[1.0, 0.0]]


def test_display_zoom_and_the_shown_image():
    assert display_zoom((48, 48)) == 8
    assert display_zoom((16, 20)) == 20  # ceil(384 / 20)
    assert display_zoom((512, 400)) == 1
    image = torch.tensor([[[0.0, 0.5], [1.0, 0.25]]])
    shown = display_image(image, 2)
    assert shown.shape == (4, 4, 3) and shown.dtype == np.uint8
    # round(255 x), as --save-image writes it, each pixel a 2 x 2 block, grey in all channels
    np.testing.assert_array_equal(shown[::2, ::2, 0], [[0, 128], [255, 64]])
    assert (shown[..., 0] == shown[..., 2]).all() and (shown[:2, :2] == 0).all()
    colour = display_image(torch.stack([image[0], image[0] * 0, image[0] * 0]), 1)
    np.testing.assert_array_equal(colour[..., 1], 0)


# Every colour convention of a drawn pixel (opaque unless said): what the prompt becomes.
CONVENTIONS = [
    ((255, 0, 0, 255), 1.0),  # the red brush
    ((255, 255, 0, 255), 0.0),  # the yellow brush
    ((200, 40, 30, 255), 1.0),  # a darker, anti-aliased red: R >= 128, G and B <= R / 2
    ((230, 200, 20, 255), 0.0),  # an off yellow: G >= 0.6 R, B <= min(R, G) / 2
    ((255, 0, 0, 127), -1.0),  # a half-transparent red edge
    ((255, 255, 0, 100), -1.0),  # a half-transparent yellow edge
    ((255, 128, 0, 255), -1.0),  # orange is neither
    ((0, 200, 0, 255), -1.0),  # green
    ((0, 0, 255, 255), -1.0),  # blue
    ((255, 255, 255, 255), -1.0),  # white
    ((0, 0, 0, 255), -1.0),  # black
    ((128, 128, 128, 255), -1.0),  # grey
    ((0, 0, 0, 0), -1.0),  # erased (transparent)
]


@pytest.mark.parametrize(("rgba", "value"), CONVENTIONS)
def test_every_colour_convention_of_a_drawn_pixel(rgba, value):
    # one marked pixel keeps the drawing from being empty; the pixel under test is at (0, 1)
    layer = _layer(2, 2, {(0, 1): rgba, (1, 1): (255, 0, 0, 255)})
    with pytest.raises(DrawingError):  # a 2 x 2 image is shown at zoom 192: 384 x 384
        prompt_from_layers([layer], (2, 2))
    big = np.repeat(np.repeat(layer, 192, axis=0), 192, axis=1)
    prompt = prompt_from_layers([big], (2, 2))
    assert prompt[0, 1] == value and prompt[1, 1] == 1.0 and prompt[0, 0] == -1.0


def test_layers_stack_with_the_later_one_on_top_and_the_image_never_counts():
    bottom = _layer(1, 3, {(0, 0): (255, 255, 0, 255), (0, 1): (255, 255, 0, 255)})
    top = _layer(1, 3, {(0, 1): (255, 0, 0, 255), (0, 2): (255, 0, 0, 128)})
    composed = compose_layers([bottom, top])
    # pixel 2: red at alpha 128/255 over nothing stays red at that alpha
    np.testing.assert_array_equal(
        composed, [[[255, 255, 0, 255], [255, 0, 0, 255], [255, 0, 0, 128]]]
    )
    half_over_yellow = compose_layers([bottom, _layer(1, 3, {(0, 0): (255, 0, 0, 128)})])
    # red at a = 0.502 over opaque yellow: G = 255 * (1 - 0.502) = 127
    np.testing.assert_array_equal(half_over_yellow[0, 0], [255, 127, 0, 255])
    assert compose_layers([]) is None and compose_layers(None) is None
    with pytest.raises(DrawingError, match="differ in size"):
        compose_layers([_layer(1, 3), _layer(2, 3)])
    # a red photograph is only a background: nothing drawn on the layers is no prompt
    assert prompt_from_layers([_layer(384, 384)], (48, 48)) is None
    assert prompt_from_layers([], (48, 48)) is None


def test_each_image_pixel_takes_the_colour_covering_at_least_half_of_its_block():
    zoom = 4
    canvas = torch.full((4, 16), -1.0)
    canvas[:2, 0:4] = 1  # 8 of 16 red: indispensable
    canvas[:2, 4:8] = 1  # 7 of 16 red: undecided
    canvas[0, 4] = -1
    canvas[:2, 8:12] = 1  # 8 red and 8 yellow: the tie goes to red
    canvas[2:, 8:12] = 0
    canvas[:, 12:16] = 0  # 9 yellow, 7 red: precluded
    canvas[:2, 12:16] = 1
    canvas[0, 12] = 0
    assert block_vote(canvas, zoom).tolist() == [[1.0, -1.0, 1.0, 0.0]]
    assert torch.equal(block_vote(canvas, 1), canvas)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 9),
    st.integers(1, 9),
    st.lists(st.sampled_from([-1.0, 0.0, 1.0]), min_size=81, max_size=81),
)
def test_a_prompt_shown_as_a_layer_reads_back_unchanged(height, width, values):
    prompt = torch.tensor(values[: height * width]).reshape(height, width)
    zoom = display_zoom((height, width))
    layer = prompt_layer(prompt, zoom)
    assert layer.shape == (height * zoom, width * zoom, 4)
    read = prompt_from_layers([layer], (height, width))
    if bool((prompt == -1).all()):
        assert read is None  # nothing painted
    else:
        assert torch.equal(read, prompt)


def test_a_drawing_of_another_size_is_refused_with_the_sizes():
    layer = _layer(100, 120, {(5, 5): (255, 0, 0, 255)})
    with pytest.raises(
        DrawingError, match="the drawing is 120 x 100 pixels but the image is shown at 384 x 384"
    ) as caught:
        prompt_from_layers([layer], (48, 48))
    assert isinstance(caught.value, UserInputError)


def test_the_editor_value_holds_the_image_and_the_prompt_to_go_on_with():
    image = torch.rand(1, 48, 40)
    prompt = torch.full((48, 40), -1.0)
    prompt[3:5, 6:9] = 1.0
    value = editor_value(image, prompt)
    assert value["background"].shape == (384, 320, 3)
    assert torch.equal(prompt_from_layers(value["layers"], (48, 40)), prompt)
    assert editor_value(image)["layers"] == []
