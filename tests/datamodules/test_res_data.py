"""COCO Gender and Places Scene in the RES layout, read from generated trees."""

from __future__ import annotations

import csv
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules import GenderDataModule, SceneDataModule
from datamodules.bad_input import BadInputError, SkippedInputWarning
from datamodules.fixtures_natural import make_res_tree, matrix_json, write_attention_csv
from datamodules.res_data import IMAGENET_MEAN, IMAGENET_STD, parse_attention
from vapl.core.prompts import INDISPENSABLE, PRECLUDED, UNDECIDED, resize_prompt

SIZE = 32


@pytest.fixture(scope="module")
def gender_tree(tmp_path_factory) -> Path:
    return make_res_tree(tmp_path_factory.mktemp("gender"), "gender", per_class=(8, 4, 4))


@pytest.fixture
def small_tree(tmp_path) -> Path:
    """A fresh, small tree each bad-input test may damage."""
    return make_res_tree(tmp_path / "gender", "gender", per_class=(3, 2, 2), annotated_fraction=1)


def good_rows(root: Path, kind: str) -> dict[str, np.ndarray]:
    """The good rows of the generated CSVs, parsed independently of the datamodule."""
    csv.field_size_limit(sys.maxsize)
    rows = {}
    for path in sorted((root / "attention_label").glob("*.csv")):
        if ("counterfactual" in path.name) != (kind == "counterfactual"):
            continue
        with path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                if row["img_check"] == "good":
                    rows[row["img_idx"]] = parse_attention(row["attention"], 224)
    return rows


def gender(root: Path, **kwargs) -> GenderDataModule:
    options = {"image_size": SIZE, "n_annotated_train": 4, "augment": False, **kwargs}
    module = GenderDataModule(root=str(root), **options)
    module.setup()
    return module


def samples(module: GenderDataModule, split: str) -> list[dict]:
    return [module.datasets[split][i] for i in range(len(module.datasets[split]))]


def test_layout_protocol_and_labels(gender_tree):
    module = gender(gender_tree, n_unprompted_train=3)
    assert (module.num_classes, module.in_channels) == (2, 3)
    train = samples(module, "train")
    prompted = [s for s in train if s["has_prompt"]]
    assert len(train) == 7 and len(prompted) == 4
    assert sorted(int(s["label"]) for s in prompted) == [0, 0, 1, 1]  # balanced over classes
    # Labels come from the class folders, including the Gender test split's men_test/women_test.
    test = samples(module, "test")
    assert len(test) == 8
    for sample in train + test:
        class_name = sample["id"].split("_")[2]
        assert int(sample["label"]) == ("men", "women").index(class_name)
        assert sample["image"].shape == (3, SIZE, SIZE) and sample["prompt"].shape == (SIZE, SIZE)
    assert module.stats["train_prompted"] == 4 and module.stats["train_unprompted"] == 3


def test_prompt_is_factual_indispensable_counterfactual_precluded(gender_tree):
    factual, counterfactual = (
        good_rows(gender_tree, "factual"),
        good_rows(gender_tree, "counterfactual"),
    )
    module = gender(gender_tree, n_annotated_train=-1)
    checked_both = 0
    for sample in samples(module, "train") + samples(module, "val"):
        img_idx = sample["id"]
        if img_idx not in factual:
            assert not sample["has_prompt"]
            assert bool((sample["prompt"] == UNDECIDED).all())
            assert float(sample["explanation"].sum()) == 0.0
            continue
        assert sample["has_prompt"]
        pos = resize_prompt(torch.from_numpy(factual[img_idx]).float(), (SIZE, SIZE)) > 0.5
        neg = torch.zeros_like(pos)
        if img_idx in counterfactual:
            neg = resize_prompt(torch.from_numpy(counterfactual[img_idx]).float(), (SIZE, SIZE))
            neg = neg > 0.5
            checked_both += 1
        # The later "bad" row holds the complement; it must not have replaced the good one.
        assert torch.equal(sample["explanation"], pos.float())
        assert torch.equal(sample["prompt"] == PRECLUDED, neg)
        assert torch.equal(sample["prompt"] == INDISPENSABLE, pos & ~neg)
        assert torch.equal(sample["prompt"] == UNDECIDED, ~pos & ~neg)
    assert checked_both > 0


def test_same_seed_same_selection_other_seed_other(gender_tree):
    def chosen(seed: int) -> list[str]:
        module = gender(gender_tree, seed=seed)
        return [s["id"] for s in samples(module, "train") if s["has_prompt"]]

    assert chosen(0) == chosen(0)
    assert any(chosen(seed) != chosen(0) for seed in (1, 2, 3))


def test_unannotated_only_and_eval_without_prompts(gender_tree):
    module = gender(gender_tree, n_annotated_train=0, n_unprompted_train=-1, eval_prompts=False)
    assert len(module.datasets["train"]) == 16
    assert not any(bool(s["has_prompt"]) for s in samples(module, "train") + samples(module, "val"))


def test_scene_classes(tmp_path):
    root = make_res_tree(tmp_path, "scene", per_class=(2, 1, 1), image_size=24)
    module = SceneDataModule(root=str(root), image_size=SIZE, n_annotated_train=-1)
    module.setup()
    labels = {s["id"]: int(s["label"]) for s in samples(module, "test")}
    assert labels == {"scene_test_nature_0000": 0, "scene_test_urban_0000": 1}


def test_augmentation_moves_image_prompt_and_explanation_together(gender_tree):
    module = gender(gender_tree, n_annotated_train=-1, augment=True, crop_padding=4)
    torch.manual_seed(0)
    dataset = module.datasets["train"]
    index = next(i for i, item in enumerate(dataset.items) if item.prompted)
    dataset.transform, transform = None, dataset.transform
    reference = dataset[index]
    dataset.transform = transform
    moved = 0
    for _ in range(20):
        sample = dataset[index]
        # The figure is the only pixel area brighter than 0.68 in all channels of the image.
        rgb = sample["image"] * IMAGENET_STD + IMAGENET_MEAN
        figure = (rgb > 0.68).all(dim=0)
        explanation = sample["explanation"] > 0.5
        iou = (figure & explanation).sum() / (figure | explanation).sum()
        assert iou > 0.8
        assert bool(explanation[sample["prompt"] == INDISPENSABLE].all())
        moved += not torch.equal(sample["explanation"], reference["explanation"])
    assert moved > 10  # the flip and the crop did move things


# ----- bad input ------------------------------------------------------------------------------
def add_row(root: Path, img_idx: str, attention: str) -> None:
    write_attention_csv(
        root / "attention_label" / "extra_factual.csv",
        [{"img_idx": img_idx, "attention": attention, "img_check": "good"}],
    )


@pytest.mark.parametrize(
    ("attention", "message"),
    [
        (matrix_json(np.ones((10, 10), bool)), "is (10, 10), expected (224, 224)"),
        (matrix_json(np.full((224, 224), 2)), "only 0 and 1, found [2.0]"),
        ("[[0, 1], oops", "not a JSON matrix"),
    ],
)
def test_bad_matrix_is_skipped_and_counted_or_raises(small_tree, attention, message):
    add_row(small_tree, "gender_train_men_0000", attention)
    with pytest.warns(SkippedInputWarning, match="bad_matrix: 1"):
        module = gender(small_tree)
    assert module.bad_input.counts == {"bad_matrix": 1}
    # The good row of that image (in another file) still counts.
    assert any(s["id"] == "gender_train_men_0000" for s in samples(module, "train"))
    with pytest.raises(BadInputError, match=rf"extra_factual.csv:2: .*{re.escape(message)}"):
        gender(small_tree, on_bad_input="error")


def test_missing_image_is_skipped_and_counted_or_raises(small_tree):
    (small_tree / "val" / "women" / "gender_val_women_0001.jpg").unlink()
    with pytest.warns(SkippedInputWarning, match="missing_image: 1"):
        module = gender(small_tree)
    assert module.bad_input.counts == {"missing_image": 1}
    assert len(module.datasets["val"]) == 3
    with pytest.raises(BadInputError, match="'gender_val_women_0001' has an attention label"):
        gender(small_tree, on_bad_input="error")


def test_unreadable_image_is_skipped_and_counted_or_raises(small_tree):
    broken = small_tree / "train" / "men" / "gender_train_men_0001.jpg"
    broken.write_bytes(b"not a jpeg at all")
    with pytest.warns(SkippedInputWarning) as caught:
        module = gender(small_tree, n_unprompted_train=-1)
    assert module.bad_input.counts == {"unreadable_image": 1, "missing_image": 1}
    assert "gender_train_men_0001.jpg: cannot open image" in str(caught[0].message)
    assert len(module.datasets["train"]) == 5
    with pytest.raises(BadInputError, match="gender_train_men_0001.jpg: cannot open image"):
        gender(small_tree, on_bad_input="error")


def test_file_level_problems_always_raise(small_tree, tmp_path):
    (small_tree / "attention_label" / "notes.csv").write_text("name,comment\nx,y\n")
    with pytest.raises(BadInputError, match=r"notes.csv: not an attention label file"):
        gender(small_tree)
    other = shutil.copytree(small_tree, tmp_path / "other")
    (other / "attention_label" / "notes.csv").unlink()
    (other / "train" / "children").mkdir()
    with pytest.raises(BadInputError, match="children: folder matches no class"):
        gender(other)
    with pytest.raises(FileNotFoundError, match="root folder .*nowhere does not exist"):
        gender(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="on_bad_input"):
        GenderDataModule(root=str(small_tree), on_bad_input="ignore")
