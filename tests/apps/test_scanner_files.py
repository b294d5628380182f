"""Real scanner files through every reader: pydicom's and nibabel's own test corpora, compressed
DICOM, colour depths, multi-frame files, NaN and infinity in NIfTI and DICOM, and the caches."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pydicom.data
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.pixels import get_decoder
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from datamodules import PancreasDataModule
from datamodules.cache import SliceCache, SliceSample, build_cache
from datamodules.fixtures import write_pancreas_tree
from datamodules.io.dicom import DicomError, read_frame, read_hu
from datamodules.io.nifti import NiftiError, read_nifti_volume
from vapl.apps.scan_io import ScanFileError, read_scan, read_scan_info

PYDICOM_DIR = Path(pydicom.data.__file__).parent / "test_files"
NIBABEL_DIR = Path(nib.__file__).parent

# pydicom 3.0.2's corpus. Files it does not hold are left out of the parametrised tests.
DICOM_REFUSED = {  # file -> the reason the error must give
    **dict.fromkeys(
        [
            "UN_sequence.dcm",
            "dicomdirtests/DICOMDIR-empty.dcm",
            "empty_charset_LEI.dcm",
            "no_meta_group_length.dcm",
            "priv_SQ.dcm",
            "reportsi.dcm",
            "reportsi_with_empty_number_tags.dcm",
            "rtplan.dcm",
            "rtplan_truncated.dcm",
            "test-SR.dcm",
            "waveform_ecg.dcm",
        ],
        "no pixel data",
    ),
    # No File Meta Information: two RT plans and an RT structure set (no pixel data either),
    # and no_meta.dcm, whose first byte is missing.
    **dict.fromkeys(
        ["ExplVR_BigEndNoMeta.dcm", "ExplVR_LitEndNoMeta.dcm", "no_meta.dcm", "rtstruct.dcm"],
        "not a readable DICOM file \\(no File Meta Information",
    ),
    "MR_truncated.dcm": "cannot read pixel data \\(truncated",
    "badVR.dcm": "unreadable NumberOfFrames value '1A'",
    "meta_missing_tsyntax.dcm": "incomplete image description, missing Rows",  # Pixel Data only
    "nested_priv_SQ.dcm": "incomplete image description, missing Rows",
    # Broken on purpose: a 12-bit JPEG with invalid scan parameters (JPGExtended.dcm is the
    # fixed copy) and a JPEG 2000 stream with 4 bytes overwritten.
    "JPEG-lossy.dcm": "cannot read pixel data \\(JPEG Extended \\(Process 2 and 4\\)",
    "JPEG2000-embedded-sequence-delimiter.dcm": "cannot read pixel data \\(JPEG 2000",
}
DICOM_READ = """
693_J2KI.dcm CT_small.dcm ExplVR_BigEnd.dcm GDCMJ2K_TextGBR.dcm J2K_pixelrep_mismatch.dcm
JPEG2000.dcm JPEGLSNearLossless_08.dcm JPEGLSNearLossless_16.dcm JPGExtended.dcm MR_small.dcm
MR_small_RLE.dcm MR_small_bigendian.dcm MR_small_expb.dcm MR_small_implicit.dcm
MR_small_jp2klossless.dcm MR_small_jpeg_ls_lossless.dcm MR_small_padded.dcm
SC_jpeg_no_color_transform.dcm SC_jpeg_no_color_transform_2.dcm SC_rgb_dcmtk_+eb+cr.dcm
SC_rgb_dcmtk_+eb+cy+n1.dcm SC_rgb_dcmtk_+eb+cy+n2.dcm SC_rgb_dcmtk_+eb+cy+np.dcm
SC_rgb_dcmtk_+eb+cy+s2.dcm SC_rgb_dcmtk_+eb+cy+s4.dcm SC_rgb_gdcm_KY.dcm
SC_rgb_jls_lossy_line.dcm SC_rgb_jls_lossy_sample.dcm SC_rgb_jpeg.dcm SC_rgb_jpeg_app14_dcmd.dcm
SC_rgb_jpeg_dcmd.dcm SC_rgb_jpeg_dcmtk.dcm SC_rgb_jpeg_gdcm.dcm SC_rgb_jpeg_lossy_gdcm.dcm
SC_rgb_rle.dcm SC_rgb_rle_16bit.dcm SC_rgb_rle_16bit_2frame.dcm SC_rgb_rle_2frame.dcm
SC_rgb_rle_32bit.dcm SC_rgb_rle_32bit_2frame.dcm SC_rgb_small_odd.dcm
SC_rgb_small_odd_big_endian.dcm SC_rgb_small_odd_jpeg.dcm SC_ybr_full_422_uncompressed.dcm
examples_jpeg2k.dcm examples_overlay.dcm examples_palette.dcm examples_rgb_color.dcm
examples_ybr_color.dcm image_dfl.dcm liver_1frame.dcm liver_expb_1frame.dcm rtdose.dcm
rtdose_1frame.dcm rtdose_expb.dcm rtdose_expb_1frame.dcm rtdose_rle.dcm rtdose_rle_1frame.dcm
""".split()  # noqa: SIM905 - one name per word keeps the list readable
NIFTI_READ = [
    "tests/data/anatomical.nii",
    "tests/data/reoriented_anat_moved.nii",
    "tests/data/resampled_anat_moved.nii",
    "tests/data/standard.nii.gz",
]
NIFTI_REFUSED = {
    "tests/data/example4d.nii.gz": "a series of 2 volumes",
    "tests/data/example_nifti2.nii.gz": "a series of 2 volumes",
    "tests/data/functional.nii": "a series of 20 volumes",
    "tests/data/row_major.dconn.nii": "expected a 3-D volume, got shape \\(10, 10\\)",  # CIFTI
}
#: Every transfer syntax docs/data.md promises.
TRANSFER_SYNTAXES = [
    "1.2.840.10008.1.2",  # implicit VR little endian
    "1.2.840.10008.1.2.1",  # explicit VR little endian
    "1.2.840.10008.1.2.1.99",  # deflated explicit VR little endian
    "1.2.840.10008.1.2.2",  # explicit VR big endian
    "1.2.840.10008.1.2.5",  # RLE lossless
    "1.2.840.10008.1.2.4.50",  # JPEG baseline
    "1.2.840.10008.1.2.4.51",  # JPEG extended (12-bit)
    "1.2.840.10008.1.2.4.57",  # JPEG lossless
    "1.2.840.10008.1.2.4.70",  # JPEG lossless, selection value 1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.201",  # HTJ2K lossless
    "1.2.840.10008.1.2.4.202",  # HTJ2K lossless RPCL
    "1.2.840.10008.1.2.4.203",  # HTJ2K
]


def _present(names, folder: Path) -> list[str]:
    return [name for name in names if (folder / name).is_file()]


def _sound(image) -> None:
    values = image.numpy()
    assert values.dtype == np.float32 and values.ndim == 3
    assert np.isfinite(values).all() and values.min() >= 0.0 and values.max() <= 1.0
    assert values.max() > values.min()  # a picture, not a constant


def test_every_corpus_file_is_listed_and_most_of_pydicoms_read():
    dicom = {p.relative_to(PYDICOM_DIR).as_posix() for p in PYDICOM_DIR.rglob("*.dcm")}
    listed = set(DICOM_READ) | set(DICOM_REFUSED)
    assert dicom <= listed, f"unlisted pydicom files: {sorted(dicom - listed)}"
    nifti = {
        p.relative_to(NIBABEL_DIR).as_posix()
        for pattern in ("*.nii", "*.nii.gz")
        for p in NIBABEL_DIR.rglob(pattern)
    }
    assert nifti <= set(NIFTI_READ) | set(NIFTI_REFUSED), sorted(nifti)
    if len(dicom) == 79:  # pydicom 3.0.2: 58 read, 21 refused
        assert len(dicom & set(DICOM_READ)) == 58


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("name", _present(DICOM_READ, PYDICOM_DIR))
def test_pydicom_corpus_file_reads_into_a_sound_image(name):
    info = read_scan_info(PYDICOM_DIR / name, channels=3)
    _sound(info.image)
    assert info.image.shape[0] == 3 and info.kind == "dicom"
    assert 0 <= info.slice_index < info.slices and info.nonfinite == 0
    _sound(read_scan(PYDICOM_DIR / name))  # one channel


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("name", _present(DICOM_REFUSED, PYDICOM_DIR))
def test_pydicom_corpus_file_is_refused_with_a_named_reason(name):
    path = PYDICOM_DIR / name
    with pytest.raises(ScanFileError, match=f"^{re.escape(str(path))}: {DICOM_REFUSED[name]}"):
        read_scan(path)


@pytest.mark.parametrize("name", _present(NIFTI_READ, NIBABEL_DIR))
def test_nibabel_corpus_file_reads_into_a_sound_image(name):
    info = read_scan_info(NIBABEL_DIR / name)
    _sound(info.image)
    assert info.kind == "nifti" and info.slice_index == info.slices // 2


@pytest.mark.parametrize("name", _present(NIFTI_REFUSED, NIBABEL_DIR))
def test_nibabel_corpus_file_is_refused_with_a_named_reason(name):
    path = NIBABEL_DIR / name
    with pytest.raises(ScanFileError, match=f"^{re.escape(str(path))}: .*{NIFTI_REFUSED[name]}"):
        read_scan(path)


def test_every_documented_transfer_syntax_has_a_decoder():
    missing = [uid for uid in TRANSFER_SYNTAXES if not get_decoder(uid).is_available]
    assert missing == []


# ----- DICOM: compression, colour depth, colour spaces, frames ----------------------------------
def _rgb(name: str, frame: int | None = None) -> np.ndarray:
    return read_frame(PYDICOM_DIR / name, frame).values


def test_lossless_compressed_files_decode_to_the_uncompressed_values():
    reference = read_frame(PYDICOM_DIR / "MR_small.dcm").values
    for name in ("RLE", "jp2klossless", "jpeg_ls_lossless", "bigendian", "implicit"):
        assert np.array_equal(read_frame(PYDICOM_DIR / f"MR_small_{name}.dcm").values, reference)
    rgb = _rgb("SC_rgb_rle.dcm")
    for name in ("SC_rgb_jpeg_gdcm.dcm", "SC_rgb_gdcm_KY.dcm"):  # JPEG lossless, JPEG 2000
        assert np.array_equal(_rgb(name), rgb)


def test_colour_is_scaled_by_the_bits_stored():
    """The same picture at 8, 16 and 32 bits per sample reads the same (it used to reach 257 and
    16,843,010), frame by frame for the two-frame files."""
    eight = _rgb("SC_rgb_rle.dcm")
    assert eight.shape == (100, 100, 3) and eight.max() == 1.0 and eight.min() == 0.0
    for bits in (16, 32):
        np.testing.assert_allclose(_rgb(f"SC_rgb_rle_{bits}bit.dcm"), eight, atol=1e-6)
        for frame in (0, 1):
            np.testing.assert_allclose(
                _rgb(f"SC_rgb_rle_{bits}bit_2frame.dcm", frame),
                _rgb("SC_rgb_rle_2frame.dcm", frame),
                atol=1e-6,
            )


def test_ybr_files_come_out_as_the_same_rgb_picture():
    rgb = _rgb("SC_rgb_rle.dcm")
    difference = np.abs(_rgb("SC_ybr_full_422_uncompressed.dcm") - rgb)
    assert difference.mean() < 1.5 / 255 and difference.max() < 10 / 255  # chroma subsampling
    for name in ("+eb+cy+n1", "+eb+cy+n2", "+eb+cy+np", "+eb+cy+s2", "+eb+cy+s4"):  # lossy JPEG
        assert np.abs(_rgb(f"SC_rgb_dcmtk_{name}.dcm") - rgb).mean() < 4 / 255, name
    # JPEG 2000 with the reversible colour transform: the words "red", "green", "blue" in colour.
    text = _rgb("GDCMJ2K_TextGBR.dcm")
    thirds = np.array_split(text, 3, axis=0)
    for third, channel in zip(thirds, (0, 1, 2)):
        others = [c for c in range(3) if c != channel]
        pure = (third[..., channel] > 0.8) & (third[..., others] < 0.2).all(axis=-1)
        assert pure.sum() > 1000, channel
    grey = np.abs(text[..., 0] - text[..., 1]) + np.abs(text[..., 1] - text[..., 2]) < 0.02
    assert grey.mean() > 0.8  # the background stays grey


def test_palette_colour_is_applied():
    rgb = _rgb("examples_palette.dcm")
    assert rgb.shape == (350, 800, 3)
    blue_banner = rgb[:40, :, 2] - rgb[:40, :, 0]
    assert (blue_banner > 0.2).mean() > 0.5


def test_multi_frame_files_read_the_requested_frame_and_count_them():
    path = PYDICOM_DIR / "rtdose.dcm"
    stack = pydicom.dcmread(path).pixel_array.astype(np.float32)
    assert stack.shape == (15, 10, 10)
    for k in range(15):
        frame = read_frame(path, k)
        assert (frame.frame, frame.frames) == (k, 15)
        assert np.array_equal(frame.values, stack[k])
    assert read_scan_info(path).slice_index == 7  # the middle by default
    info = read_scan_info(PYDICOM_DIR / "SC_rgb_rle_2frame.dcm", channels=3, slice_index=1)
    assert (info.slice_index, info.slices) == (1, 2)
    first = read_scan(PYDICOM_DIR / "SC_rgb_rle_2frame.dcm", channels=3, slice_index=0)
    assert (info.image - first).abs().mean() > 0.1  # two different pictures
    with pytest.raises(ScanFileError, match="2frame.dcm: frame 2 is out of range: the file has 2"):
        read_scan(PYDICOM_DIR / "SC_rgb_rle_2frame.dcm", slice_index=2)
    assert read_scan_info(PYDICOM_DIR / "examples_ybr_color.dcm").slices == 30


def test_a_damaged_compressed_stream_is_a_named_error(tmp_path):
    ds = pydicom.dcmread(PYDICOM_DIR / "MR_small_jpeg_ls_lossless.dcm")
    data = bytearray(ds.PixelData)
    data[16:64] = bytes(48)  # keep the encapsulation (two item headers), wipe the JPEG-LS header
    ds.PixelData = bytes(data)
    ds.save_as(tmp_path / "wiped.dcm")
    with pytest.raises(ScanFileError, match=r"wiped.dcm: cannot read pixel data \(JPEG-LS"):
        read_scan(tmp_path / "wiped.dcm")


def _float_dicom(path: Path, values: np.ndarray) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = values.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.BitsAllocated = 1, "MONOCHROME2", 32
    ds.FloatPixelData = values.astype("<f4").tobytes()
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


def test_nonfinite_float_dicom_pixels_are_replaced_and_counted(tmp_path, caplog):
    values = np.arange(20, dtype=np.float32).reshape(4, 5) + 10
    values[0, 0], values[1, 1], values[2, 2] = np.nan, np.inf, -np.inf
    path = _float_dicom(tmp_path / "float.dcm", values)
    with caplog.at_level(logging.WARNING):
        hu = read_hu(path)  # the datamodules' reader
    assert "float.dcm: 3 NaN or infinite values replaced by the minimum 11" in caplog.text
    assert hu[0, 0] == hu[1, 1] == hu[2, 2] == 11.0 and hu[3, 4] == 29.0
    info = read_scan_info(path)
    assert info.nonfinite == 3 and np.isfinite(info.image.numpy()).all()
    assert info.image[0, 0, 0] == 0.0 and info.image[0, 3, 4] == 1.0
    _float_dicom(tmp_path / "nan.dcm", np.full((2, 2), np.nan, dtype=np.float32))
    with pytest.raises(DicomError, match="nan.dcm: no finite pixel value"):
        read_hu(tmp_path / "nan.dcm")


# ----- NIfTI: NaN, 4-D ---------------------------------------------------------------------------
def test_resampled_nifti_nan_voxels_are_replaced_by_the_minimum_and_counted():
    path = NIBABEL_DIR / "tests/data/resampled_anat_moved.nii"
    raw = np.asarray(nib.load(path).get_fdata(dtype=np.float32))
    assert np.isnan(raw).sum() == 153
    volume = read_nifti_volume(path)
    assert volume.nonfinite == 153 and np.isfinite(volume.data).all()
    expected = np.where(np.isnan(raw), np.nanmin(raw), raw)  # the same values, reordered
    assert np.array_equal(np.sort(volume.data, axis=None), np.sort(expected, axis=None))
    info = read_scan_info(path)
    assert info.nonfinite == 153 and info.image.min() == 0.0 and info.image.max() == 1.0


def _nifti(path: Path, data: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, np.diag([0.7, 0.7, 2.5, 1.0])), path)
    return path


def test_a_single_volume_4d_nifti_reads_as_3d_and_nonfinite_labels_become_background(tmp_path):
    data = np.random.default_rng(0).normal(size=(6, 5, 4)).astype(np.float32)
    three = read_nifti_volume(_nifti(tmp_path / "v3.nii.gz", data))
    four = read_nifti_volume(_nifti(tmp_path / "v4.nii.gz", data[..., None]))
    assert four.file_shape == (6, 5, 4, 1) and three.data.shape == (4, 5, 6)
    assert np.array_equal(four.data, three.data)
    assert np.array_equal(read_scan(tmp_path / "v4.nii.gz"), read_scan(tmp_path / "v3.nii.gz"))
    _nifti(tmp_path / "two.nii.gz", np.stack([data, data], axis=-1))
    with pytest.raises(ScanFileError, match="two.nii.gz: .*a series of 2 volumes"):
        read_scan(tmp_path / "two.nii.gz")
    labels = np.zeros((3, 3, 2), dtype=np.float32)
    labels[1, 1, :] = 2
    labels[0, 0, 0], labels[2, 2, 1] = np.nan, np.inf
    read = read_nifti_volume(_nifti(tmp_path / "labels.nii.gz", labels), np.uint8)
    assert read.nonfinite == 2 and sorted(np.unique(read.data).tolist()) == [0, 2]
    _nifti(tmp_path / "empty.nii.gz", np.full((2, 2, 2), np.nan, dtype=np.float32))
    with pytest.raises(NiftiError, match="empty.nii.gz: no finite voxel"):
        read_nifti_volume(tmp_path / "empty.nii.gz")


# ----- caches ------------------------------------------------------------------------------------
def test_no_nan_reaches_the_pancreas_cache(tmp_path, caplog):
    """NaN and infinity in an MSD image, inside the tumour and the body: the case is cached,
    every cached value is finite, and those voxels read as the volume's minimum (0 after the
    abdominal window) while their neighbours keep their values."""
    root = write_pancreas_tree(tmp_path / "tree", abnormal=2, normal=2, size=32, slices=8)
    image_path = root / "Task07_Pancreas/imagesTr/pancreas_001.nii.gz"  # y not flipped
    label_path = root / "Task07_Pancreas/labelsTr/pancreas_001.nii.gz"
    image = nib.load(image_path)
    data = np.asarray(image.get_fdata(dtype=np.float32))  # [x, y, z] = canonical [z, y, x]
    tumour = np.argwhere(np.asarray(nib.load(label_path).dataobj) == 2)
    poisoned = tumour[::2]
    for (x, y, z), value in zip(poisoned, [np.nan, np.inf, -np.inf] * len(poisoned)):
        data[x, y, z] = value
    header = image.header.copy()
    header.set_data_dtype(np.float32)  # int16 cannot hold NaN
    nib.save(nib.Nifti1Image(data, image.affine, header), image_path)
    dm = PancreasDataModule(
        root=str(root), cache_dir=str(tmp_path / "cache"), image_size=32, n_train=2, n_val=1
    )
    with caplog.at_level(logging.WARNING):
        cache = SliceCache.open(dm.build_cache())
    assert f"pancreas_001.nii.gz: {len(poisoned)} NaN or infinite voxels" in caplog.text
    assert cache.manifest["summary"]["skipped"] == 0
    images = np.asarray(cache.arrays["images"], dtype=np.float32)
    assert np.isfinite(images).all()
    rows = {record["id"]: k for k, record in enumerate(cache.manifest["samples"])}
    kept = np.ones(len(tumour), dtype=bool)
    kept[::2] = False
    for (x, y, z), is_kept in zip(tumour, kept):
        value = images[rows[f"pancreas_001/{z:04d}"], y, x]
        assert (value > 0.3) if is_kept else (value == 0.0), (x, y, z)


def test_the_cache_writer_refuses_a_nonfinite_row(tmp_path):
    def process(case: int) -> list[SliceSample]:
        image = np.zeros((4, 4), dtype=np.float16)
        image[case, case] = np.nan
        return [SliceSample({"images": image}, 0, {"id": str(case), "patient": "p"})]

    with pytest.raises(ValueError, match="images.npy: a row holds NaN or infinite values"):
        build_cache(tmp_path / "cache", {}, {}, [0, 1], process, str)
    assert os.listdir(tmp_path) == []  # no partial cache left behind
