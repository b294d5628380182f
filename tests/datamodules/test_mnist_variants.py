"""DecoyMNIST and ColorMNIST: the constructions by hand, and the datamodules on generated IDX trees."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules import ColorMNISTDataModule, DecoyMNISTDataModule
from datamodules.fixtures_natural import draw_digits, make_mnist_tree
from datamodules.idx import IdxError
from datamodules.mnist_variants import (
    add_decoy,
    color_palette,
    colorize,
    decoy_shades,
    decoy_squares,
)
from vapl.core.prompts import INDISPENSABLE, PRECLUDED


@pytest.fixture(scope="module")
def mnist_tree(tmp_path_factory) -> Path:
    return make_mnist_tree(tmp_path_factory.mktemp("mnist"), n_train=100, n_test=40)


def test_decoy_squares_sit_in_one_corner():
    squares = decoy_squares(200, 4, torch.Generator().manual_seed(0))
    corners = set()
    for square in squares:
        rows, cols = torch.nonzero(square, as_tuple=True)
        assert len(rows) == 16
        assert rows.max() - rows.min() == 3 and cols.max() - cols.min() == 3
        corners.add((int(rows.min()), int(cols.min())))
    assert corners == {(0, 0), (0, 24), (24, 0), (24, 24)}
    cdep = decoy_squares(50, 5, torch.Generator().manual_seed(0))
    assert {int(torch.nonzero(s)[0, 0]) for s in cdep} == {0, 23}  # CDEP's 0 or 23 offsets


def test_decoy_shades_follow_the_published_rules():
    labels = torch.arange(10).repeat(50)
    generator = torch.Generator().manual_seed(0)
    train = decoy_shades(labels, "train", "rrr", generator)
    assert train[:10].tolist() == [255, 230, 205, 180, 155, 130, 105, 80, 55, 30]
    assert torch.equal(decoy_shades(labels, "train", "cdep", generator), train)
    assert decoy_shades(labels, "test", "cdep", generator)[:10].tolist() == [
        0,
        25,
        50,
        75,
        100,
        125,
        150,
        175,
        200,
        225,
    ]
    rrr_test = decoy_shades(labels, "test", "rrr", generator)
    assert set(rrr_test.tolist()) == set(train[:10].tolist())
    agreement = (rrr_test == train).float().mean()  # random digit: agrees about 1 time in 10
    assert 0.03 < float(agreement) < 0.2


def test_add_decoy_by_hand():
    digits = torch.zeros(1, 28, 28, dtype=torch.uint8)
    digits[0, 10:18, 12] = 200
    images, squares = add_decoy(digits, torch.tensor([3]), "train", "cdep", torch.Generator())
    assert images.shape == (1, 1, 28, 28)
    assert torch.allclose(images[0, 0][squares[0]], torch.tensor(180 / 255))
    assert torch.allclose(images[0, 0, 10:18, 12], torch.tensor(200 / 255))
    assert float(images[0, 0][~squares[0]].sum() * 255) == pytest.approx(8 * 200, rel=1e-5)


def test_palette_and_colorize():
    palette = color_palette()
    assert torch.allclose(palette[0], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(palette[9], torch.tensor([128 / 255, 0.0, 128 / 255]), atol=1e-6)
    assert len({tuple(c.tolist()) for c in palette}) == 10
    digits = torch.full((2, 28, 28), 255, dtype=torch.uint8)
    labels = torch.tensor([0, 2])
    assert torch.allclose(colorize(digits, labels, "train")[1, :, 0, 0], palette[2])
    assert torch.allclose(colorize(digits, labels, "test")[1, :, 0, 0], palette[7])


def test_generated_digits_are_digit_like():
    digits = draw_digits([1, 8] * 20, seed=0)
    assert digits.shape == (40, 28, 28) and digits.dtype == np.uint8
    ink = (digits > 50).sum(axis=(1, 2))
    assert ink[1::2].mean() > 2 * ink[0::2].mean()  # an 8 has far more ink than a 1
    assert digits[:, :5, :5].max() == 0 and digits[:, -5:, -5:].max() == 0  # corners stay free


def test_decoy_datamodule(mnist_tree):
    module = DecoyMNISTDataModule(root=str(mnist_tree), construction="rrr", keep_fraction=0.5)
    module.setup()
    assert (module.num_classes, module.in_channels) == (10, 1)
    sizes = {split: len(dataset) for split, dataset in module.datasets.items()}
    assert sizes == {"train": 90, "val": 10, "test": 40}
    for split in ("train", "val", "test"):
        dataset = module.datasets[split]
        assert bool(dataset.has_prompt.all())
        for i in range(len(dataset)):
            sample = dataset[i]
            square = sample["prompt"] == PRECLUDED
            assert int(square.sum()) == 16
            shade = sample["image"][0][square]
            assert torch.allclose(shade, shade[0])
            if split != "test":
                assert round(float(shade[0]) * 255) == 255 - 25 * int(sample["label"])
            strokes = sample["explanation"] > 0
            assert not bool((strokes & square).any())
            kept = sample["prompt"] == INDISPENSABLE
            assert bool(strokes[kept].all())
            assert 0.3 < float(kept.sum() / strokes.sum()) < 0.7  # incomplete, as asked
    test_shades = torch.stack(
        [s["image"][0][s["prompt"] == PRECLUDED][0] for s in module.datasets["test"]]
    )
    test_labels = module.datasets["test"].labels
    assert float(((255 - 255 * test_shades).round() / 25 == test_labels).float().mean()) < 0.5


def test_decoy_options(mnist_tree):
    module = DecoyMNISTDataModule(
        root=str(mnist_tree),
        construction="cdep",
        n_train=30,
        n_test=12,
        n_prompted_train=7,
        val_rule="test",
    )
    module.setup()
    train, val = module.datasets["train"], module.datasets["val"]
    assert len(train) == 30 and len(module.datasets["test"]) == 12
    assert int(train.has_prompt.sum()) == 7
    for sample in val:  # validation built under the test rule: shade 25 y
        square = sample["prompt"] == PRECLUDED
        assert int(square.sum()) == 25
        assert round(float(sample["image"][0][square][0]) * 255) == 25 * int(sample["label"])
    again = DecoyMNISTDataModule(
        root=str(mnist_tree),
        construction="cdep",
        n_train=30,
        n_test=12,
        n_prompted_train=7,
        val_rule="test",
    )
    again.setup()
    assert torch.equal(again.datasets["train"].images, train.images)  # seeded
    assert again.datasets["train"].ids == train.ids
    with pytest.raises(ValueError, match="construction is one of rrr, cdep"):
        DecoyMNISTDataModule(root=str(mnist_tree), construction="ross")


def test_color_datamodule(mnist_tree):
    module = ColorMNISTDataModule(root=str(mnist_tree))
    module.setup()
    assert (module.num_classes, module.in_channels) == (10, 3)
    palette = color_palette()
    for split, flip in (("train", False), ("test", True)):
        sample = module.datasets[split][0]
        label = int(sample["label"])
        brightest = sample["image"].flatten(1).max(dim=1).values
        expected = palette[9 - label if flip else label]
        assert torch.allclose(brightest / brightest.max(), expected / expected.max(), atol=1e-5)
        strokes = sample["explanation"] > 0
        precluded = sample["prompt"] == PRECLUDED
        assert not bool((strokes & precluded).any())
        assert bool(precluded[0, 0]) and float(precluded.float().mean()) > 0.3
    none = ColorMNISTDataModule(root=str(mnist_tree), precluded_region="none", n_train=5)
    none.setup()
    assert not bool((none.datasets["train"].prompts == PRECLUDED).any())


def test_broken_idx_files_raise_naming_the_file(tmp_path):
    root = make_mnist_tree(tmp_path, n_train=20, n_test=10, compress=False)
    images = root / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    raw = images.read_bytes()
    images.write_bytes(raw[:-100])
    with pytest.raises(IdxError, match="t10k-images-idx3-ubyte: truncated"):
        DecoyMNISTDataModule(root=str(root)).setup()
    images.write_bytes(b"\x00\x00\x08\x01" + raw[4:])
    with pytest.raises(IdxError, match="t10k-images-idx3-ubyte: wrong magic number 0x00000801"):
        ColorMNISTDataModule(root=str(root)).setup()
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no MNIST train images file"):
        DecoyMNISTDataModule(root=str(tmp_path / "empty")).setup()
    with pytest.raises(FileNotFoundError, match="the MNIST root folder .*nowhere does not exist"):
        DecoyMNISTDataModule(root=str(tmp_path / "nowhere")).setup()


def test_minus_one_means_all_images_only_where_a_datamodule_says_so(tmp_path):
    from datamodules.synthetic import SyntheticDataModule

    DecoyMNISTDataModule(root=str(tmp_path), n_train=-1, n_val=-1, n_test=-1)  # all: accepted
    with pytest.raises(ValueError, match="n_train=-2"):
        DecoyMNISTDataModule(root=str(tmp_path), n_train=-2)
    with pytest.raises(ValueError, match="n_train=-1"):
        SyntheticDataModule(n_train=-1)
