"""DICOM series folders through ``vapl.apps.scan_io``: slice order, orientation, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from datamodules.io.writers import write_ct_series
from vapl.apps.scan_io import ScanFileError, read_scan, read_scan_info, series_slices
from vapl.core.errors import UserInputError


def _volume(depth: int = 5, height: int = 6, width: int = 7) -> np.ndarray:
    """A canonical HU volume [z, y, x] whose every voxel tells its own position."""
    z, y, x = np.meshgrid(np.arange(depth), np.arange(height), np.arange(width), indexing="ij")
    return (100 * z + 10 * y + x).astype(np.float32) - 300


@pytest.mark.parametrize("layout", ["standard", "flipped", "transposed"])
def test_a_series_folder_reads_slice_k_feet_to_head_in_the_canonical_orientation(tmp_path, layout):
    volume = _volume()
    # files are written in shuffled order with shuffled names; the layout stores the pixels
    # mirrored or transposed, with the matching ImageOrientationPatient
    write_ct_series(tmp_path / "ct", volume, "p1", "1.2.3", "1.2.3.4", layout=layout, seed=3)
    window = (0.0, 2000.0)
    for k in range(volume.shape[0]):
        info = read_scan_info(tmp_path / "ct", window=window, slice_index=k)
        assert (info.kind, info.slice_index, info.slices, info.modality) == ("series", k, 5, "CT")
        expected = np.clip((volume[k] + 1000) / 2000, 0, 1)
        np.testing.assert_allclose(info.image[0].numpy(), expected, atol=1e-6)
    assert read_scan_info(tmp_path / "ct").slice_index == 2  # the middle by default
    assert read_scan(tmp_path / "ct", channels=3).shape == (3, 6, 7)


def test_a_parent_folder_with_one_series_below_it_reads_that_series(tmp_path):
    write_ct_series(tmp_path / "study" / "series1", _volume(), "p1", "1.2.3", "1.2.3.4")
    assert read_scan_info(tmp_path / "study").slices == 5
    assert len(series_slices(tmp_path / "study").slices) == 5


def test_series_folders_that_cannot_be_read_are_named_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ScanFileError, match="empty: a folder, but no .dcm files"):
        read_scan(tmp_path / "empty")
    write_ct_series(tmp_path / "two" / "a", _volume(), "p1", "1.2.3", "1.2.3.4")
    write_ct_series(tmp_path / "two" / "b", _volume(), "p1", "1.2.3", "1.2.3.5")
    with pytest.raises(ScanFileError, match=r"two: 2 folders hold DICOM files \(a, b\)"):
        read_scan(tmp_path / "two")
    mixed = tmp_path / "mixed"
    write_ct_series(mixed, _volume(depth=2), "p1", "1.2.3", "1.2.3.4")
    write_ct_series(tmp_path / "other", _volume(depth=2), "p1", "1.2.3", "1.2.3.9")
    for path in (tmp_path / "other").iterdir():
        path.rename(mixed / f"x{path.name}")
    with pytest.raises(ScanFileError, match="mixed: files of 2 series"):
        read_scan(mixed)
    write_ct_series(tmp_path / "ok", _volume(depth=3), "p1", "1.2.3", "1.2.3.6")
    with pytest.raises(ScanFileError, match="ok: slice 3 is out of range: the series has 3"):
        read_scan(tmp_path / "ok", slice_index=3)
    with pytest.raises(UserInputError):  # every reading error is the user's input
        read_scan(tmp_path / "missing.dcm")
