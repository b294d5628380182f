"""Tiny checkpoints and data for the app's tests (shared with the browser test)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vapl.training.cli import build_cli


def train_tiny(folder: Path, *overlays: str, image_size: int = 16) -> Path:
    """A one-batch checkpoint of the demo config (plus ``overlays``), saved as folder/model.ckpt."""
    args = ["fit", "--config", "demo.yaml"]
    for overlay in overlays:
        args += ["--config", overlay]
    cli = build_cli(
        [
            *args,
            "--data.init_args.n_train=16",
            "--data.init_args.n_val=8",
            f"--data.init_args.image_size={image_size}",
            "--data.init_args.batch_size=8",
            "--trainer.fast_dev_run=true",
            f"--trainer.default_root_dir={folder}",
            "--trainer.enable_progress_bar=false",
            "--trainer.logger=false",
        ]
        + (["--model.init_args.n_masks=8"] if not overlays else [])
    )
    path = folder / "model.ckpt"
    cli.trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="session")
def dicom_without_pixels(tmp_path_factory) -> Path:
    """A valid DICOM file (a structured report's header, Modality CT) with no pixel data."""
    path = tmp_path_factory.mktemp("dicom") / "nopixels.dcm"
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # a structured report
    meta.MediaStorageSOPInstanceUID = generate_uid()
    header_only = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    header_only.SOPInstanceUID, header_only.Modality = meta.MediaStorageSOPInstanceUID, "CT"
    header_only.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="session")
def vapl_checkpoint(tmp_path_factory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("vapl"))


@pytest.fixture(scope="session")
def baseline_checkpoint(tmp_path_factory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("baseline"), "methods/baseline.yaml")
