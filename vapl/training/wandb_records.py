"""Reading W&B run folders on disk (offline runs, and the local copy of online runs).

W&B writes each run's history, summary and config into one transaction log,
``wandb/offline-run-*/run-ID.wandb`` (``wandb/run-*/`` for online runs). Recent W&B versions write
no ``config.yaml`` or ``wandb-summary.json`` for offline runs, so this module reads that log: a
7-byte header (``:W&B``, magic, version) and then LevelDB-style records in 32 KiB blocks (4-byte
CRC, 2-byte length, 1-byte type: full, first, middle, last), each a ``wandb_internal.Record``
protocol buffer. Nothing is sent anywhere; no W&B run is started.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vapl.core.errors import UserInputError

BLOCK_SIZE = 32 * 1024
HEADER_SIZE = 7
RECORD_HEADER = struct.Struct("<IHB")  # crc32, length, type
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


class WandbRecordError(UserInputError, ValueError):
    """A file that is not a W&B transaction log."""


def _record_payloads(data: bytes, source: str) -> Iterator[bytes]:
    if data[:4] != b":W&B":
        raise WandbRecordError(f"{source}: not a W&B run file (no ':W&B' header)")
    position, pending = HEADER_SIZE, b""
    while position + RECORD_HEADER.size <= len(data):
        left_in_block = BLOCK_SIZE - position % BLOCK_SIZE
        if left_in_block < RECORD_HEADER.size:  # the block's tail is padding
            position += left_in_block
            continue
        _, length, kind = RECORD_HEADER.unpack_from(data, position)
        position += RECORD_HEADER.size
        chunk = data[position : position + length]
        position += length
        if len(chunk) < length:
            return  # a run still being written, or cut short: keep what is complete
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            yield pending + chunk
            pending = b""


def read_records(path: str | Path) -> Iterator[Any]:
    """The ``Record`` messages of a ``.wandb`` file, in order."""
    from wandb.proto import wandb_internal_pb2

    path = Path(path)
    for payload in _record_payloads(path.read_bytes(), str(path)):
        record = wandb_internal_pb2.Record()
        try:
            record.ParseFromString(payload)
        except Exception:  # noqa: BLE001 - a damaged record ends the readable part
            return
        yield record


def _set_nested(target: dict[str, Any], keys: list[str], value: Any) -> None:
    for key in keys[:-1]:
        child = target.get(key)
        if not isinstance(child, dict):
            child = target[key] = {}
        target = child
    target[keys[-1]] = value


def _apply_items(target: dict[str, Any], items: Any) -> None:
    for item in items:
        keys = list(item.nested_key) or [item.key]
        try:
            value = json.loads(item.value_json) if item.value_json else None
        except json.JSONDecodeError:
            value = item.value_json
        _set_nested(target, keys, value)


@dataclass
class WandbRun:
    """What a run folder holds: identity, config, summary (last logged values, and explicit
    summary updates) and whether the run ended, with its exit code."""

    path: Path
    run_id: str = ""
    name: str = ""
    group: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    exit_code: int | None = None

    @property
    def finished(self) -> bool:
        return self.exit_code == 0

    def scalars(self) -> dict[str, float]:
        """Numeric top-level summary values (``val/prompted/acc``, ``best/val/...``, ...)."""
        return {
            key: float(value)
            for key, value in self.summary.items()
            if isinstance(value, int | float) and not isinstance(value, bool)
        }


def read_wandb_run(folder_or_file: str | Path) -> WandbRun:
    """Read a run folder (``.../offline-run-DATE-ID``) or its ``run-ID.wandb`` file."""
    path = Path(folder_or_file)
    files = [path] if path.is_file() else sorted(path.glob("run-*.wandb"))
    if not files:
        raise WandbRecordError(f"{path}: no run-*.wandb file in this folder")
    run = WandbRun(path=files[0].parent)
    for record in read_records(files[0]):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.run_id = record.run.run_id
            run.name = record.run.display_name
            run.group = record.run.run_group
            run.tags = list(record.run.tags)
            _apply_items(run.config, record.run.config.update)
        elif kind == "config":
            _apply_items(run.config, record.config.update)
        elif kind == "history":
            _apply_items(run.summary, record.history.item)
        elif kind == "summary":
            _apply_items(run.summary, record.summary.update)
        elif kind == "exit":
            run.exit_code = int(record.exit.exit_code)
    run.config.pop("_wandb", None)
    return run


def wait_until_finished(folder: str | Path, timeout: float = 30.0) -> WandbRun:
    """Read a run folder again until its exit record is there (W&B's service writes the run file
    in the background, also after ``finish()`` returns), or until ``timeout`` seconds passed."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            run = read_wandb_run(folder)
        except WandbRecordError:
            run = None
        if (run is not None and run.finished) or time.monotonic() > deadline:
            return run if run is not None else read_wandb_run(folder)
        time.sleep(0.2)


def find_wandb_runs(root: str | Path) -> list[Path]:
    """Run folders (``offline-run-*`` and ``run-*`` with a ``.wandb`` file) under ``root``."""
    root = Path(root)
    found = {
        p.parent
        for p in root.rglob("run-*.wandb")
        if p.parent.name.startswith(("offline-run-", "run-"))
    }
    return sorted(found)
