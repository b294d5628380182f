"""Saving training prompts: the CSV cell, atomic writes, the backup, paths outside the root."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules import FolderDataModule
from datamodules.folder_example import write_example_folder
from vapl.apps.app import annotate
from vapl.apps.app.annotate import AnnotationError, OutsideRootError, PromptTable
from vapl.core.prompt_files import read_prompt


def _prompt(height: int, width: int) -> torch.Tensor:
    prompt = torch.full((height, width), -1.0)
    prompt[2:5, 3:7] = 1.0
    prompt[-3:, :2] = 0.0
    return prompt


@pytest.fixture
def folder(tmp_path):
    write_example_folder(tmp_path / "data", n=3, image_size=12)
    return tmp_path / "data"


def test_saving_writes_the_prompt_png_and_only_that_rows_cell(folder):
    before = (folder / "labels.csv").read_text()
    table = PromptTable.open(folder)
    assert table.progress() == (6, 9)  # the example gives rows 1 and 2 of every 3 a prompt
    index = table.first_unprompted()
    assert index == 0 and table.rows[0]["prompt"] == ""
    path = table.save(index, _prompt(12, 12))
    assert path == folder / "prompts" / "train-00000.png"
    # the folder format's gray code, read back by the one reader
    assert torch.equal(read_prompt(path, (12, 12)), _prompt(12, 12))
    assert sorted(np.unique(np.asarray(Image.open(path))).tolist()) == [0, 128, 255]
    after = (folder / "labels.csv").read_text().splitlines()
    old = before.splitlines()
    assert after[0] == old[0] and after[2:] == old[2:]  # header and every other row unchanged
    assert (
        after[1]
        == "images/train-00000.png,0,train,prompts/train-00000.png,explanations/train-00000.png"
    )
    assert (folder / "labels.csv.bak").read_text() == before  # the previous CSV, kept
    assert table.progress() == (7, 9) and table.first_unprompted(0) == 3
    assert [p.name for p in folder.rglob(".*tmp*")] == []  # no temporary file left
    data = FolderDataModule(str(folder), image_size=12, channels=1)
    data.setup("fit")  # the data set still loads, with the new prompt
    sample = data.datasets["train"][0]
    assert bool(sample["has_prompt"]) and torch.equal(sample["prompt"], _prompt(12, 12))


def test_an_npy_prompt_stays_npy_and_a_missing_prompt_column_is_added(folder):
    table = PromptTable.open(folder)
    npy_row = next(i for i, row in enumerate(table.rows) if row["prompt"].endswith(".npy"))
    path = table.save(npy_row, _prompt(12, 12))
    assert path.suffix == ".npy" and torch.equal(torch.from_numpy(np.load(path)), _prompt(12, 12))
    (folder / "labels.csv").write_text("image,label,split\nimages/train-00000.png,0,train\n")
    table = PromptTable.open(folder)
    table.save(0, _prompt(12, 12))
    assert (folder / "labels.csv").read_text() == (
        "image,label,split,prompt\nimages/train-00000.png,0,train,prompts/train-00000.png\n"
    )


def test_a_crash_while_replacing_the_csv_leaves_it_whole(folder, monkeypatch):
    before = (folder / "labels.csv").read_bytes()
    table = PromptTable.open(folder)
    real_replace = os.replace

    def failing_replace(source, target):
        if str(target).endswith("labels.csv"):
            raise OSError("disk full")
        real_replace(source, target)

    monkeypatch.setattr(annotate.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        table.save(0, _prompt(12, 12))
    assert (folder / "labels.csv").read_bytes() == before
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []
    # the same for the prompt file: an old prompt is never half overwritten
    png_row = next(i for i, row in enumerate(table.rows) if row["prompt"].endswith(".png"))
    prompt_file = folder / table.rows[png_row]["prompt"]
    old_prompt = prompt_file.read_bytes()
    monkeypatch.setattr(annotate.os, "replace", lambda s, t: (_ for _ in ()).throw(OSError("x")))
    with pytest.raises(OSError):
        table.save(png_row, _prompt(12, 12))
    assert prompt_file.read_bytes() == old_prompt
    assert (folder / "labels.csv").read_bytes() == before


def test_edits_made_by_hand_meanwhile_are_kept(folder):
    table = PromptTable.open(folder)
    text = (
        (folder / "labels.csv")
        .read_text()
        .replace("images/train-00001.npy,1,", "images/train-00001.npy,0,")
    )
    (folder / "labels.csv").write_text(text)
    table.save(0, _prompt(12, 12))
    assert "images/train-00001.npy,0,train" in (folder / "labels.csv").read_text()


@pytest.mark.parametrize(
    ("image", "prompt", "message"),
    [
        ("../outside.png", "", "leads outside the data set's root"),
        ("images/train-00000.png", "../../stolen.png", "leads outside the data set's root"),
        ("images/train-00000.png", "/tmp/abs.png", "/tmp/abs.png: leads outside"),
        ("link/outside.png", "", "leads outside the data set's root"),
    ],
)
def test_paths_outside_the_root_are_refused_and_nothing_is_written(folder, image, prompt, message):
    outside = folder.parent / "outside.png"
    Image.fromarray(np.zeros((12, 12), np.uint8)).save(outside)
    (folder / "link").symlink_to(folder.parent, target_is_directory=True)
    (folder / "labels.csv").write_text(f"image,label,split,prompt\n{image},0,train,{prompt}\n")
    before = sorted(p for p in folder.parent.rglob("*") if "link" not in p.parts)
    table = PromptTable.open(folder)
    with pytest.raises(OutsideRootError, match=message):
        table.save(0, _prompt(12, 12))
    assert sorted(p for p in folder.parent.rglob("*") if "link" not in p.parts) == before
    assert not (folder / "labels.csv.bak").exists()


def test_a_folder_of_images_gets_a_labels_csv_at_the_first_save(tmp_path):
    for name in ("b.png", "sub/a.png", "prompts/old.png", ".hidden.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((6, 8), np.uint8)).save(tmp_path / name)
    table = PromptTable.open(tmp_path)
    assert [row["image"] for row in table.rows] == ["b.png", "sub/a.png"]
    assert not table.has_csv and table.progress() == (0, 2)
    assert annotate.inside_root(tmp_path, str(tmp_path / "b.png")) == tmp_path / "b.png"
    table.save(1, _prompt(6, 8))
    assert (tmp_path / "labels.csv").read_text() == (
        "image,label,split,prompt\nb.png,,,\nsub/a.png,,,prompts/sub/a.png\n"
    )
    assert not (tmp_path / "labels.csv.bak").exists()  # there was no previous CSV
    assert PromptTable.open(tmp_path).progress() == (1, 2)


def test_folders_that_cannot_be_annotated_are_named(tmp_path):
    with pytest.raises(AnnotationError, match="not a folder"):
        PromptTable.open(tmp_path / "missing")
    with pytest.raises(AnnotationError, match="no labels.csv and no images"):
        PromptTable.open(tmp_path)
    (tmp_path / "labels.csv").write_text("path,label\nx.png,1\n")
    with pytest.raises(AnnotationError, match="no 'image' column"):
        PromptTable.open(tmp_path)
    with pytest.raises(AnnotationError, match="no folder given"):
        PromptTable.open("  ")
