"""The bundled configs, how a ``--config NAME`` finds one, and ``vapl configs`` that lists them.

Each ``--config`` that is not an existing file is looked up in the bundled ``configs/`` folder
(shipped inside the wheel as ``vapl/configs``), so configs work from any directory, also when vapl
is installed without its source tree. A config's one-line description is its first comment line.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from vapl.core.errors import UserInputError

CONFIG_FLAGS = ("--config", "-c")


def bundled_config_dir() -> Path:
    """The configs shipped with vapl: inside the installed package, else the source tree's."""
    packaged = Path(str(resources.files("vapl") / "configs"))
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "configs"


class ConfigNotFoundError(UserInputError, FileNotFoundError):
    """A ``--config`` that is neither a file nor a bundled config."""


#: The groups ``vapl configs`` lists, in order: a folder (``""``: the top level's data set configs,
#: ``"overlays"``: the top level's others) and its title.
CONFIG_GROUPS = {
    "": "data sets (each holds trainer, model and data; VAPL by default)",
    "overlays": "size overlays (compose right after a data set config)",
    "methods": "method overlays (compose after a data set config)",
    "trainer": "trainer overlays",
    "logger": "logger overlays",
    "benchmark": "benchmark grids (vapl benchmark)",
}


def bundled_config_names(folder: str | None = None) -> list[str]:
    """Bundled config names relative to the configs folder (``demo.yaml``, ``methods/vapl.yaml``),
    top level first; only those in ``folder`` (``""``: the top level) if given."""
    bundled = bundled_config_dir()
    names = [p.relative_to(bundled) for p in bundled.rglob("*.yaml")]
    if folder is not None:
        names = [n for n in names if str(n.parent) == (folder or ".")]
    return [str(n) for n in sorted(names, key=lambda n: (len(n.parts), str(n)))]


def is_data_set_config(path: str | Path) -> bool:
    """Whether a config names a data set (``data.class_path``); the others are overlays."""
    import yaml

    config = yaml.safe_load(Path(path).read_text()) or {}
    data = config.get("data") if isinstance(config, dict) else None
    return isinstance(data, dict) and "class_path" in data


def data_set_config_names() -> list[str]:
    """The bundled data set configs: the top level's configs that name a data set."""
    bundled = bundled_config_dir()
    return [n for n in bundled_config_names("") if is_data_set_config(bundled / n)]


def describe_config(path: str | Path) -> str:
    """A config's one-line description: its first comment line, without the ``#``."""
    for line in Path(path).read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
        if line.strip():
            break
    return ""


def configs_listing() -> str:
    """Every bundled config with its description, grouped as in :data:`CONFIG_GROUPS`."""
    bundled = bundled_config_dir()
    names = bundled_config_names()
    data_sets = data_set_config_names()
    members: dict[str, list[str]] = {folder: [] for folder in CONFIG_GROUPS}
    for name in names:
        folder = str(Path(name).parent)
        if folder == ".":
            folder = "" if name in data_sets else "overlays"
        members.setdefault(folder, []).append(name)  # a new folder: listed under its own name
    column = max(len(name) for name in names) + 2
    lines: list[str] = []
    for folder, group in members.items():
        if not group:
            continue
        lines += (
            ["", f"{CONFIG_GROUPS.get(folder, folder)}:"]
            if lines
            else [f"{CONFIG_GROUPS[folder]}:"]
        )
        lines += [f"  {name:<{column}}{describe_config(bundled / name)}" for name in group]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """``vapl configs``: list the bundled configs with their one-line descriptions."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="vapl configs",
        description="List the bundled configs (usable by name from any folder: "
        "vapl fit --config demo.yaml --config methods/baseline.yaml).",
    )
    parser.add_argument("name", nargs="?", help="print this config's full text instead")
    options = parser.parse_args(argv)
    if options.name:
        print(Path(resolve_config(options.name)).read_text(), end="")
        return
    print(configs_listing())
    print(
        "\nCompose left to right: vapl fit --config DATA.yaml [--config methods/METHOD.yaml] "
        "[--config trainer/... logger/...].\nvapl configs NAME prints one; "
        f"the folder: {bundled_config_dir()}"
    )


def resolve_config(name: str) -> str:
    """A config path as given when it is a file, else the bundled config of that name."""
    if Path(name).is_file():
        return name
    bundled = bundled_config_dir()
    for candidate in (bundled / name, bundled / f"{name}.yaml"):
        if candidate.is_file():
            return str(candidate)
    raise ConfigNotFoundError(
        f"config {name!r} is neither a file nor a bundled config. Bundled data set configs: "
        f"{', '.join(data_set_config_names())} (vapl configs lists all, with the overlays)"
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


if __name__ == "__main__":
    main()
