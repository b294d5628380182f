"""Pancreas datamodule on a generated tree: Decathlon NIfTI plus TCIA DICOM, one orientation."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from datamodules import PancreasDataModule
from datamodules.cache import DataError
from datamodules.fixtures import write_pancreas_tree
from vapl.core.errors import MissingPathError

IMAGE = 32


@pytest.fixture(scope="module")
def pancreas(tmp_path_factory) -> Path:
    return write_pancreas_tree(tmp_path_factory.mktemp("pancreas"), abnormal=4, normal=4, size=48)


def make(root: Path, cache: Path, **kwargs) -> PancreasDataModule:
    options = {"image_size": IMAGE, "n_train": 6, "n_val": 6, **kwargs}
    return PancreasDataModule(root=str(root), cache_dir=str(cache), **options)


def test_cases_come_from_dataset_json_and_the_tcia_folders(pancreas, tmp_path):
    dm = make(pancreas, tmp_path)
    dm.setup()
    manifest = dm.cache.manifest
    assert manifest["summary"]["cases"] == 8 and manifest["summary"]["skipped"] == 0
    sources = {s for r in manifest["samples"] for s in r["sources"]}
    assert not any("/._" in s or "imagesTs" in s for s in sources)  # stray and unlabelled files
    assert any(s.startswith("Task07_Pancreas/imagesTr/") for s in sources)
    assert any(s.startswith("Pancreas-CT/") and s.endswith(".dcm") for s in sources)
    for record in manifest["samples"]:  # positives cross the tumour, negatives the pancreas
        assert (record["tumour_pixels"] > 0) == (record["label"] == 1)
    # Balanced splits of whole patients: 30 / 30 / rest in the paper, 6 / 6 / rest here.
    assert [len(dm.datasets[s]) for s in ("train", "val")] == [6, 6]
    patients = [{i.split("/")[0] for i in dm.datasets[s].ids} for s in ("train", "val", "test")]
    assert not (patients[0] & patients[1] or patients[0] & patients[2] or patients[1] & patients[2])
    test_labels = dm.cache.labels[dm.datasets["test"].rows]
    assert (test_labels == 0).sum() == (test_labels == 1).sum() > 0


def test_nifti_and_dicom_cases_come_out_the_same_way_round(pancreas, tmp_path):
    """The fixture draws the pancreas on the patient's left (large x, the image's right) with its
    head to the right, and writes it as NIfTI (y stored reversed in odd cases) and as DICOM (one
    series with flipped in-plane axes): every sample must show it in the same place."""
    dm = make(pancreas, tmp_path, image_size=48)
    dm.setup()
    cache = dm.cache
    explanations = np.asarray(cache.arrays["explanations"], dtype=bool)
    by_source = {label: explanations[cache.labels == label].mean(axis=0) > 0.5 for label in (0, 1)}
    overlap = (by_source[0] & by_source[1]).sum() / (by_source[0] | by_source[1]).sum()
    mirrored = (by_source[0] & by_source[1][:, ::-1]).sum() / (
        by_source[0] | by_source[1][:, ::-1]
    ).sum()
    upside_down = (by_source[0] & by_source[1][::-1]).sum() / (
        by_source[0] | by_source[1][::-1]
    ).sum()
    assert overlap > 0.7 and mirrored < 0.4 and upside_down < 0.4
    for row, record in enumerate(cache.manifest["samples"]):
        ys, xs = np.nonzero(explanations[row])
        assert 24 < xs.mean() < 30 and 20 < ys.mean() < 25, record["id"]
        head = explanations[row][:, : int(0.48 * 48)]  # the blob right of the spine's line
        assert head.any() and np.nonzero(head)[0].mean() > ys.mean(), record["id"]
    # The pixels also line up with the labels read straight from the NIfTI by nibabel.
    label = nib.load(pancreas / "Task07_Pancreas" / "labelsTr" / "pancreas_001.nii.gz")
    data = np.asarray(label.dataobj)  # [x, y, z], x growing to the patient's left (affine)
    assert nib.aff2axcodes(label.affine) == ("L", "P", "S")
    k = cache.manifest["samples"][0]["slice"]
    assert cache.manifest["samples"][0]["id"] == f"pancreas_001/{k:04d}"
    assert np.array_equal(explanations[0], data[:, :, k].T > 0)


def test_prompt_comes_from_the_pancreas_by_default_or_from_the_tumour_with_a_warning(
    pancreas, tmp_path
):
    with pytest.warns(UserWarning, match="gives the label away"):
        tumour = make(pancreas, tmp_path, keep_fraction=1.0, jitter=0, prompt_source="tumour")
    tumour.setup()
    whole = make(pancreas, tmp_path, keep_fraction=1.0, jitter=0)
    whole.setup()
    assert tumour.cache.directory == whole.cache.directory  # prompts are made when served
    for a, b in zip(tumour.datasets["test"], whole.datasets["test"]):
        row = tumour.cache.ids.index(a["id"])
        lesion = np.asarray(tumour.cache.arrays["lesions"][row]) > 0
        explanation = a["explanation"].numpy() > 0
        expected = lesion if a["label"] == 1 else explanation
        assert np.array_equal(a["prompt"].numpy() == 1, expected)
        assert np.array_equal(b["prompt"].numpy() == 1, explanation)
        assert not (lesion & ~explanation).any()  # the tumour lies in the pancreas
        assert (a["prompt"].numpy() == 0).mean() > 0.2  # outside the body
    with pytest.raises(ValueError, match="prompt_source"):
        make(pancreas, tmp_path, prompt_source="liver")


def _shrink_label(root: Path) -> Path:
    path = root / "Task07_Pancreas" / "labelsTr" / "pancreas_003.nii.gz"
    image = nib.load(path)
    small = np.asarray(image.dataobj)[:, :, :-2]
    nib.save(nib.Nifti1Image(small, image.affine), path)
    return path


def _shrink_tcia_label(root: Path) -> Path:
    path = root / "TCIA_pancreas_labels-02-05-2017" / "label0002.nii.gz"
    image = nib.load(path)
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj)[:-3], image.affine), path)
    return path


@pytest.mark.parametrize("damage", [_shrink_label, _shrink_tcia_label])
def test_label_shape_mismatch_skips_the_case(pancreas, tmp_path, caplog, damage):
    root = Path(shutil.copytree(pancreas, tmp_path / "tree"))
    path = damage(root)
    with pytest.raises(DataError, match=f"{path.name}: label shape .* does not match"):
        make(root, tmp_path / "strict", strict=True).setup()
    with caplog.at_level(logging.WARNING, logger="datamodules.cache"):
        dm = make(root, tmp_path / "lenient")
        dm.setup()
    assert dm.cache.manifest["summary"]["skipped"] == 1
    assert path.name in dm.cache.manifest["skipped"][0]["reason"]
    assert any(path.name in r.message for r in caplog.records)
    assert dm.cache.manifest["summary"]["cases_used"] == 7


def test_missing_or_broken_index_is_a_clear_error(pancreas, tmp_path):
    root = Path(shutil.copytree(pancreas, tmp_path / "tree"))
    index = root / "Task07_Pancreas" / "dataset.json"
    index.write_text(json.dumps({"name": "Pancreas"}))
    with pytest.raises(DataError, match="dataset.json: not a Decathlon"):
        make(root, tmp_path / "cache").setup()
    with pytest.raises(MissingPathError, match="pancreas root folder .*nowhere does not exist"):
        make(tmp_path / "nowhere", tmp_path / "cache").setup()
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty.Task07_Pancreas.dataset.json: not found"):
        make(tmp_path / "empty", tmp_path / "cache").setup()


def test_cli_fit_on_a_generated_tree(pancreas, tmp_path, monkeypatch):
    from vapl.training.cli import build_cli

    monkeypatch.chdir(tmp_path)
    cli = build_cli(
        [
            "fit",
            "--config", "pancreas.yaml",
            "--data.init_args.root", str(pancreas),
            "--data.init_args.cache_dir", str(tmp_path / "cache"),
            "--data.init_args.image_size=32",
            "--model.init_args.backbone=tiny",
            "--model.init_args.n_masks=8",
            "--trainer.fast_dev_run=true",
            "--trainer.default_root_dir", str(tmp_path / "runs"),
        ]
    )  # fmt: skip
    assert cli.trainer.state.finished
    batch = next(iter(cli.datamodule.train_dataloader()))
    assert batch["image"].shape[1:] == (1, 32, 32) and batch["prompt"].shape[1:] == (32, 32)
    assert torch.isin(batch["prompt"], torch.tensor([-1.0, 0.0, 1.0])).all()
    assert F.mse_loss(batch["explanation"], batch["explanation"].round()) == 0
