"""The bundled configs and how a ``--config NAME`` finds one.

Each ``--config`` that is not an existing file is looked up in the bundled ``configs/`` folder
(shipped inside the wheel as ``vapl/configs``), so configs work from any directory, also when vapl
is installed without its source tree.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

CONFIG_FLAGS = ("--config", "-c")


def bundled_config_dir() -> Path:
    """The configs shipped with vapl: inside the installed package, else the source tree's."""
    packaged = Path(str(resources.files("vapl") / "configs"))
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "configs"


def resolve_config(name: str) -> str:
    """A config path as given when it is a file, else the bundled config of that name."""
    if Path(name).is_file():
        return name
    bundled = bundled_config_dir()
    for candidate in (bundled / name, bundled / f"{name}.yaml"):
        if candidate.is_file():
            return str(candidate)
    available = sorted(str(p.relative_to(bundled)) for p in bundled.rglob("*.yaml"))
    raise SystemExit(
        f"vapl: config {name!r} is neither a file nor a bundled config. "
        f"Bundled configs: {', '.join(available)}"
    )


def resolve_config_args(args: list[str]) -> list[str]:
    """Rewrite every ``--config X`` / ``--config=X`` / ``-c X`` with :func:`resolve_config`."""
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in CONFIG_FLAGS and i + 1 < len(args):
            out += [arg, resolve_config(args[i + 1])]
            i += 2
            continue
        flag, sep, value = arg.partition("=")
        if sep and flag in CONFIG_FLAGS:
            arg = f"{flag}={resolve_config(value)}"
        out.append(arg)
        i += 1
    return out
