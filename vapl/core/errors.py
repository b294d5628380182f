"""The one marker of errors that are the user's input, not a bug in vapl.

Every error a user can fix by changing a config value, a file or a folder (a missing data root, a
bad row, a prompt of the wrong size, a file that is not a checkpoint) derives from
:class:`UserInputError`. The ``vapl`` command prints such an error's message, with the file and line
it names, and exits with status 2, without a traceback (``--debug`` or ``VAPL_DEBUG=1`` shows it).
Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class UserInputError(Exception):
    """Base of every error caused by the user's input; its message says what to change."""


class MissingPathError(UserInputError, FileNotFoundError):
    """A file or folder the user named (in a config or on the command line) does not exist."""


def require_folder(path: str | Path, what: str = "root folder", hint: str = "") -> Path:
    """``path`` as a :class:`~pathlib.Path` if it is a folder; else raise :class:`MissingPathError`
    saying that the ``what`` does not exist (or is a file), followed by ``hint``."""
    folder = Path(path).expanduser()
    if folder.is_dir():
        return folder
    state = "is a file, not a folder" if folder.exists() else "does not exist"
    raise MissingPathError(f"the {what} {folder} {state}{hint}")
