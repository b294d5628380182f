"""The W&B logger vapl configures: offline unless you are logged in, and never stuck on the network.

:class:`WandbRunLogger` is Lightning's ``WandbLogger`` with three differences:

* ``mode=None`` (the default) picks the mode: ``WANDB_MODE`` if set; else ``online`` if an API key
  is found (``WANDB_API_KEY`` or a ``.netrc`` entry for the W&B host, which ``wandb login``
  writes); else ``offline``. The mode is passed to ``wandb.init`` for this run only: unlike
  ``WandbLogger(offline=True)`` it never changes ``WANDB_MODE`` for the rest of the process.
* Before an online run, the W&B host is probed (``probe_timeout`` seconds). If it cannot be reached,
  or ``wandb.init`` fails or times out (``init_timeout``), the run is logged offline instead, with
  a warning: training never waits for, or fails because of, the network. ``wandb sync`` uploads
  offline runs later.
* ``group`` and ``tags`` are arguments; the ``vapl`` command fills ``name``, ``group`` and
  ``tags`` from the run's method, data set and seed when they are not given
  (:func:`fill_run_names`).
"""

from __future__ import annotations

import netrc
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_warn

from vapl.training.run_names import RunIdentity, identity_from_config

WandbMode = Literal["online", "offline", "disabled"]
DEFAULT_BASE_URL = "https://api.wandb.ai"
DASHBOARD_CALLBACK = "vapl.training.callbacks.WandbDashboard"
WANDB_RUN_LOGGER = "vapl.training.loggers.WandbRunLogger"


def wandb_hosts(environ: Mapping[str, str] | None = None) -> list[str]:
    """Host names of the W&B server: ``WANDB_BASE_URL``'s if set, else wandb's default server
    (which W&B versions change) and ``api.wandb.ai``."""
    environ = os.environ if environ is None else environ
    if environ.get("WANDB_BASE_URL"):
        return [urlsplit(environ["WANDB_BASE_URL"]).netloc]
    hosts = [urlsplit(DEFAULT_BASE_URL).netloc]
    try:
        import wandb

        default = urlsplit(wandb.Settings().base_url).netloc
    except Exception:  # noqa: BLE001 - an old or broken wandb: keep api.wandb.ai
        default = None
    return [default, *hosts] if default and default not in hosts else hosts


def has_api_key(environ: Mapping[str, str] | None = None, netrc_path: Path | None = None) -> bool:
    """True if W&B credentials are available without asking: ``WANDB_API_KEY`` or a ``.netrc``
    entry (``NETRC`` or ``~/.netrc``) for a W&B host. Nothing is sent anywhere."""
    environ = os.environ if environ is None else environ
    if environ.get("WANDB_API_KEY"):
        return True
    path = netrc_path or Path(environ.get("NETRC") or Path.home() / ".netrc")
    try:
        entries = netrc.netrc(str(path))
    except (OSError, netrc.NetrcParseError):
        return False
    for host in wandb_hosts(environ):
        entry = entries.authenticators(host)
        if entry and entry[2]:
            return True
    return False


def resolve_mode(
    mode: str | None = None,
    environ: Mapping[str, str] | None = None,
    netrc_path: Path | None = None,
) -> WandbMode:
    """The mode a run logs in: ``mode`` if given, else ``WANDB_MODE``, else ``online`` with an
    API key and ``offline`` without one. ``dryrun`` is W&B's old name for ``offline``."""
    environ = os.environ if environ is None else environ
    chosen = mode or environ.get("WANDB_MODE")
    if chosen:
        chosen = "offline" if chosen == "dryrun" else chosen
        if chosen not in ("online", "offline", "disabled"):
            raise ValueError(f"W&B mode is online, offline or disabled, not {chosen!r}")
        return chosen  # type: ignore[return-value]
    return "online" if has_api_key(environ, netrc_path) else "offline"


def host_reachable(host: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to ``host`` (port 443 unless given) opens within ``timeout`` s."""
    name, _, port = host.partition(":")
    try:
        with socket.create_connection((name, int(port or 443)), timeout=timeout):
            return True
    except OSError:
        return False


class WandbRunLogger(WandbLogger):
    """Lightning's ``WandbLogger``, offline unless logged in, falling back to offline when the
    network fails (see the module docstring). ``project`` defaults to ``WANDB_PROJECT``, else
    ``vapl``; ``entity`` to W&B's own default (``WANDB_ENTITY``). Other arguments are
    ``WandbLogger``'s."""

    def __init__(
        self,
        save_dir: str = "runs",
        project: str | None = None,
        name: str | None = None,
        group: str | None = None,
        tags: list[str] | None = None,
        mode: WandbMode | None = None,
        entity: str | None = None,
        notes: str | None = None,
        log_model: bool | Literal["all"] = False,
        prefix: str = "",
        id: str | None = None,
        init_timeout: float = 60.0,
        probe_timeout: float = 3.0,
    ) -> None:
        import wandb

        resolved = resolve_mode(mode)
        host = wandb_hosts()[0]
        if resolved == "online" and not host_reachable(host, probe_timeout):
            rank_zero_warn(
                f"W&B: {host} cannot be reached; this run is logged offline. "
                "Upload it later with `wandb sync` (see docs/platform.md)."
            )
            resolved = "offline"
        # Absolute: W&B's background service outlives a run and resolves relative folders
        # against the directory it was started in, not the current one.
        save_dir = str(Path(save_dir).absolute())
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        super().__init__(
            name=name,
            save_dir=save_dir,
            project=project or os.environ.get("WANDB_PROJECT") or "vapl",
            id=id,
            log_model=log_model if resolved == "online" else False,
            prefix=prefix,
            group=group,
            tags=list(tags) if tags else None,
            entity=entity,
            notes=notes,
            mode=resolved,
            settings=wandb.Settings(init_timeout=init_timeout),
        )
        # Lightning passes anonymous=None, which W&B >= 0.19 warns has no effect: leave it out.
        self._wandb_init.pop("anonymous", None)
        self.mode: WandbMode = resolved

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        """The W&B run, started on first use. If an online start fails the run is logged offline;
        if an offline start fails too (say W&B's background service does not start on a loaded
        machine), W&B is disabled for this run with a warning: training and the CSV log go on."""
        start = WandbLogger.experiment.fget  # type: ignore[attr-defined]
        while self._experiment is None:
            mode = self._wandb_init.get("mode")
            try:
                return start(self)
            except Exception as error:  # noqa: BLE001 - a W&B failure must not stop training
                if mode == "disabled":
                    raise
                fallback = "offline" if mode == "online" else "disabled"
                rank_zero_warn(f"W&B: the {mode} run did not start ({error}); W&B is {fallback}.")
                self._wandb_init["mode"] = self.mode = fallback
                self._log_model = False
                self._experiment = None
        return self._experiment


# ----- filling names from the resolved CLI config -------------------------------------------------
def _class_path(entry: Any) -> str | None:
    if isinstance(entry, str):
        return entry
    return getattr(entry, "class_path", None) if entry is not None else None


def _is_wandb_logger(class_path: str | None) -> bool:
    if not class_path:
        return False
    if class_path.rsplit(".", 1)[-1] in ("WandbLogger", "WandbRunLogger"):
        return True
    try:
        module_name, _, class_name = class_path.rpartition(".")
        module = __import__(module_name, fromlist=[class_name])
        return issubclass(getattr(module, class_name), WandbLogger)
    except (ImportError, AttributeError, TypeError, ValueError):
        return False


def _as_list(value: Any) -> list[Any]:
    if value is None or isinstance(value, bool):
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _is_csv_logger(class_path: str | None) -> bool:
    return bool(class_path) and class_path.rsplit(".", 1)[-1] == "CSVLogger"


def fill_run_names(config: Any) -> RunIdentity | None:
    """Name the loggers of a resolved CLI config (a jsonargparse Namespace) after the run.

    * every W&B logger without a name gets the run name (``METHOD_DATASET_seedSEED``), and
      vapl's :class:`WandbRunLogger` also the data set as group and the method as tags;
    * every CSV logger with ``name: null`` gets ``DATASET/RUN_NAME`` (so its folder is
      ``save_dir/DATASET/RUN_NAME/version_N``);
    * with a W&B logger, the :class:`~vapl.training.callbacks.WandbDashboard` callback is added unless one
      is configured.

    Returns the run's identity, or ``None`` when no logger needed it (then nothing changes).
    """
    trainer = config.trainer
    entries = _as_list(trainer.logger)
    wandb_entries = [e for e in entries if _is_wandb_logger(_class_path(e))]
    csv_entries = [
        e for e in entries if _is_csv_logger(_class_path(e)) and e.init_args.get("name") is None
    ]
    if not wandb_entries and not csv_entries:
        return None
    identity = identity_from_config(config)
    for entry in csv_entries:
        entry.init_args.name = f"{identity.dataset}/{identity.name}"
    for entry in wandb_entries:
        init_args = entry.init_args
        if init_args.get("name") is None:
            init_args.name = identity.name
        if _class_path(entry) == WANDB_RUN_LOGGER:
            if init_args.get("group") is None:
                init_args.group = identity.dataset
            if not init_args.get("tags"):
                init_args.tags = [*identity.tags, identity.dataset]
    callbacks = _as_list(trainer.callbacks)
    if wandb_entries and not any(_class_path(c) == DASHBOARD_CALLBACK for c in callbacks):
        from jsonargparse import Namespace

        callbacks.append(Namespace(class_path=DASHBOARD_CALLBACK, init_args=Namespace()))
        trainer.callbacks = callbacks
    return identity
