"""LIDC-IDRI annotation XML: our own reader, rasteriser and reader consensus.

One XML file per CT series (``LidcReadMessage``, namespace ``http://www.nih.gov``) holds up to four
``readingSession``s, one per radiologist. Each ``unblindedReadNodule`` has one ``roi`` per slice it
appears on, joined to the slice by ``imageSOP_UID``; a ROI's ``edgeMap`` points (``xCoord`` column,
``yCoord`` row, in pixels of that slice) outline the nodule, and ``inclusion = FALSE`` marks a
contour to cut out (a hole). Nodules under 3 mm carry a single point, ``nonNodule`` loci one point:
they mark a slice without a contour. Chest-radiograph reads (``IdriReadMessage``) are not CT reads.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vapl.core.errors import UserInputError

LIDC_NAMESPACE = "http://www.nih.gov"
CT_READ = "LidcReadMessage"
RADIOGRAPH_READ = "IdriReadMessage"

Point = tuple[int, int]


class LidcXmlError(UserInputError, ValueError):
    """An annotation file that cannot be used; the message names the file and the reason."""


@dataclass(frozen=True)
class Roi:
    """One contour (or single point) of a nodule on one slice."""

    sop_uid: str
    z_position: float | None
    inclusion: bool
    points: tuple[Point, ...]

    @property
    def is_contour(self) -> bool:
        return len(set(self.points)) >= 3


@dataclass(frozen=True)
class NoduleRead:
    nodule_id: str
    rois: tuple[Roi, ...]


@dataclass(frozen=True)
class NonNodule:
    non_nodule_id: str
    sop_uid: str
    z_position: float | None
    locus: Point | None


@dataclass(frozen=True)
class ReadingSession:
    """One radiologist's read of the series."""

    source: str
    reader_id: str
    nodules: tuple[NoduleRead, ...]
    non_nodules: tuple[NonNodule, ...]


@dataclass(frozen=True)
class LidcRead:
    path: Path
    series_uid: str
    sessions: tuple[ReadingSession, ...]


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(element: ET.Element, name: str) -> list[ET.Element]:
    return [child for child in element if _local(child.tag).lower() == name.lower()]


def _text(element: ET.Element, name: str) -> str | None:
    found = _children(element, name)
    return None if not found or found[0].text is None else found[0].text.strip()


def _float_or_none(text: str | None) -> float | None:
    try:
        return None if text is None else float(text)
    except ValueError:
        return None


def _point(element: ET.Element, path: Path) -> Point:
    x, y = _text(element, "xCoord"), _text(element, "yCoord")
    try:
        return int(round(float(x))), int(round(float(y)))  # type: ignore[arg-type]
    except (TypeError, ValueError) as error:
        raise LidcXmlError(f"{path}: point with xCoord={x!r}, yCoord={y!r}") from error


def _roi(element: ET.Element, path: Path) -> Roi:
    sop_uid = _text(element, "imageSOP_UID")
    if not sop_uid:
        raise LidcXmlError(f"{path}: a roi without imageSOP_UID")
    inclusion = (_text(element, "inclusion") or "TRUE").upper() != "FALSE"
    points = tuple(_point(edge, path) for edge in _children(element, "edgeMap"))
    return Roi(sop_uid, _float_or_none(_text(element, "imageZposition")), inclusion, points)


def read_lidc_xml(path: str | Path) -> LidcRead | None:
    """Parse one annotation file; ``None`` for a chest-radiograph read (``IdriReadMessage``).

    Raises :class:`LidcXmlError` naming the file when it does not parse or lacks what is needed.
    """
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as error:
        raise LidcXmlError(f"{path}: XML does not parse ({error})") from error
    kind = _local(root.tag)
    if kind == RADIOGRAPH_READ:
        return None
    if kind != CT_READ:
        raise LidcXmlError(f"{path}: root element is {kind}, expected {CT_READ}")
    header = _children(root, "ResponseHeader")
    series_uid = _text(header[0], "SeriesInstanceUid") if header else None
    sessions = []
    for number, session in enumerate(_children(root, "readingSession")):
        reader = _text(session, "servicingRadiologistID") or f"reader{number + 1}"
        nodules = tuple(
            NoduleRead(
                _text(nodule, "noduleID") or f"nodule{k + 1}",
                tuple(_roi(roi, path) for roi in _children(nodule, "roi")),
            )
            for k, nodule in enumerate(_children(session, "unblindedReadNodule"))
        )
        non_nodules = []
        for k, item in enumerate(_children(session, "nonNodule")):
            loci = _children(item, "locus")
            non_nodules.append(
                NonNodule(
                    _text(item, "nonNoduleID") or f"nonnodule{k + 1}",
                    _text(item, "imageSOP_UID") or "",
                    _float_or_none(_text(item, "imageZposition")),
                    _point(loci[0], path) if loci else None,
                )
            )
        sessions.append(ReadingSession(str(path), reader, nodules, tuple(non_nodules)))
    return LidcRead(path, series_uid or "", tuple(sessions))


def rasterise_contour(points: Sequence[Point], shape: tuple[int, int]) -> np.ndarray:
    """The pixels a closed contour encloses, outline included: bool [H, W].

    ``points`` are (x column, y row) pixel indices. A pixel is in when its centre lies inside the
    polygon (even-odd rule) or within half a pixel of an edge (the outline: LIDC readers draw just
    outside the nodule). Neither rule prefers a direction, so a flipped or transposed contour gives
    the flipped or transposed mask.
    """
    mask = np.zeros(shape, dtype=bool)
    if not points:
        return mask
    xy = np.asarray(points, dtype=np.float64)
    top = int(max(0, np.floor(xy[:, 1].min())))
    bottom = int(min(shape[0] - 1, np.ceil(xy[:, 1].max())))
    left = int(max(0, np.floor(xy[:, 0].min())))
    right = int(min(shape[1] - 1, np.ceil(xy[:, 0].max())))
    if top > bottom or left > right:
        return mask
    ys, xs = np.mgrid[top : bottom + 1, left : right + 1].astype(np.float64)
    inside = np.zeros(ys.shape, dtype=bool)
    on_outline = np.zeros(ys.shape, dtype=bool)
    for (x0, y0), (x1, y1) in zip(xy, np.roll(xy, -1, axis=0)):
        crosses = (y0 > ys) != (y1 > ys)
        x_cross = x0 + (ys - y0) * (x1 - x0) / (y1 - y0 if y1 != y0 else 1.0)
        inside ^= crosses & (xs < x_cross)
        dx, dy = x1 - x0, y1 - y0
        t = ((xs - x0) * dx + (ys - y0) * dy) / max(dx * dx + dy * dy, 1e-12)
        t = np.clip(t, 0.0, 1.0)
        on_outline |= (xs - x0 - t * dx) ** 2 + (ys - y0 - t * dy) ** 2 <= 0.25 + 1e-9
    mask[top : bottom + 1, left : right + 1] = inside | on_outline
    return mask


def _slice_of(sop_uid: str, sop_index: dict[str, int], source: str, what: str) -> int:
    if sop_uid not in sop_index:
        raise LidcXmlError(
            f"{source}: {what} points to SOP instance UID {sop_uid}, a slice missing from the series"
        )
    return sop_index[sop_uid]


def reader_masks(
    session: ReadingSession, sop_index: dict[str, int], shape: tuple[int, int]
) -> tuple[dict[int, np.ndarray], set[int]]:
    """One reader's nodule masks by slice index, and every slice the reader marked at all.

    A nodule's mask on a slice is the union of its included contours minus its excluded ones; the
    reader's mask is the union over nodules. Single points (small nodules, non-nodules) mark their
    slice without adding to the mask.
    """
    masks: dict[int, np.ndarray] = {}
    marked: set[int] = set()
    for nodule in session.nodules:
        included: dict[int, np.ndarray] = {}
        excluded: dict[int, np.ndarray] = {}
        for roi in nodule.rois:
            what = f"a roi of {nodule.nodule_id} (reader {session.reader_id})"
            k = _slice_of(roi.sop_uid, sop_index, session.source, what)
            marked.add(k)
            if not roi.is_contour:
                continue
            target = included if roi.inclusion else excluded
            contour = rasterise_contour(roi.points, shape)
            target[k] = target[k] | contour if k in target else contour
        for k, mask in included.items():
            if k in excluded:
                mask = mask & ~excluded[k]
            masks[k] = masks[k] | mask if k in masks else mask
    for item in session.non_nodules:
        what = f"non-nodule {item.non_nodule_id} (reader {session.reader_id})"
        marked.add(_slice_of(item.sop_uid, sop_index, session.source, what))
    return masks, marked


def consensus_masks(
    sessions: Sequence[ReadingSession],
    sop_index: dict[str, int],
    shape: tuple[int, int],
    level: float = 0.5,
) -> tuple[dict[int, np.ndarray], set[int]]:
    """Pixels drawn by at least ``ceil(level * readers)`` readers (at least one), by slice index,
    keeping only non-empty slices; and the slices any reader marked in any way."""
    if not 0.0 < level <= 1.0:
        raise ValueError(f"consensus level must be in (0, 1], got {level}")
    needed = max(1, math.ceil(level * len(sessions) - 1e-9))
    counts: dict[int, np.ndarray] = {}
    marked: set[int] = set()
    for session in sessions:
        masks, session_marked = reader_masks(session, sop_index, shape)
        marked |= session_marked
        for k, mask in masks.items():
            counts[k] = counts.get(k, np.zeros(shape, dtype=np.int16)) + mask
    consensus = {k: count >= needed for k, count in counts.items()}
    return {k: mask for k, mask in consensus.items() if mask.any()}, marked
