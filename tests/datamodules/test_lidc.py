"""LIDC-IDRI datamodule on generated archive trees: cache, overlap with contours, bad input, CLI."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
import torch.nn.functional as F

from datamodules import LIDCDataModule
from datamodules.cache import MANIFEST, DataError
from datamodules.fixtures import CONTOUR_MARGIN, write_lidc_tree

SIZE = 64  # pixels of the generated slices
IMAGE = 32  # pixels of the samples


@pytest.fixture(scope="module")
def lidc(tmp_path_factory):
    root, truths = write_lidc_tree(tmp_path_factory.mktemp("lidc"), patients=6, size=SIZE)
    return root, truths


@pytest.fixture
def tree(lidc, tmp_path) -> Path:
    """A private copy of the tree, free to damage."""
    return Path(shutil.copytree(lidc[0], tmp_path / "LIDC-IDRI"))


def make(root: Path, cache: Path, **kwargs) -> LIDCDataModule:
    options = {"image_size": IMAGE, "n_train": 10, "n_val": 10, "n_test": 10, **kwargs}
    return LIDCDataModule(root=str(root), cache_dir=str(cache), **options)


def nodule_slice(root: Path, patient: str, truths) -> tuple[Path, Path]:
    """The DICOM file of the patient's central nodule slice, and the series' XML."""
    series = next(p.parent for p in (root / patient).rglob("*.xml") if "CXR" not in str(p))
    centre = sorted(truths[patient].disks)[2]
    files = sorted(
        series.glob("*.dcm"), key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2])
    )
    return files[centre], next(series.glob("*.xml"))


def test_cache_holds_the_nodule_slices_and_their_sources(lidc, tmp_path):
    root, truths = lidc
    dm = make(root, tmp_path)
    dm.setup()
    manifest = dm.cache.manifest
    summary = manifest["summary"]
    assert summary["cases"] == 7 and summary["cases_used"] == 6 and summary["skipped"] == 0
    assert summary["ignored"] == 1 and "modality DX, not CT" in manifest["ignored"][0]["reason"]
    # Five nodule slices per patient, as many negatives; the duplicate file of patient 5 is dropped.
    assert summary["samples_by_label"] == {"0": 30, "1": 30}
    for record in manifest["samples"]:
        assert all((root / source).is_file() for source in record["sources"])
        assert record["sources"][0].endswith(".dcm") and record["sources"][1].endswith(".xml")
        if record["label"] == 1:
            assert record["slice"] in truths[record["patient"]].disks
        else:  # negatives: two slices clear of every marked slice
            assert min(abs(record["slice"] - k) for k in truths[record["patient"]].disks) >= 2
    assert manifest["settings"]["image_size"] == IMAGE and manifest["settings"]["consensus"] == 0.5
    images = np.load(dm.cache.directory / "images.npy", mmap_mode="r")
    assert images.dtype == np.float16 and images.shape == (60, IMAGE, IMAGE)


def _reference(truth, k: int, size: int) -> np.ndarray:
    """The drawn outline (plus the half pixel its own line covers), shrunk by area to ``size``."""
    cy, cx, radius = truth.disks[k]
    yy, xx = np.mgrid[: truth.size, : truth.size]
    disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= (radius + CONTOUR_MARGIN + 0.5) ** 2
    area = F.interpolate(
        torch.from_numpy(disk.astype(np.float32))[None, None], size=(size, size), mode="area"
    )
    return area[0, 0].numpy() >= 0.5


def test_explanations_and_prompts_overlap_the_drawn_contours(lidc, tmp_path):
    root, truths = lidc
    exact = make(root, tmp_path, keep_fraction=1.0, jitter=0)
    exact.setup()
    partial = make(root, tmp_path, keep_fraction=0.5, jitter=1)
    partial.setup()
    ious = []
    for split in ("train", "val", "test"):
        for sample, incomplete in zip(exact.datasets[split], partial.datasets[split]):
            record = exact.cache.manifest["samples"][exact.cache.ids.index(sample["id"])]
            k = record["slice"] if record["label"] == 1 else record["region_from_slice"]
            reference = _reference(truths[record["patient"]], k, IMAGE)
            explanation = sample["explanation"].numpy() > 0
            ious.append((explanation & reference).sum() / (explanation | reference).sum())
            prompt = sample["prompt"].numpy()
            assert np.array_equal(prompt == 1, explanation)  # complete prompt = explanation
            assert not (prompt == 0)[explanation].any()  # the nodule is never precluded
            assert 0.25 < (prompt == 0).mean() < 0.6  # outside the body: the rim and the corners
            kept = incomplete["prompt"].numpy() == 1
            grown = F.max_pool2d(sample["explanation"][None, None], 3, 1, 1)[0, 0].numpy() > 0
            assert kept.any() and not kept[~grown].any()
            assert 0.2 < kept[explanation].sum() / explanation.sum() < 0.95
            image = sample["image"][0].numpy()
            # The bright nodule sits inside the explanation of positives, lung around negatives'.
            inside = image[explanation].mean()
            assert inside > 0.2 if sample["label"] == 1 else inside < -0.2
    assert np.mean(ious) > 0.9 and np.min(ious) > 0.75


def test_exclusion_contour_cuts_the_cavity_out(lidc, tmp_path):
    root, truths = lidc
    dm = make(root, tmp_path, image_size=SIZE)
    dm.setup()
    truth = truths["LIDC-IDRI-0002"]  # the patient whose nodule has a cavity
    k = max(truth.disks, key=lambda z: truth.disks[z][2])
    records = dm.cache.manifest["samples"]
    wanted = {"patient": "LIDC-IDRI-0002", "label": 1, "slice": k}
    row = next(i for i, r in enumerate(records) if all(r[key] == v for key, v in wanted.items()))
    cy, cx, radius = truth.disks[k]
    explanation = np.asarray(dm.cache.arrays["explanations"][row])
    assert explanation[round(cy), round(cx)] == 0  # the hole
    assert explanation[round(cy), round(cx + radius * 0.7)] == 1  # the wall


def test_splits_are_by_patient(lidc, tmp_path):
    dm = make(lidc[0], tmp_path, n_train=20, n_val=10, n_test=None)
    dm.setup()
    patients = {s: {i.split("/")[0] for i in dm.datasets[s].ids} for s in ("train", "val", "test")}
    assert not patients["train"] & patients["val"] and not patients["train"] & patients["test"]
    assert not patients["val"] & patients["test"]
    labels = [int(dm.cache.labels[r]) for r in dm.datasets["train"].rows]
    assert labels.count(0) == labels.count(1) > 0


def _garbage(dicom: Path, xml: Path) -> str:
    dicom.write_bytes(b"\x00" * 64 + b"not DICOM")
    return f"{dicom.name}: not a readable DICOM"


def _truncated(dicom: Path, xml: Path) -> str:
    data = dicom.read_bytes()
    dicom.write_bytes(data[: len(data) - 1000])
    return f"{dicom.name}: cannot read pixel data"


def _bad_xml(dicom: Path, xml: Path) -> str:
    xml.write_text(xml.read_text()[:2000])
    return f"{xml.name}: XML does not parse"


def _missing_slice(dicom: Path, xml: Path) -> str:
    uid = pydicom.dcmread(dicom).SOPInstanceUID
    dicom.unlink()
    return f"{xml.name}: .*points to SOP instance UID {uid}, a slice missing"


def _other_series(dicom: Path, xml: Path) -> str:
    uid = pydicom.dcmread(dicom).SeriesInstanceUID
    xml.write_text(xml.read_text().replace(uid, "1.2.3.999"))
    return f"{xml.name}: annotates series 1.2.3.999, the folder holds {uid}"


@pytest.mark.parametrize("damage", [_garbage, _truncated, _bad_xml, _missing_slice, _other_series])
def test_bad_input_skips_the_case_or_stops_when_strict(lidc, tree, tmp_path, caplog, damage):
    dicom, xml = nodule_slice(tree, "LIDC-IDRI-0003", lidc[1])
    message = damage(dicom, xml)
    with pytest.raises(DataError, match=message):
        make(tree, tmp_path / "strict", strict=True).setup()
    assert not any((tmp_path / "strict").glob(f"*/{MANIFEST}"))  # nothing that looks complete
    with caplog.at_level(logging.WARNING, logger="datamodules.cache"):
        dm = make(tree, tmp_path / "lenient")
        dm.setup()
    summary = dm.cache.manifest["summary"]
    assert summary["skipped"] == 1 and summary["cases_used"] == 5
    assert "LIDC-IDRI-0003" not in {r["patient"] for r in dm.cache.manifest["samples"]}
    skip = dm.cache.manifest["skipped"][0]
    assert skip["case"].startswith("LIDC-IDRI-0003/")
    assert any("skipped LIDC-IDRI-0003" in r.message for r in caplog.records)
    assert re.search(message, skip["reason"])


def test_a_crash_leaves_no_cache_that_looks_complete(lidc, tmp_path, monkeypatch):
    calls = []
    original = LIDCDataModule.process_case

    def crash_on_third(self, case):
        calls.append(case)
        if len(calls) == 3:
            raise KeyboardInterrupt("interrupted halfway")
        return original(self, case)

    monkeypatch.setattr(LIDCDataModule, "process_case", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        make(lidc[0], tmp_path).setup()
    assert list(tmp_path.iterdir()) == []  # the partial folder is gone
    # A folder left by a killed process (no cleanup at all) is never taken for the cache.
    leftover = tmp_path / ".tmp-lidc-0123456789ab-xyz"
    leftover.mkdir()
    (leftover / MANIFEST).write_text(json.dumps({"format": 1}))
    monkeypatch.setattr(LIDCDataModule, "process_case", original)
    dm = make(lidc[0], tmp_path)
    dm.setup()
    assert (
        dm.cache.directory.name.startswith("lidc-")
        and dm.cache.manifest["summary"]["samples"] == 60
    )


def test_cache_reused_until_settings_or_sources_change(lidc, tree, tmp_path, monkeypatch):
    first = make(tree, tmp_path)
    first.setup()
    built = first.cache.manifest["created"], first.cache.directory

    def no_reading(*args, **kwargs):
        raise AssertionError("the archive was read again")

    monkeypatch.setattr("datamodules.lidc.read_hu", no_reading)
    again = make(tree, tmp_path)
    again.setup()  # same settings, same files: reused without reading a slice
    assert (again.cache.manifest["created"], again.cache.directory) == built
    assert again.datasets["train"].ids == first.datasets["train"].ids
    monkeypatch.undo()

    resized = make(tree, tmp_path, image_size=24)
    resized.setup()  # another setting: another cache beside the first
    assert resized.cache.directory != built[1] and built[1].is_dir()
    assert resized.datasets["train"][0]["image"].shape == (1, 24, 24)

    dicom, _ = nodule_slice(tree, "LIDC-IDRI-0001", lidc[1])
    os.utime(dicom, ns=(0, 1_000_000_000))  # a source file changed
    rebuilt = make(tree, tmp_path)
    rebuilt.setup()
    assert rebuilt.cache.directory == built[1]
    assert rebuilt.cache.manifest["sources"] != first.cache.manifest["sources"]


def test_training_reads_only_the_cache(lidc, tmp_path, monkeypatch):
    dm = make(lidc[0], tmp_path, prompt_fraction=0.5, batch_size=8)
    dm.prepare_data()

    def no_dicom(*args, **kwargs):
        raise AssertionError("DICOM read while training")

    monkeypatch.setattr(pydicom, "dcmread", no_dicom)
    monkeypatch.setattr("datamodules.io.dicom.pydicom.dcmread", no_dicom)
    dm.setup("fit")
    seen = 0
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        for batch in loader:
            assert batch["image"].dtype == torch.float32 and batch["image"].shape[1:] == (
                1,
                IMAGE,
                IMAGE,
            )
            assert batch["image"].min() >= -1.0 and batch["image"].max() <= 1.0
            assert set(batch["prompt"].unique().tolist()) <= {-1.0, 0.0, 1.0}
            assert (batch["prompt"][~batch["has_prompt"]] == -1).all()
            assert batch["explanation"].min() >= 0 and batch["explanation"].max() <= 1
            assert batch["label"].dtype == torch.int64 and len(batch["id"]) == len(batch["label"])
            seen += len(batch["label"])
    assert seen == 30
