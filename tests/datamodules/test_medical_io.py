"""The medical file readers on their own: orientation, DICOM, NIfTI, LIDC XML, masks, splits."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file

from datamodules.io import (
    DicomError,
    LidcXmlError,
    NiftiError,
    canonical_slice,
    consensus_masks,
    rasterise_contour,
    read_canonical_slice,
    read_header,
    read_hu,
    read_lidc_xml,
    read_nifti,
    read_series,
    sort_series,
)
from datamodules.io.writers import ORIENTATIONS, write_ct_series, write_nifti
from datamodules.slices import body_mask, resize_mask
from datamodules.splits import split_by_patient

CT_SMALL = get_testdata_file("CT_small.dcm")
MR_SMALL = get_testdata_file("MR_small.dcm")


# ----- orientation -----------------------------------------------------------------------------
def test_canonical_slice_by_hand():
    stored = np.array([[1, 2, 3], [4, 5, 6]])
    assert np.array_equal(canonical_slice(stored, ORIENTATIONS["standard"]), stored)
    # Columns run to the patient's right and rows to the front: both axes reversed.
    assert np.array_equal(canonical_slice(stored, ORIENTATIONS["flipped"]), [[6, 5, 4], [3, 2, 1]])
    # Columns run posterior, rows to the left: rows and columns swap.
    assert np.array_equal(canonical_slice(stored, ORIENTATIONS["transposed"]), stored.T)


def _phantom() -> np.ndarray:
    """Integer HU, different along every axis: a marker on the patient's left, front and top."""
    rng = np.random.default_rng(0)
    volume = rng.integers(-200, 200, size=(5, 12, 16)).astype(np.float32)
    volume[4, 2, 13] = 1500.0  # superior, anterior, patient's left
    return volume


def _world_lps(ds: pydicom.Dataset, row: int, column: int) -> np.ndarray:
    """DICOM's own formula (PS3.3 C.7.6.2.1.1) for a stored pixel's patient position."""
    orientation = np.array(ds.ImageOrientationPatient, dtype=float)
    spacing = np.array(ds.PixelSpacing, dtype=float)
    return (
        np.array(ds.ImagePositionPatient, dtype=float)
        + column * spacing[1] * orientation[:3]
        + row * spacing[0] * orientation[3:]
    )


@pytest.mark.parametrize("layout", sorted(ORIENTATIONS))
def test_dicom_series_comes_out_canonical(tmp_path, layout):
    volume = _phantom()
    write_ct_series(tmp_path, volume, "P1", "1.2.3", "1.2.3.4", layout=layout, seed=3)
    read, series = read_series(sorted(tmp_path.glob("*.dcm")))
    assert np.array_equal(read, volume)
    # Independently of the reader: the marker's stored pixel lies left, anterior and superior.
    ds = pydicom.dcmread(series.slices[4].path)
    row, column = np.argwhere(ds.pixel_array.astype(float) - 1024 == 1500.0)[0]
    centre = _world_lps(ds, ds.Rows // 2, ds.Columns // 2)
    marker = _world_lps(ds, row, column)
    assert marker[0] > centre[0] and marker[1] < centre[1]  # L is +x, anterior is -y in LPS
    assert series.positions[4] == max(series.positions)


@pytest.mark.parametrize("flip_y", [False, True])
def test_nifti_and_dicom_of_the_same_anatomy_agree(tmp_path, flip_y):
    volume = _phantom()
    write_ct_series(tmp_path / "dicom", volume, "P1", "1.2.3", "1.2.3.4", layout="flipped")
    path = write_nifti(tmp_path / "image.nii.gz", volume.astype(np.int16), flip_y=flip_y)
    from_nifti = read_nifti(path)
    from_dicom, _ = read_series(sorted((tmp_path / "dicom").glob("*.dcm")))
    assert np.array_equal(from_nifti, from_dicom)
    # Independently of the reader: nibabel's own world coordinates of the marker voxel.
    image = nib.load(path)
    i, j, k = np.argwhere(np.asarray(image.dataobj) == 1500)[0]
    ras = image.affine @ [i, j, k, 1]
    centre = image.affine @ [*(np.array(image.shape) // 2), 1]
    assert ras[0] < centre[0] and ras[1] > centre[1] and ras[2] > centre[2]  # left, anterior, up
    z, y, x = np.argwhere(from_nifti == 1500)[0]
    assert (z, y, x) == (4, 2, 13)


def test_unreadable_nifti_is_named(tmp_path):
    good = write_nifti(tmp_path / "good.nii.gz", np.zeros((2, 3, 4), dtype=np.int16))
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(good.read_bytes()[:60])
    for path in (truncated, tmp_path / "missing.nii.gz"):
        with pytest.raises(NiftiError, match=path.name):
            read_nifti(path)


# ----- DICOM -----------------------------------------------------------------------------------
def test_pydicom_ct_example_reads_in_hounsfield_units():
    header = read_header(CT_SMALL)
    assert header.modality == "CT" and (header.rows, header.columns) == (128, 128)
    assert header.position == pytest.approx((-158.135803, -179.035797, -75.699997))
    ds = pydicom.dcmread(CT_SMALL)
    expected = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(
        ds.RescaleIntercept
    )
    hu = read_hu(CT_SMALL)
    assert hu.dtype == np.float32 and np.array_equal(hu, expected)
    assert hu.min() == 128 - 1024  # stored minimum 128, intercept -1024
    assert np.array_equal(read_canonical_slice(header), hu)  # identity orientation
    assert read_header(MR_SMALL).modality == "MR"


def _copy_with(source: str, path: Path, z: float, uid: str, instance: int) -> None:
    ds = pydicom.dcmread(source)
    ds.ImagePositionPatient = [-158.135803, -179.035797, z]
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
    ds.InstanceNumber = instance
    ds.save_as(path, enforce_file_format=True)


def test_series_sorted_by_position_and_duplicates_dropped(tmp_path):
    # File names in the opposite order of the positions; one duplicate position.
    for name, z, instance in (("a", 10.0, 4), ("b", 5.0, 3), ("c", 0.0, 1), ("d", 5.0, 7)):
        _copy_with(CT_SMALL, tmp_path / f"{name}.dcm", z, f"1.2.3.{name.encode()[0]}", instance)
    volume, series = read_series(sorted(tmp_path.glob("*.dcm")))
    assert volume.shape == (3, 128, 128)
    assert list(series.positions) == [0.0, 5.0, 10.0]
    assert [h.path.name for h in series.slices] == ["c.dcm", "b.dcm", "a.dcm"]
    index = series.index_of()
    assert index["1.2.3.100"] == 1 == index["1.2.3.98"]  # d.dcm (dropped) maps to b.dcm's slice


def test_damaged_dicom_is_named(tmp_path):
    data = Path(CT_SMALL).read_bytes()
    (tmp_path / "header.dcm").write_bytes(data[:300])  # cut inside the header
    (tmp_path / "pixels.dcm").write_bytes(data[:-5000])  # cut inside the pixel data
    (tmp_path / "noise.dcm").write_bytes(b"not a dicom file at all" * 20)
    with pytest.raises(DicomError, match="header.dcm: truncated"):
        read_header(tmp_path / "header.dcm")
    with pytest.raises(DicomError, match="noise.dcm: not a readable DICOM"):
        read_header(tmp_path / "noise.dcm")
    assert read_header(tmp_path / "pixels.dcm").rows == 128  # the header is intact...
    with pytest.raises(DicomError, match="pixels.dcm: cannot read pixel data"):
        read_hu(tmp_path / "pixels.dcm")  # ...the pixels are not


def test_sorting_refuses_mixed_geometry(tmp_path):
    headers = [read_header(CT_SMALL), read_header(MR_SMALL)]
    with pytest.raises(DicomError, match="MR_small.dcm"):
        sort_series(headers)


# ----- LIDC XML --------------------------------------------------------------------------------
def _roi(uid: str, points: list[tuple[int, int]], inclusion: str = "TRUE") -> str:
    edges = "".join(
        f"<edgeMap><xCoord>{x}</xCoord><yCoord>{y}</yCoord></edgeMap>" for x, y in points
    )
    return (
        f"<roi><imageZposition>-10.0</imageZposition><imageSOP_UID>{uid}</imageSOP_UID>"
        f"<inclusion>{inclusion}</inclusion>{edges}</roi>"
    )


def _square(x0: int, y0: int, x1: int, y1: int) -> list[tuple[int, int]]:
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


LIDC_XML = f"""<?xml version="1.0" encoding="UTF-8"?>
<LidcReadMessage xmlns="http://www.nih.gov" uid="1">
 <ResponseHeader><SeriesInstanceUid>9.9</SeriesInstanceUid></ResponseHeader>
 <readingSession><servicingRadiologistID>A</servicingRadiologistID>
  <unblindedReadNodule><noduleID>N1</noduleID>{
    _roi("s1", _square(2, 2, 6, 6))
}</unblindedReadNodule>
  <unblindedReadNodule><noduleID>small</noduleID>{_roi("s0", [(5, 5)])}</unblindedReadNodule>
 </readingSession>
 <readingSession><servicingRadiologistID>B</servicingRadiologistID>
  <unblindedReadNodule><noduleID>N1</noduleID>{_roi("s1", _square(3, 3, 7, 7))}{
    _roi("s1", _square(4, 4, 5, 5), "FALSE")
}</unblindedReadNodule>
  <nonNodule><nonNoduleID>x</nonNoduleID><imageSOP_UID>s2</imageSOP_UID>
   <locus><xCoord>1</xCoord><yCoord>1</yCoord></locus></nonNodule>
 </readingSession>
</LidcReadMessage>"""


def test_lidc_xml_consensus_by_hand(tmp_path):
    path = tmp_path / "069.xml"
    path.write_text(LIDC_XML)
    read = read_lidc_xml(path)
    assert read is not None and read.series_uid == "9.9" and len(read.sessions) == 2
    assert [len(s.nodules) for s in read.sessions] == [2, 1]
    index = {"s0": 0, "s1": 1, "s2": 2}
    # Half of two readers is one: the union, B's hole (4..5 square) filled by A's square.
    union, marked = consensus_masks(read.sessions, index, (10, 10), level=0.5)
    assert marked == {0, 1, 2} and list(union) == [1]
    assert union[1].sum() == 25 + 25 - 16  # 5x5 squares overlapping in 4x4
    # Both readers: the 4x4 overlap (3..6) without B's 2x2 hole.
    both, _ = consensus_masks(read.sessions, index, (10, 10), level=1.0)
    expected = np.zeros((10, 10), dtype=bool)
    expected[3:7, 3:7] = True
    expected[4:6, 4:6] = False
    assert np.array_equal(both[1], expected)


def test_lidc_xml_problems_are_named(tmp_path):
    broken = tmp_path / "broken.xml"
    broken.write_text(LIDC_XML[:400])
    with pytest.raises(LidcXmlError, match="broken.xml: XML does not parse"):
        read_lidc_xml(broken)
    radiograph = tmp_path / "cxr.xml"
    radiograph.write_text('<IdriReadMessage xmlns="http://www.nih.gov/idri"/>')
    assert read_lidc_xml(radiograph) is None
    good = tmp_path / "good.xml"
    good.write_text(LIDC_XML)
    read = read_lidc_xml(good)
    with pytest.raises(LidcXmlError, match="good.xml: .*SOP instance UID s1, a slice missing"):
        consensus_masks(read.sessions, {"s0": 0, "s2": 2}, (10, 10))


def test_rasterise_square_by_hand():
    mask = rasterise_contour(_square(1, 1, 3, 3), (5, 6))
    expected = np.zeros((5, 6), dtype=bool)
    expected[1:4, 1:4] = True
    assert np.array_equal(mask, expected)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 11), st.integers(0, 11)), min_size=3, max_size=8))
def test_rasterise_follows_flips_and_transposes(points):
    mask = rasterise_contour(points, (12, 12))
    flipped = rasterise_contour([(11 - x, 11 - y) for x, y in points], (12, 12))
    transposed = rasterise_contour([(y, x) for x, y in points], (12, 12))
    assert np.array_equal(flipped, mask[::-1, ::-1])
    assert np.array_equal(transposed, mask.T)
    for x, y in points:
        assert mask[y, x]


# ----- masks and splits ------------------------------------------------------------------------
def test_body_mask_fills_enclosed_air_and_drops_the_outside():
    hu = np.full((20, 20), -1000.0)
    hu[3:17, 3:17] = 40.0  # the body
    hu[6:14, 6:14] = -850.0  # a lung inside it
    hu[18, 2:18] = 200.0  # a one-pixel table line, not body
    body = body_mask(hu)
    assert body[3:17, 3:17].all()
    assert body.sum() == 14 * 14


def test_resize_mask_keeps_area_and_small_regions():
    mask = np.zeros((8, 8), dtype=bool)
    mask[2:6, 2:6] = True
    assert resize_mask(mask, 4).sum() == 4
    tiny = np.zeros((64, 64), dtype=bool)
    tiny[10, 10] = True  # 1/16 of an output pixel: still one pixel
    assert resize_mask(tiny, 16).sum() == 1 and resize_mask(tiny, 16)[2, 2]


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 6), st.integers(0, 6)), min_size=6, max_size=20),
    st.integers(0, 3),
)
def test_splits_keep_patients_apart_and_classes_balanced(patients, seed):
    names, labels = [], []
    for p, (positives, negatives) in enumerate(patients):
        names += [f"p{p}"] * (positives + negatives)
        labels += [1] * positives + [0] * negatives
    rows = split_by_patient(names, labels, {"train": 6, "val": 4, "test": None}, seed=seed)
    owners = [{names[r] for r in rows[s]} for s in ("train", "val", "test")]
    assert (
        not (owners[0] & owners[1]) and not (owners[0] & owners[2]) and not (owners[1] & owners[2])
    )
    labels_array = np.asarray(labels)
    for split, size in (("train", 6), ("val", 4)):
        counts = np.bincount(labels_array[rows[split]], minlength=2)
        assert counts.sum() <= size
        if counts.min() == 0:  # balance impossible: none of the split's patients has that class
            missing = int(counts.argmin())
            assert not any(
                labels_array[
                    [i for i, n in enumerate(names) if n in owners[("train", "val").index(split)]]
                ]
                == missing
            )
        else:
            assert counts[0] == counts[1]


def test_splits_exact_when_data_suffice():
    names = [f"p{i // 10}" for i in range(400)]  # 40 patients, 5 positives and 5 negatives each
    labels = [i % 2 for i in range(400)]
    rows = split_by_patient(names, labels, {"train": 20, "val": 40, "test": 60}, seed=1)
    assert [len(rows[s]) for s in ("train", "val", "test")] == [20, 40, 60]
    assert all(
        np.bincount(np.asarray(labels)[rows[s]]).tolist() == [len(rows[s]) // 2] * 2 for s in rows
    )


def test_a_jpeg_syntax_without_its_gpl_decoder_names_the_extra(monkeypatch):
    import importlib.util

    import pydicom

    from datamodules.io.dicom import _hint

    ds = pydicom.Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.57"  # JPEG lossless
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "libjpeg" else real(name, *a)
    )
    assert "pip install 'vapl[dicom-jpeg]'" in _hint(ds)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.90"  # JPEG 2000: not libjpeg's
    assert _hint(ds) == ""
