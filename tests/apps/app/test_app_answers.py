"""CRAYON's yes/no answers from the app: the items, the appended file, resuming, the maps."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from datamodules.folder_example import write_example_folder
from vapl.apps.app.answers import (
    append_answer,
    first_unanswered,
    item_pictures,
    load_answers,
    training_items,
)
from vapl.apps.app.predict import load_model
from vapl.apps.crayon_annotation import answer, label_grad_cams
from vapl.apps.predict_image import preprocessing_from
from vapl.apps.scan_io import read_scan
from vapl.core.figures import panel_networks, sample_tiles, tile_strip
from vapl.core.prompts import empty_prompt
from vapl.core.saliency import upsample_cam
from vapl.methods.crayon import MAPS_FILE


@pytest.fixture
def folder(tmp_path):
    write_example_folder(tmp_path / "data", n=3, image_size=16)
    return tmp_path / "data"


def test_the_items_are_the_training_rows_with_the_ids_crayon_export_uses(folder):
    items = training_items(folder)
    assert [item.id for item in items] == [
        "images/train-00000.png",
        "images/train-00001.npy",
        "images/train-00002.png",
    ]
    rows = (folder / "labels.csv").read_text().splitlines()[1:4]
    assert [item.label for item in items] == [int(row.split(",")[1]) for row in rows]
    assert items[0].path == folder / "images" / "train-00000.png"


def test_answers_are_appended_resumed_and_read_by_crayon_answer(folder, tmp_path):
    items = training_items(folder)
    path = tmp_path / "answers" / "yesno.csv"
    assert load_answers(path).images == {} and first_unanswered(items, load_answers(path)) == 0
    append_answer(path, items[0].id, "yes")
    append_answer(path, items[1].id, "maybe")  # skipped
    assert path.read_text() == (
        "kind,key,answer\nimage,images/train-00000.png,yes\nimage,images/train-00001.npy,maybe\n"
    )
    answers = load_answers(path)
    assert first_unanswered(items, answers) == 2  # resume at the first without an answer
    append_answer(path, items[1].id, "no")  # answered again: the last line wins
    assert load_answers(path).images == {items[0].id: 1, items[1].id: 0}
    # a crash mid-line left a line without its end: the next answer starts a new line
    with path.open("a") as handle:
        handle.write("image,images/train-00002.png,ye")
    with pytest.raises(ValueError, match="line 5: unknown answer 'ye'"):
        load_answers(path)
    path.write_text(path.read_text().rsplit("\n", 1)[0] + "\n")  # the user removes it
    append_answer(path, items[2].id, "yes")
    assert first_unanswered(items, load_answers(path)) is None
    # `vapl crayon answer --from` checks the ids against an export of the same training split
    export = tmp_path / "export"
    export.mkdir()
    torch.save(
        {"ids": [item.id for item in items], "concept_boxes": torch.zeros(2, 1, 4)},
        export / MAPS_FILE,
    )
    written = answer(export, human=path)
    assert written.read_text().splitlines()[1:4] == [
        "image,images/train-00000.png,yes",
        "image,images/train-00001.npy,no",
        "image,images/train-00002.png,yes",
    ]
    with pytest.raises(ValueError, match="an answer is one of"):
        append_answer(path, items[0].id, "perhaps")


def test_an_item_shows_the_map_crayon_stores_for_its_label(folder, baseline_checkpoint):
    loaded = load_model(baseline_checkpoint)
    item = training_items(folder)[1]
    shown, heat, caption = item_pictures(loaded, item, mean=0.4, std=0.2)
    image = preprocessing_from(loaded.data_settings, mean=0.4, std=0.2)(read_scan(item.path))
    network = loaded.model.model
    stored, _ = label_grad_cams(network, image[None], torch.tensor([item.label]))
    cam = upsample_cam(stored, tuple(image.shape[-2:]))[0].clamp(0, 1)
    tiles = sample_tiles(image, empty_prompt(16, 16), None, {"stored": cam})
    np.testing.assert_array_equal(heat, tile_strip([tiles[-1]], 320))
    np.testing.assert_array_equal(shown, tile_strip([tiles[0]], 320))
    assert caption == f"Grad-CAM of class {item.label}, its label"
    other = dataclasses.replace(item, label=1 - item.label)
    assert not np.array_equal(item_pictures(loaded, other, mean=0.4, std=0.2)[1], heat)
    unlabelled = dataclasses.replace(item, label=None)
    assert item_pictures(loaded, unlabelled)[2].endswith("the predicted class (no label)")
    assert panel_networks(loaded.model, {"image": image[None]}, None)["unprompted"][0] is network
