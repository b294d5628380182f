"""FolderDataModule: a user's own files in, contract samples out, every bad row in one error."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules import FolderDataError, FolderDataModule
from datamodules.folder_csv import resolve_labels
from datamodules.folder_example import write_example_folder
from vapl.core.prompt_files import read_prompt

COLUMNS = ("image", "label", "split", "prompt", "explanation")


def write_csv(root: Path, rows: list[dict], columns: tuple[str, ...] = COLUMNS) -> Path:
    path = root / "labels.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def read_rows(root: Path) -> list[dict]:
    with (root / "labels.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def all_samples(dm: FolderDataModule) -> list[dict]:
    return [dm.datasets[split][i] for split in dm.datasets for i in range(len(dm.datasets[split]))]


def test_example_folder_follows_the_sample_contract(tmp_path: Path) -> None:
    write_example_folder(tmp_path, n=6, image_size=24, seed=1)
    dm = FolderDataModule(str(tmp_path), image_size=16, channels=1)
    assert (dm.num_classes, dm.in_channels) == (2, 1)
    dm.setup("fit")
    assert {split: len(ds) for split, ds in dm.datasets.items()} == {
        "train": 6,
        "val": 6,
        "test": 6,
    }
    samples = all_samples(dm)
    for sample in samples:
        assert sample["image"].dtype == torch.float32 and sample["image"].shape == (1, 16, 16)
        assert sample["prompt"].dtype == torch.float32 and sample["prompt"].shape == (16, 16)
        assert set(sample["prompt"].unique().tolist()) <= {-1.0, 0.0, 1.0}
        assert sample["has_prompt"].dtype == torch.bool and sample["has_prompt"].shape == ()
        assert sample["label"].dtype == torch.int64 and int(sample["label"]) in (0, 1)
        explanation = sample["explanation"]
        assert explanation.dtype == torch.float32 and explanation.shape == (16, 16)
        assert float(explanation.min()) >= 0.0 and float(explanation.max()) <= 1.0
        if not sample["has_prompt"]:
            assert bool((sample["prompt"] == -1).all())
    # Rows 0, 3, 6, ... of the file have no prompt: 6 of 18.
    assert sum(not bool(s["has_prompt"]) for s in samples) == 6
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (6, 1, 16, 16) and batch["has_prompt"].dtype == torch.bool


def test_files_at_their_own_size_are_read_exactly(tmp_path: Path) -> None:
    write_example_folder(tmp_path, n=3, image_size=24)
    dm = FolderDataModule(str(tmp_path), image_size=24, channels=1, mean=0.25, std=0.5)
    dm.setup()
    rows = read_rows(tmp_path)
    for row, sample in zip(rows, all_samples(dm)):
        assert sample["id"] == row["image"]
        path = tmp_path / row["image"]
        raw = np.asarray(Image.open(path)) / 255.0 if path.suffix == ".png" else np.load(path)
        expected = (torch.as_tensor(raw, dtype=torch.float32) - 0.25) / 0.5
        torch.testing.assert_close(sample["image"][0], expected)
        if row["prompt"]:
            assert torch.equal(sample["prompt"], read_prompt(tmp_path / row["prompt"]))


def _png(path: Path, array: np.ndarray, **kwargs) -> None:
    Image.fromarray(array).save(path, **kwargs)


FORMATS = {
    # name: (writer of a 4 x 4 file, expected values in [0, 1] for channels=3)
    "grey-png-uint8": (lambda p: _png(p, np.full((4, 4), 51, np.uint8)), [0.2, 0.2, 0.2]),
    "grey-png-uint16": (lambda p: _png(p, np.full((4, 4), 13107, np.uint16)), [0.2, 0.2, 0.2]),
    "rgb-png": (lambda p: _png(p, np.full((4, 4, 3), (255, 0, 51), np.uint8)), [1.0, 0.0, 0.2]),
    "rgba-png": (lambda p: _png(p, np.full((4, 4, 4), (0, 255, 0, 9), np.uint8)), [0, 1, 0]),
    "grey-jpeg": (lambda p: _png(p, np.full((4, 4), 102, np.uint8), quality=95), [0.4] * 3),
    "rgb-jpeg": (
        lambda p: _png(p, np.full((8, 8, 3), (204, 102, 51), np.uint8), quality=95),
        [0.8, 0.4, 0.2],
    ),
    "npy-uint8": (lambda p: np.save(p, np.full((4, 4), 51, np.uint8)), [0.2] * 3),
    "npy-uint16": (lambda p: np.save(p, np.full((4, 4), 13107, np.uint16)), [0.2] * 3),
    "npy-float-hwc": (
        lambda p: np.save(p, np.tile(np.float32([0.1, 0.2, 0.3]), (4, 4, 1))),
        [0.1, 0.2, 0.3],
    ),
    "npy-float-chw": (
        lambda p: np.save(p, np.tile(np.float32([0.1, 0.2, 0.3])[:, None, None], (1, 4, 4))),
        [0.1, 0.2, 0.3],
    ),
}
SUFFIX = {"png": ".png", "jpeg": ".jpg", "npy": ".npy"}


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", sorted(FORMATS))
def test_formats_scale_to_unit_and_convert_channels(tmp_path: Path, name: str, channels: int):
    writer, rgb = FORMATS[name]
    suffix = next(s for key, s in SUFFIX.items() if key in name)
    writer(tmp_path / f"x{suffix}")
    write_csv(tmp_path, [{"image": f"x{suffix}", "label": 0, "split": "test"}])
    dm = FolderDataModule(str(tmp_path), image_size=4, channels=channels, mean=0.0, std=1.0)
    dm.setup("test")
    image = dm.datasets["test"][0]["image"]
    assert image.shape == (channels, 4, 4)
    # RGB -> grey is ITU-R BT.601 luma.
    expected = rgb if channels == 3 else [0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]]
    tolerance = 3 / 255 if "jpeg" in name else 1e-6
    for channel, value in enumerate(expected):
        assert torch.allclose(image[channel], torch.tensor(float(value)), atol=tolerance)


def test_normalisation_per_channel(tmp_path: Path) -> None:
    FORMATS["rgb-png"][0](tmp_path / "x.png")
    write_csv(tmp_path, [{"image": "x.png", "label": 0, "split": "test"}])
    dm = FolderDataModule(str(tmp_path), image_size=4, mean=[0.5, 0.0, 0.1], std=[0.5, 2.0, 0.1])
    dm.setup("test")
    values = dm.datasets["test"][0]["image"][:, 0, 0]
    torch.testing.assert_close(values, torch.tensor([1.0, 0.0, 1.0]))


def test_resize_bilinear_image_nearest_prompt(tmp_path: Path) -> None:
    ramp = np.repeat((np.arange(8, dtype=np.float32) / 7)[:, None], 8, axis=1)  # varies by row
    np.save(tmp_path / "x.npy", ramp)
    np.save(tmp_path / "e.npy", ramp)
    prompt = np.random.default_rng(0).choice([-1.0, 0.0, 1.0], size=(8, 8)).astype(np.float32)
    np.save(tmp_path / "p.npy", prompt)
    row = {
        "image": "x.npy",
        "label": 1,
        "split": "train",
        "prompt": "p.npy",
        "explanation": "e.npy",
    }
    write_csv(tmp_path, [row])
    with pytest.warns(UserWarning, match=r"classes \['0'\] have no rows"):
        dm = FolderDataModule(str(tmp_path), image_size=(4, 6), channels=1, mean=0.0, std=1.0)
    dm.setup()
    sample = dm.datasets["train"][0]
    assert sample["image"].shape == (1, 4, 6) and sample["explanation"].shape == (4, 6)
    # Rows 8 -> 4: inner output rows average input rows symmetric about 2.5 and 4.5.
    for out_row, centre in ((1, 2.5), (2, 4.5)):
        torch.testing.assert_close(sample["image"][0, out_row], torch.full((6,), centre / 7))
        torch.testing.assert_close(sample["explanation"][out_row], torch.full((6,), centre / 7))
    # Nearest: output (i, j) takes input (floor(i * 8 / 4), floor(j * 8 / 6)).
    expected = torch.from_numpy(prompt[[0, 2, 4, 6]][:, [0, 1, 2, 4, 5, 6]])
    assert torch.equal(sample["prompt"], expected)
    assert bool(sample["has_prompt"]) and int(sample["label"]) == 1


def _one_image_rows(root: Path, labels: list[str]) -> None:
    _png(root / "x.png", np.zeros((4, 4), np.uint8))
    write_csv(root, [{"image": "x.png", "label": label, "split": "train"} for label in labels])


def test_class_names_become_sorted_indices(tmp_path: Path) -> None:
    _one_image_rows(tmp_path, ["dog", "cat", "bird", "cat"])
    dm = FolderDataModule(str(tmp_path), image_size=4)
    assert dm.num_classes == 3 and dm.class_names == ["bird", "cat", "dog"]  # before setup
    dm.setup()
    assert [int(s["label"]) for s in all_samples(dm)] == [2, 1, 0, 1]
    ordered = FolderDataModule(str(tmp_path), image_size=4, classes=["dog", "cat", "bird"])
    ordered.setup()
    assert [int(s["label"]) for s in all_samples(ordered)] == [0, 1, 2, 1]


def test_names_and_indices_give_the_same_labels(tmp_path: Path) -> None:
    write_example_folder(tmp_path / "ints", n=4)
    write_example_folder(tmp_path / "names", n=4, labels_as_names=True)
    labels = {}
    for kind in ("ints", "names"):
        dm = FolderDataModule(str(tmp_path / kind), image_size=8)
        dm.setup()
        labels[kind] = [int(s["label"]) for s in all_samples(dm)]
    assert labels["ints"] == labels["names"] and set(labels["ints"]) == {0, 1}


def test_resolve_labels_flags_the_minority_kind() -> None:
    names, results = resolve_labels(["0", "2", "cat", "", "-1", "2"])
    assert names == ["0", "1", "2"]
    assert results[:2] == [0, 2] and results[5] == 2
    assert all(isinstance(r, str) for r in results[2:5])
    names, results = resolve_labels(["b", "a", "7"])
    assert names == ["a", "b"] and results[:2] == [1, 0] and "integer" in str(results[2])


def test_every_bad_row_is_reported_in_one_error(tmp_path: Path) -> None:
    write_example_folder(tmp_path, n=4, image_size=24)
    rows = read_rows(tmp_path)
    good_png = rows[0]["image"]
    (tmp_path / "images" / "broken.png").write_bytes(b"this is not a png")
    np.save(tmp_path / "prompts" / "small.npy", -np.ones((5, 5), np.float32))
    np.save(tmp_path / "prompts" / "twos.npy", np.full((24, 24), 2.0, np.float32))
    np.save(tmp_path / "explanations" / "hot.npy", np.full((24, 24), 1.5, np.float32))
    _png(tmp_path / "explanations" / "tiny.png", np.zeros((10, 10), np.uint8))
    base = {"label": "1", "split": "train", "prompt": "", "explanation": rows[0]["explanation"]}
    bad = {
        "file not found": {"image": "images/missing.png"},
        "cannot decode": {"image": "images/broken.png"},
        "is not one of train, val, test": {"image": good_png, "split": "training"},
        "negative": {"image": good_png, "label": "-3"},
        "empty label": {"image": good_png, "label": ""},
        "does not match the image": {"image": good_png, "prompt": "prompts/small.npy"},
        "-1 (undecided), 0 (precluded) or 1": {"image": good_png, "prompt": "prompts/twos.npy"},
        "must lie in [0, 1]": {"image": good_png, "explanation": "explanations/hot.npy"},
        "explanation shape (10, 10)": {"image": good_png, "explanation": "explanations/tiny.png"},
        "other 'train' rows have one": {"image": good_png, "explanation": ""},
        "prompts/nowhere.png: file not found": {"image": good_png, "prompt": "prompts/nowhere.png"},
    }
    rows += [{**base, **change} for change in bad.values()]
    write_csv(tmp_path, rows)
    first_bad_line = 2 + 12  # header, then 12 good rows
    expected_lines = set(range(first_bad_line, first_bad_line + len(bad)))

    dm = FolderDataModule(str(tmp_path), image_size=16)  # the CSV is fine as text
    with pytest.raises(FolderDataError) as caught:
        dm.setup("fit")
    error = caught.value
    assert {problem.line for problem in error.problems} == expected_lines
    message = str(error)
    assert f"{len(bad)} of {len(rows)} rows cannot be used" in message
    for line, reason in zip(sorted(expected_lines), bad):
        listed = [p for p in error.problems if p.line == line]
        assert any(reason in str(p) for p in listed), (line, reason, listed)
        assert f"line {line}: " in message
    assert "images/missing.png" in message and "prompts/twos.npy" in message


def test_missing_csv_or_columns_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FolderDataError, match="labels.csv: no such file"):
        FolderDataModule(str(tmp_path))
    write_csv(tmp_path, [{"image": "x.png", "split": "train"}], columns=("image", "split"))
    with pytest.raises(FolderDataError, match="missing column\\(s\\) label"):
        FolderDataModule(str(tmp_path))


def test_a_stage_without_its_split_is_a_clear_error(tmp_path: Path) -> None:
    _one_image_rows(tmp_path, ["0", "1"])
    dm = FolderDataModule(str(tmp_path), image_size=4)
    with pytest.raises(FolderDataError, match="no rows with split val, which 'fit' needs"):
        dm.setup("fit")


def test_cache_gives_the_same_samples_and_lazy_loading_names_a_vanished_file(tmp_path: Path):
    write_example_folder(tmp_path, n=3, image_size=12)
    lazy = FolderDataModule(str(tmp_path), image_size=12)
    cached = FolderDataModule(str(tmp_path), image_size=12, cache=True)
    lazy.setup()
    cached.setup()
    for a, b in zip(all_samples(lazy), all_samples(cached)):
        for key in a:
            assert (a[key] == b[key]) if key == "id" else torch.equal(a[key], b[key])
    (tmp_path / lazy.datasets["train"].entries[1].image).unlink()
    with pytest.raises(FolderDataError, match="line 3: .*file not found"):
        lazy.datasets["train"][1]
    assert torch.equal(cached.datasets["train"][1]["image"], all_samples(cached)[1]["image"])


def test_augment_flips_image_prompt_and_explanation_together(tmp_path: Path) -> None:
    write_example_folder(tmp_path, n=3, image_size=12)
    plain = FolderDataModule(str(tmp_path), image_size=12)
    augmented = FolderDataModule(str(tmp_path), image_size=12, augment=True)
    plain.setup()
    augmented.setup()
    original = plain.datasets["train"][1]
    assert augmented.datasets["val"].transform is None
    torch.manual_seed(0)
    flips = []
    for _ in range(20):
        sample = augmented.datasets["train"][1]
        flipped = not torch.equal(sample["image"], original["image"])
        flips.append(flipped)
        for key in ("image", "prompt", "explanation"):
            expected = original[key].flip(-1) if flipped else original[key]
            assert torch.equal(sample[key], expected)
    assert any(flips) and not all(flips)


def test_cli_fit_and_test_on_a_generated_folder(tmp_path: Path) -> None:
    from vapl.training.cli import build_cli

    root = tmp_path / "data"
    write_example_folder(root, n=8, image_size=24)
    cli = build_cli(
        [
            "fit",
            "--config",
            "folder.yaml",
            "--data.init_args.root",
            str(root),
            "--data.init_args.image_size=24",
            "--data.init_args.batch_size=8",
            "--data.init_args.num_workers=0",
            "--model.init_args.backbone=tiny",
            "--model.init_args.n_masks=8",
            "--trainer.max_epochs=1",
            "--trainer.accelerator=cpu",
            "--trainer.log_every_n_steps=1",
            "--trainer.enable_progress_bar=false",
            "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
            "--trainer.default_root_dir",
            str(tmp_path),
        ]
    )
    assert (cli.model.hparams.num_classes, cli.model.hparams.in_channels) == (2, 3)
    cli.trainer.test(cli.model, datamodule=cli.datamodule)
    keys = {"test/prompted/acc", "test/unprompted/acc"}
    assert keys <= set(cli.trainer.callback_metrics)
    metrics_csv = Path(cli.trainer.logger.log_dir) / "metrics.csv"
    with metrics_csv.open(newline="") as handle:
        header = next(csv.reader(handle))
    assert keys <= set(header)
    assert "val/prompted/acc" in header and "val/unprompted/acc" in header
