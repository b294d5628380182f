"""The one-time preprocessing step of the medical datamodules: cases in, arrays on disk out.

A cache is one folder per data set and settings (``<cache_dir>/<name>-<settings hash>``)::

    images.npy        float16 [N, S, S]  the windowed slice, HU mapped to [0, 1]
    explanations.npy  uint8   [N, S, S]  the ground-truth explanation (1 inside)
    body.npy          uint8   [N, S, S]  inside the body (1) or outside (0)
    lesions.npy       uint8   [N, S, S]  Pancreas only: the tumour
    labels.npy        int64   [N]
    manifest.json     the settings, a fingerprint of the source files, one record per sample
                      (id, patient, label, source files, slice position), skips and a summary

No float array holds NaN or infinity: the readers replace them (:mod:`datamodules.io`), and a row
that still holds one stops the run. The folder is written under a temporary name and renamed
when complete (the manifest is written last), so an interrupted run leaves nothing that a later
run would take for a cache. A cache is reused while its settings and the sources' fingerprint
(paths, sizes, modification times) match.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from vapl.core.errors import UserInputError
from vapl.core.progress import progress

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
LABELS = "labels.npy"

Case = TypeVar("Case")


class DataError(UserInputError, ValueError):
    """Input the datamodule cannot use: raised for every bad case in strict mode, and when nothing
    usable is found at all."""


class CaseSkipped(Exception):
    """One case has bad input (corrupt file, mismatched shapes, ...). The message names the file
    and the reason; the case is left out, or with ``strict`` the run stops."""


class CaseIgnored(Exception):
    """One case is not data for this set (a chest radiograph, a series that is not CT, no mark):
    left out and counted, never an error."""


@dataclass
class SliceSample:
    """One 2-D sample: arrays of the cache's row shape, its label, and its manifest record."""

    arrays: dict[str, np.ndarray]
    label: int
    record: dict[str, Any] = field(default_factory=dict)


def _plain(value: Any) -> Any:
    """JSON for numpy scalars and paths in manifest records."""
    return value.item() if isinstance(value, np.generic) else str(value)


def settings_hash(settings: dict[str, Any]) -> str:
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def source_fingerprint(files: Iterable[Path], root: Path) -> dict[str, Any]:
    """A hash of every source file's relative path, size and modification time (no content read)."""
    digest = hashlib.sha256()
    count = 0
    for path in sorted(files):
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        count += 1
    return {"files": count, "sha256": digest.hexdigest()}


def read_manifest(directory: Path) -> dict[str, Any] | None:
    try:
        return json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def cache_is_current(directory: Path, settings: dict[str, Any], sources: dict[str, Any]) -> bool:
    """True when ``directory`` holds a complete cache made with these settings from these sources."""
    manifest = read_manifest(directory)
    if manifest is None or manifest.get("format") != FORMAT_VERSION:
        return False
    same_settings = json.dumps(manifest.get("settings"), sort_keys=True) == json.dumps(
        json.loads(json.dumps(settings, default=str)), sort_keys=True
    )
    arrays = [f"{name}.npy" for name in manifest.get("arrays", {})] + [LABELS]
    return (
        same_settings
        and manifest.get("sources") == sources
        and all((directory / name).is_file() for name in arrays)
    )


class _NpyAppender:
    """Rows appended one at a time to a raw file, turned into a ``.npy`` by :meth:`finish`, so a
    cache never has to fit in memory."""

    def __init__(self, path: Path, dtype: np.dtype, row_shape: tuple[int, ...]) -> None:
        self.path = path
        self.dtype = np.dtype(dtype)
        self.row_shape = row_shape
        self.rows = 0
        self.raw_path = path.with_suffix(".raw")
        self.raw = open(self.raw_path, "wb")  # noqa: SIM115 - closed in finish()

    def append(self, row: np.ndarray) -> None:
        if row.shape != self.row_shape:
            raise ValueError(f"{self.path.name}: row shape {row.shape}, expected {self.row_shape}")
        if self.dtype.kind == "f" and not np.isfinite(row).all():  # the readers replace them
            raise ValueError(f"{self.path.name}: a row holds NaN or infinite values")
        self.raw.write(np.ascontiguousarray(row, dtype=self.dtype).tobytes())
        self.rows += 1

    def finish(self) -> None:
        self.raw.close()
        header = {
            "descr": np.lib.format.dtype_to_descr(self.dtype),
            "fortran_order": False,
            "shape": (self.rows, *self.row_shape),
        }
        with open(self.path, "wb") as out, open(self.raw_path, "rb") as raw:
            np.lib.format.write_array_header_1_0(out, header)
            shutil.copyfileobj(raw, out, length=16 << 20)
        self.raw_path.unlink()


def _summary(samples: Sequence[dict[str, Any]], cases: int, skipped: list, ignored: list) -> dict:
    labels = Counter(int(s["label"]) for s in samples)
    return {
        "cases": cases,
        "cases_used": len({s["case"] for s in samples}),
        "samples": len(samples),
        "samples_by_label": {str(k): v for k, v in sorted(labels.items())},
        "patients": len({s["patient"] for s in samples}),
        "skipped": len(skipped),
        "ignored": len(ignored),
    }


def build_cache(
    directory: Path,
    settings: dict[str, Any],
    sources: dict[str, Any],
    cases: Sequence[Case],
    process: Callable[[Case], list[SliceSample]],
    case_name: Callable[[Case], str],
    strict: bool = False,
    description: str = "caching",
) -> dict[str, Any]:
    """Run ``process`` on every case and write the samples to ``directory``; return the manifest.

    A :class:`CaseSkipped` case is logged (file and reason) and counted, or with ``strict`` turned
    into a :class:`DataError`. A :class:`CaseIgnored` case is counted. Any other exception aborts
    the run and removes the partial folder.
    """
    directory.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".tmp-{directory.name}-", dir=directory.parent))
    appenders: dict[str, _NpyAppender] = {}
    labels: list[int] = []
    records: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    ignored: list[dict[str, str]] = []
    try:
        bar = progress(cases, desc=description, unit="case", dynamic_ncols=True)
        for case in bar:
            name = case_name(case)
            try:
                samples = process(case)
            except CaseIgnored as reason:
                ignored.append({"case": name, "reason": str(reason)})
                continue
            except CaseSkipped as reason:
                if strict:
                    raise DataError(
                        f"{reason} (strict: set strict=false to skip such cases)"
                    ) from reason
                log.warning("skipped %s: %s", name, reason)
                skipped.append({"case": name, "reason": str(reason)})
                bar.set_postfix(skipped=len(skipped))
                continue
            for sample in samples:
                for key, array in sample.arrays.items():
                    if key not in appenders:
                        appenders[key] = _NpyAppender(
                            temporary / f"{key}.npy", array.dtype, array.shape
                        )
                    appenders[key].append(array)
                labels.append(int(sample.label))
                records.append({**sample.record, "label": int(sample.label), "case": name})
        if not records:
            raise DataError(
                f"no usable samples in {len(cases)} cases "
                f"({len(skipped)} skipped, {len(ignored)} ignored): "
                + "; ".join(s["reason"] for s in (skipped + ignored)[:5])
            )
        for appender in appenders.values():
            appender.finish()
        np.save(temporary / LABELS, np.asarray(labels, dtype=np.int64))
        manifest = {
            "format": FORMAT_VERSION,
            "settings": json.loads(json.dumps(settings, default=str)),
            "sources": sources,
            "arrays": {
                k: {"dtype": str(a.dtype), "shape": [a.rows, *a.row_shape]}
                for k, a in appenders.items()
            },
            "summary": _summary(records, len(cases), skipped, ignored),
            "skipped": skipped,
            "ignored": ignored,
            "samples": records,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        (temporary / MANIFEST).write_text(json.dumps(manifest, indent=1, default=_plain))
        if directory.exists():  # an outdated cache of the same settings
            stale = directory.with_name(f".stale-{directory.name}-{os.getpid()}")
            os.rename(directory, stale)
            shutil.rmtree(stale, ignore_errors=True)
        os.rename(temporary, directory)
    except BaseException:
        for appender in appenders.values():
            appender.raw.close()
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    summary = manifest["summary"]
    message = (
        f"{description}: {summary['samples']} samples {summary['samples_by_label']} from "
        f"{summary['cases_used']} of {summary['cases']} cases; {summary['skipped']} skipped, "
        f"{summary['ignored']} ignored -> {directory}"
    )
    (log.warning if skipped else log.info)(message)
    return manifest


@dataclass
class SliceCache:
    """A complete cache opened for reading: arrays memory-mapped, never loaded whole."""

    directory: Path
    manifest: dict[str, Any]
    arrays: dict[str, np.ndarray]
    labels: np.ndarray

    @classmethod
    def open(cls, directory: Path) -> SliceCache:
        manifest = read_manifest(directory)
        if manifest is None:
            raise DataError(f"{directory}: no complete cache (manifest.json missing)")
        arrays = {
            name: np.load(directory / f"{name}.npy", mmap_mode="r") for name in manifest["arrays"]
        }
        return cls(directory, manifest, arrays, np.load(directory / LABELS))

    def __getstate__(self) -> dict[str, Any]:
        # Worker processes reopen the memory maps instead of receiving copies of the arrays.
        return {"directory": self.directory}

    def __setstate__(self, state: dict[str, Any]) -> None:
        opened = SliceCache.open(state["directory"])
        self.__dict__.update(opened.__dict__)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def ids(self) -> list[str]:
        return [record["id"] for record in self.manifest["samples"]]

    @property
    def patients(self) -> list[str]:
        return [record["patient"] for record in self.manifest["samples"]]
