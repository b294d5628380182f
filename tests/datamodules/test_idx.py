"""IDX files: round trips, torchvision's layout, and every kind of broken file."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from datamodules.idx import (
    IMAGES_MAGIC,
    LABELS_MAGIC,
    IdxError,
    find_mnist_file,
    read_idx,
    read_mnist,
    write_idx,
)


def test_hand_written_files_are_read(tmp_path):
    payload = bytes([0, 0, 0x08, 2]) + struct.pack(">2I", 2, 3) + bytes(range(6))
    (tmp_path / "plain").write_bytes(payload)
    (tmp_path / "zipped").write_bytes(gzip.compress(payload))  # recognised by content, not name
    for name in ("plain", "zipped"):
        array = read_idx(tmp_path / name)
        assert array.tolist() == [[0, 1, 2], [3, 4, 5]] and array.dtype == np.uint8
    big_endian = bytes([0, 0, 0x0B, 1]) + struct.pack(">I", 2) + struct.pack(">2h", -2, 300)
    (tmp_path / "short").write_bytes(big_endian)
    assert read_idx(tmp_path / "short").tolist() == [-2, 300]


@settings(max_examples=30, deadline=None)
@given(
    array=arrays(
        st.sampled_from([np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]),
        st.lists(st.integers(0, 4), min_size=1, max_size=3).map(tuple),
    ),
    compress=st.booleans(),
)
def test_round_trip(tmp_path_factory, array, compress):
    path = tmp_path_factory.mktemp("idx") / "a.idx"
    write_idx(path, array, compress)
    back = read_idx(path)
    assert back.shape == array.shape and back.dtype == array.dtype
    np.testing.assert_array_equal(back, array)


def test_wrong_magic_numbers(tmp_path):
    images = write_idx(tmp_path / "images", np.zeros((2, 28, 28), np.uint8))
    labels = write_idx(tmp_path / "labels.gz", np.zeros(2, np.uint8))
    assert read_idx(images, IMAGES_MAGIC).shape == (2, 28, 28)
    with pytest.raises(
        IdxError, match=r"labels.gz: wrong magic number 0x00000801, expected 0x00000803"
    ):
        read_idx(labels, IMAGES_MAGIC)
    with pytest.raises(IdxError, match=r"wrong magic number 0x00000803, expected 0x00000801"):
        read_idx(images, LABELS_MAGIC)
    (tmp_path / "png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(IdxError, match=r"png: wrong magic number 0x89504e47; not an IDX file"):
        read_idx(tmp_path / "png")


def test_truncated_and_overlong_files(tmp_path):
    full = tmp_path / "full"
    write_idx(full, np.arange(60, dtype=np.uint8).reshape(3, 4, 5))
    raw = full.read_bytes()
    (tmp_path / "short").write_bytes(raw[:-7])
    with pytest.raises(
        IdxError, match=r"short: truncated, 53 data bytes where shape \(3, 4, 5\) needs 60"
    ):
        read_idx(tmp_path / "short")
    (tmp_path / "header").write_bytes(raw[:9])
    with pytest.raises(IdxError, match="truncated header"):
        read_idx(tmp_path / "header")
    (tmp_path / "tiny").write_bytes(raw[:2])
    with pytest.raises(IdxError, match="truncated, 2 byte"):
        read_idx(tmp_path / "tiny")
    (tmp_path / "long").write_bytes(raw + b"\x00")
    with pytest.raises(IdxError, match="1 unexpected bytes"):
        read_idx(tmp_path / "long")
    zipped = gzip.compress(raw)
    (tmp_path / "cut.gz").write_bytes(zipped[: len(zipped) // 2])
    with pytest.raises(IdxError, match="cut.gz: truncated or corrupt gzip"):
        read_idx(tmp_path / "cut.gz")


@pytest.mark.parametrize("folder", ["", "MNIST/raw", "raw"])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_finds_files_in_torchvision_layouts(tmp_path, folder, suffix):
    raw = tmp_path / folder
    raw.mkdir(parents=True, exist_ok=True)
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    write_idx(raw / f"t10k-images-idx3-ubyte{suffix}", images)
    write_idx(raw / f"t10k-labels-idx1-ubyte{suffix}", np.array([0, 1, 2, 3, 9], np.uint8))
    assert find_mnist_file(tmp_path, "test", "images") == raw / f"t10k-images-idx3-ubyte{suffix}"
    read_images, read_labels = read_mnist(tmp_path, "test")
    np.testing.assert_array_equal(read_images, images)
    assert read_labels.tolist() == [0, 1, 2, 3, 9] and read_labels.dtype == np.int64
    with pytest.raises(FileNotFoundError, match="no MNIST train images file"):
        read_mnist(tmp_path, "train")


def test_mnist_files_must_agree(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((3, 28, 28), np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(2, np.uint8))
    with pytest.raises(IdxError, match="has 3 images but .* has 2 labels"):
        read_mnist(tmp_path, "train")
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.array([0, 1, 12], np.uint8))
    with pytest.raises(IdxError, match="labels must be digits 0 to 9, found 12"):
        read_mnist(tmp_path, "train")


def test_the_generator_command_toggles_segments_when_asked(tmp_path):
    from datamodules.fixtures_natural import main

    small = ["--n-train", "40", "--n-test", "10"]
    main(["mnist", str(tmp_path / "clean"), *small])
    main(["mnist", str(tmp_path / "noisy"), *small, "--segment-noise", "0.5"])
    clean, clean_labels = read_mnist(tmp_path / "clean", "train")
    noisy, noisy_labels = read_mnist(tmp_path / "noisy", "train")
    np.testing.assert_array_equal(clean_labels, noisy_labels)  # same digits, other strokes
    changed = [not np.array_equal(a, b) for a, b in zip(clean, noisy, strict=True)]
    assert sum(changed) >= len(changed) // 2
