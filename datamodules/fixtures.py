"""Small data trees in the archives' own formats, for tests and for trying the configs.

    python -m datamodules.fixtures lidc OUT_DIR [--patients 6] [--size 64] [--slices 20]
    python -m datamodules.fixtures pancreas OUT_DIR [--abnormal 4] [--normal 4] [--size 48]

Real DICOM files (pydicom, with every tag the readers use), LIDC-schema XML, NIfTI with an affine
(nibabel) and a Decathlon ``dataset.json``. The anatomy is drawn as a volume ``[z, y, x]`` in the
canonical orientation of :mod:`datamodules.io.orientation` and then written in each file's own
convention, some series with flipped or transposed in-plane axes, so the readers' orientation
handling is exercised.
"""

from __future__ import annotations

import argparse
import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom

from datamodules.io.lidc_xml import LIDC_NAMESPACE
from datamodules.io.writers import make_uid, stored_point, write_ct_series, write_nifti

#: LIDC readers outline a nodule just outside it: the fixture's outlines run this far (px) out.
CONTOUR_MARGIN = 0.5


def _ellipse(shape: tuple[int, int], cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def _circle(cy: float, cx: float, radius: float, n: int = 24) -> list[tuple[float, float]]:
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return [(cy + radius * np.sin(a), cx + radius * np.cos(a)) for a in angles]


# ----- LIDC-IDRI -------------------------------------------------------------------------------
@dataclass
class NoduleTruth:
    """Where a fixture drew a patient's nodule: slice index -> (centre y, centre x, radius), px."""

    patient_id: str
    series_uid: str
    size: int
    disks: dict[int, tuple[float, float, float]] = field(default_factory=dict)

    def contour(self, k: int, delta: float = 0.0) -> list[tuple[float, float]]:
        """A reader's outline on slice ``k`` as canonical (y, x) points: half a pixel outside the
        nodule (LIDC readers draw around it), ``delta`` more; the median reader has ``delta = 0``."""
        cy, cx, radius = self.disks[k]
        return _circle(cy, cx, radius + CONTOUR_MARGIN + delta)


def lidc_volume(size: int, depth: int, rng: np.random.Generator) -> tuple[np.ndarray, NoduleTruth]:
    """A chest phantom: body, two lungs, a table, and one nodule in a lung."""
    plane = (size, size)
    body = _ellipse(plane, size * 0.5, size * 0.5, size * 0.40, size * 0.46)
    lungs = _ellipse(plane, size * 0.48, size * 0.30, size * 0.25, size * 0.14) | _ellipse(
        plane, size * 0.48, size * 0.70, size * 0.25, size * 0.14
    )
    volume = np.full((depth, size, size), -1000.0, dtype=np.float32)
    volume[:, body] = 40.0
    volume[:, lungs] = -850.0
    volume[:, int(size * 0.93) : int(size * 0.95), int(size * 0.1) : int(size * 0.9)] = 200.0
    volume += rng.normal(0, 15, volume.shape).astype(np.float32)
    side = rng.choice([0.30, 0.70])
    cy, cx = size * rng.uniform(0.40, 0.56), size * (side + rng.uniform(-0.02, 0.02))
    radius, centre_z, half = size * 0.1, depth // 2 - 1, 2
    truth = NoduleTruth("", "", size)
    for dz in range(-half, half + 1):
        r = radius * np.sqrt(1.0 - (dz / (half + 0.75)) ** 2)
        volume[centre_z + dz][_ellipse(plane, cy, cx, r, r)] = 30.0
        truth.disks[centre_z + dz] = (cy, cx, r)
    return volume, truth


def _sub(parent: ET.Element, tag: str, text: object | None = None) -> ET.Element:
    element = ET.SubElement(parent, f"{{{LIDC_NAMESPACE}}}{tag}")
    if text is not None:
        element.text = str(text)
    return element


def _edge_map(roi: ET.Element, points: list[tuple[float, float]]) -> None:
    for x, y in points:
        edge = _sub(roi, "edgeMap")
        _sub(edge, "xCoord", int(round(x)))
        _sub(edge, "yCoord", int(round(y)))


def write_lidc_xml(
    path: Path,
    series_uid: str,
    study_uid: str,
    slices: list[tuple[Path, str, float]],
    truth: NoduleTruth,
    layout: str,
    cavity: bool = False,
) -> Path:
    """Four readers' contours of the nodule in ``truth`` (their radii differ by up to half a pixel,
    the fourth reader misses the end slices), plus a small nodule and a non-nodule mark."""
    ET.register_namespace("", LIDC_NAMESPACE)
    root = ET.Element(f"{{{LIDC_NAMESPACE}}}LidcReadMessage", {"uid": make_uid(series_uid, "xml")})
    header = _sub(root, "ResponseHeader")
    for tag, text in (
        ("Version", "1.8.1"),
        ("TaskDescription", "Second unblinded read"),
        ("SeriesInstanceUid", series_uid),
        ("StudyInstanceUID", study_uid),
        ("ResponseDescription", "1 - Reading complete"),
    ):
        _sub(header, tag, text)
    shape = (truth.size, truth.size)
    ends = (min(truth.disks), max(truth.disks))
    for reader, delta in enumerate((-0.5, 0.0, 0.0, 0.5)):
        session = _sub(root, "readingSession")
        _sub(session, "annotationVersion", "3.12")
        _sub(session, "servicingRadiologistID", f"reader-{reader + 1}")
        nodule = _sub(session, "unblindedReadNodule")
        _sub(nodule, "noduleID", "Nodule 001")
        _sub(_sub(nodule, "characteristics"), "malignancy", 3)
        for k, (cy, cx, radius) in sorted(truth.disks.items()):
            if reader == 3 and k in ends:
                continue
            rings = [(truth.contour(k, delta), True)]
            if cavity:
                rings.append((_circle(cy, cx, radius / 3), False))
            for ring, inclusion in rings:
                roi = _sub(nodule, "roi")
                _sub(roi, "imageZposition", f"{slices[k][2]:.6f}")
                _sub(roi, "imageSOP_UID", slices[k][1])
                _sub(roi, "inclusion", "TRUE" if inclusion else "FALSE")
                _edge_map(roi, [stored_point(y, x, shape, layout) for y, x in ring])
        if reader == 0:  # a nodule under 3 mm: one point on the first slice
            small = _sub(session, "unblindedReadNodule")
            _sub(small, "noduleID", "small-1")
            roi = _sub(small, "roi")
            _sub(roi, "imageZposition", f"{slices[0][2]:.6f}")
            _sub(roi, "imageSOP_UID", slices[0][1])
            _sub(roi, "inclusion", "TRUE")
            _edge_map(roi, [stored_point(truth.size * 0.5, truth.size * 0.3, shape, layout)])
        if reader == 1:  # a non-nodule on the last slice
            item = _sub(session, "nonNodule")
            _sub(item, "nonNoduleID", "non-1")
            _sub(item, "imageZposition", f"{slices[-1][2]:.6f}")
            _sub(item, "imageSOP_UID", slices[-1][1])
            locus = _sub(item, "locus")
            _sub(locus, "xCoord", truth.size // 2)
            _sub(locus, "yCoord", truth.size // 2)
    ET.ElementTree(root).write(path, encoding="UTF-8", xml_declaration=True)
    return path


def write_radiograph(directory: Path, patient_id: str, seed: int) -> None:
    """A chest radiograph series (modality DX) with an ``IdriReadMessage``: to be ignored."""
    plane = np.random.default_rng(seed).normal(0, 50, (1, 32, 32)).astype(np.float32)
    study_uid, series_uid = make_uid(patient_id, "cr-study"), make_uid(patient_id, "cr")
    written = write_ct_series(
        directory, plane, patient_id, study_uid, series_uid, modality="DX", seed=seed
    )
    root = ET.Element("{http://www.nih.gov/idri}IdriReadMessage")
    ET.SubElement(root, "{http://www.nih.gov/idri}ResponseHeader").text = written[0][1]
    ET.ElementTree(root).write(directory / "001.xml", encoding="UTF-8", xml_declaration=True)


def write_lidc_tree(
    out: str | Path, patients: int = 6, size: int = 64, slices: int = 20, seed: int = 0
) -> tuple[Path, dict[str, NoduleTruth]]:
    """Write ``out/LIDC-IDRI/LIDC-IDRI-NNNN/<study>/<series>/`` trees; return the root and, per
    patient, where the nodule was drawn. Patient 1 has a nodule with a cavity (an exclusion
    contour), patient 2 a flipped and patient 3 a transposed in-plane layout, patient 4 a duplicate
    slice, patient 0 an extra chest-radiograph series."""
    root = Path(out) / "LIDC-IDRI"
    rng = np.random.default_rng(seed)
    truths = {}
    for i in range(patients):
        patient_id = f"LIDC-IDRI-{i + 1:04d}"
        study_uid = make_uid(seed, patient_id, "study")
        series_uid = make_uid(seed, patient_id, "series")
        series_dir = (
            root
            / patient_id
            / f"01-01-2000-NA-CT-{30178 + i}"
            / f"{3000566 + i}.000000-NA-{3192 + i}"
        )
        layout = {2: "flipped", 3: "transposed"}.get(i, "standard")
        volume, truth = lidc_volume(size, slices, rng)
        cavity = i == 1
        if cavity:
            k = max(truth.disks, key=lambda z: truth.disks[z][2])
            cy, cx, radius = truth.disks[k]
            volume[k][_ellipse((size, size), cy, cx, radius / 3, radius / 3)] = -900.0
        written = write_ct_series(
            series_dir, volume, patient_id, study_uid, series_uid, layout, seed + i
        )
        truth.patient_id, truth.series_uid = patient_id, series_uid
        truths[patient_id] = truth
        write_lidc_xml(
            series_dir / f"{69 + i:03d}.xml", series_uid, study_uid, written, truth, layout, cavity
        )
        if i == 4:  # a second file at the position of slice 3
            duplicate = series_dir / "1-999.dcm"
            duplicate.write_bytes(written[3][0].read_bytes())
            _rewrite_uid(duplicate, make_uid(series_uid, "duplicate"), instance=999)
        if i == 0:
            write_radiograph(
                root / patient_id / "01-01-2000-NA-CXR-1" / "1.000000-NA-1", patient_id, seed
            )
    return root, truths


def _rewrite_uid(path: Path, sop_uid: str, instance: int) -> None:
    ds = pydicom.dcmread(path)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.InstanceNumber = instance
    ds.save_as(path, enforce_file_format=True)


# ----- Pancreas --------------------------------------------------------------------------------
def pancreas_volume(
    size: int, depth: int, rng: np.random.Generator, tumour: bool
) -> tuple[np.ndarray, np.ndarray]:
    """An abdomen phantom (HU) and its labels (1 pancreas, 2 tumour). The pancreas lies to the
    patient's left of the midline (larger x), its head a blob to the right: not symmetric."""
    plane = (size, size)
    volume = np.full((depth, size, size), -1000.0, dtype=np.float32)
    labels = np.zeros((depth, size, size), dtype=np.uint8)
    body = _ellipse(plane, size * 0.5, size * 0.5, size * 0.40, size * 0.45)
    spine = _ellipse(plane, size * 0.74, size * 0.5, size * 0.08, size * 0.08)
    dy, dx = rng.uniform(-0.02, 0.02, 2) * size
    pancreas = _ellipse(plane, size * 0.45 + dy, size * 0.58 + dx, size * 0.06, size * 0.18)
    pancreas |= _ellipse(plane, size * 0.50 + dy, size * 0.40 + dx, size * 0.08, size * 0.06)
    lesion = _ellipse(plane, size * 0.45 + dy, size * 0.64 + dx, size * 0.055, size * 0.07)
    volume[:, body] = 30.0
    volume[:, spine] = 700.0
    for k in range(depth // 4, depth - depth // 4):
        volume[k][pancreas] = 110.0
        labels[k][pancreas] = 1
        if tumour and abs(k - depth // 2) <= 1:
            volume[k][lesion] = 45.0
            labels[k][lesion] = 2
    volume += rng.normal(0, 10, volume.shape).astype(np.float32)
    return volume, labels


def write_pancreas_tree(
    out: str | Path,
    abnormal: int = 4,
    normal: int = 4,
    size: int = 48,
    slices: int = 12,
    seed: int = 0,
) -> Path:
    """Write ``Task07_Pancreas`` (NIfTI, ``dataset.json``, stray ``._*`` files, an unlabelled test
    image), ``Pancreas-CT`` (DICOM) and ``TCIA_pancreas_labels-02-05-2017`` (NIfTI) under ``out``.
    Odd MSD cases store their y axis reversed; normal case 2 has a flipped in-plane layout."""
    root = Path(out)
    rng = np.random.default_rng(seed)
    msd = root / "Task07_Pancreas"
    training = []
    for i in range(abnormal):
        name = f"pancreas_{2 * i + 1:03d}.nii.gz"
        volume, labels = pancreas_volume(size, slices, rng, tumour=True)
        write_nifti(msd / "imagesTr" / name, volume.astype(np.int16), flip_y=i % 2 == 1)
        write_nifti(msd / "labelsTr" / name, labels, flip_y=i % 2 == 1)
        for folder in ("imagesTr", "labelsTr"):
            (msd / folder / f"._{name}").write_bytes(b"\x00\x05\x16\x07 AppleDouble junk")
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    test_image = msd / "imagesTs" / "pancreas_900.nii.gz"
    write_nifti(test_image, pancreas_volume(size, slices, rng, tumour=True)[0].astype(np.int16))
    index = {
        "name": "Pancreas",
        "description": "Pancreas and pancreatic tumour segmentation (fixture)",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "pancreas", "2": "cancer"},
        "numTraining": len(training),
        "numTest": 1,
        "training": training,
        "test": ["./imagesTs/pancreas_900.nii.gz"],
    }
    (msd / "dataset.json").write_text(json.dumps(index, indent=2))
    for i in range(normal):
        patient = f"PANCREAS_{i + 1:04d}"
        volume, labels = pancreas_volume(size, slices, rng, tumour=False)
        series_dir = (
            root
            / "Pancreas-CT"
            / patient
            / f"11-24-2015-PANCREAS{i + 1:04d}-Pancreas-{i}"
            / f"Pancreas-{i}"
        )
        layout = "flipped" if i == 1 else "standard"
        write_ct_series(
            series_dir,
            volume,
            patient,
            make_uid(seed, patient, "study"),
            make_uid(seed, patient, "series"),
            layout,
            seed + i,
        )
        write_nifti(root / "TCIA_pancreas_labels-02-05-2017" / f"label{i + 1:04d}.nii.gz", labels)
    return root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m datamodules.fixtures", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="dataset", required=True)
    lidc = sub.add_parser("lidc", help="an LIDC-IDRI tree: DICOM series and annotation XML")
    lidc.add_argument("out", type=Path)
    lidc.add_argument("--patients", type=int, default=6)
    lidc.add_argument("--size", type=int, default=64)
    lidc.add_argument("--slices", type=int, default=20)
    lidc.add_argument("--seed", type=int, default=0)
    pancreas = sub.add_parser("pancreas", help="Decathlon Task07 NIfTI and Pancreas-CT DICOM")
    pancreas.add_argument("out", type=Path)
    pancreas.add_argument("--abnormal", type=int, default=4)
    pancreas.add_argument("--normal", type=int, default=4)
    pancreas.add_argument("--size", type=int, default=48)
    pancreas.add_argument("--slices", type=int, default=12)
    pancreas.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.dataset == "lidc":
        root, _ = write_lidc_tree(args.out, args.patients, args.size, args.slices, args.seed)
        print(f"LIDC-IDRI tree: {root}\n  vapl fit --config lidc.yaml --data.init_args.root {root}")
    else:
        root = write_pancreas_tree(
            args.out, args.abnormal, args.normal, args.size, args.slices, args.seed
        )
        print(
            f"Pancreas tree: {root}\n  vapl fit --config pancreas.yaml --data.init_args.root {root}"
        )


if __name__ == "__main__":
    main()
