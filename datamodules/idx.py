"""IDX files (the MNIST format), gzipped or not, and where torchvision keeps them.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions), one
big-endian uint32 per dimension, then the values in C order. MNIST images have magic 2051
(0x00000803: unsigned bytes, 3 dimensions), labels 2049 (0x00000801: unsigned bytes, 1 dimension).
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from vapl.core.errors import MissingPathError, UserInputError, require_folder

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
GZIP_HEADER = b"\x1f\x8b"

#: IDX type codes and the numpy types they hold (big-endian where it matters).
IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
TYPE_CODES = {dtype: code for code, dtype in IDX_TYPES.items()}

#: The four MNIST files by split and kind, as torchvision names them (without ``.gz``).
MNIST_FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}


class IdxError(UserInputError, ValueError):
    """A file that is not a valid IDX file of the expected kind; the message names it."""


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise IdxError(f"{path}: cannot read ({error})") from error
    if raw[:2] == GZIP_HEADER:
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as error:
            raise IdxError(f"{path}: truncated or corrupt gzip stream ({error})") from error
    return raw


def read_idx(path: str | Path, expected_magic: int | None = None) -> np.ndarray:
    """Read an IDX file (``.gz`` recognised by its content). Raises :class:`IdxError` on a wrong
    magic number, a magic other than ``expected_magic``, a truncated file or trailing bytes."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise IdxError(f"{path}: truncated, {len(raw)} byte(s) where a 4-byte magic number starts")
    (magic,) = struct.unpack(">I", raw[:4])
    type_code, ndim = raw[2], raw[3]
    if raw[:2] != b"\x00\x00" or type_code not in IDX_TYPES or ndim == 0:
        raise IdxError(f"{path}: wrong magic number 0x{magic:08x}; not an IDX file")
    if expected_magic is not None and magic != expected_magic:
        raise IdxError(
            f"{path}: wrong magic number 0x{magic:08x}, expected 0x{expected_magic:08x} "
            f"({'images' if expected_magic == IMAGES_MAGIC else 'labels'})"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IdxError(f"{path}: truncated header ({len(raw)} of {header} bytes)")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = IDX_TYPES[type_code]
    expected = math.prod(shape) * dtype.itemsize
    actual = len(raw) - header
    if actual < expected:
        raise IdxError(
            f"{path}: truncated, {actual} data bytes where shape {shape} needs {expected}"
        )
    if actual > expected:
        raise IdxError(f"{path}: {actual - expected} unexpected bytes after shape {shape}")
    array = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray, compress: bool | None = None) -> Path:
    """Write ``array`` as IDX; gzipped when ``compress`` (default: when the name ends in ``.gz``)."""
    path = Path(path)
    array = np.asarray(array)
    dtype = array.dtype.newbyteorder(">") if array.dtype.itemsize > 1 else array.dtype
    code = TYPE_CODES.get(dtype)
    if code is None:
        raise IdxError(f"{path}: IDX cannot hold {array.dtype}")
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=dtype).tobytes()
    if compress if compress is not None else path.suffix == ".gz":
        payload = gzip.compress(payload)
    path.write_bytes(payload)
    return path


def find_mnist_file(root: str | Path, split: str, kind: str) -> Path:
    """The MNIST file of ``split`` (train, test) and ``kind`` (images, labels) under ``root``.

    Looks in ``root``, ``root/MNIST/raw`` (torchvision's layout) and ``root/raw``, for the name
    with or without ``.gz`` (and the ``train-images.idx3-ubyte`` spelling some mirrors use).
    """
    root = require_folder(
        root, "MNIST root folder", " (data.init_args.root: the folder with the four MNIST files)"
    )
    name = MNIST_FILES[(split, kind)]
    dotted = name.replace("-idx", ".idx")
    folders = (root, root / "MNIST" / "raw", root / "raw")
    candidates = [f / n for f in folders for n in (name, f"{name}.gz", dotted, f"{dotted}.gz")]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise MissingPathError(
        f"{root}: no MNIST {split} {kind} file; looked for {name}[.gz] in "
        f"{', '.join(str(f) for f in folders)}"
    )


def read_mnist(root: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 [N, 28, 28] and labels int64 [N] of one MNIST split, checked for agreement."""
    images_path = find_mnist_file(root, split, "images")
    labels_path = find_mnist_file(root, split, "labels")
    images = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC)
    if images.dtype != np.uint8 or labels.dtype != np.uint8:
        raise IdxError(f"{images_path}, {labels_path}: MNIST files hold unsigned bytes")
    if len(images) != len(labels):
        raise IdxError(
            f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels"
        )
    if len(labels) and labels.max() > 9:
        raise IdxError(f"{labels_path}: labels must be digits 0 to 9, found {int(labels.max())}")
    return images, labels.astype(np.int64)
