"""The one marker of errors that are the user's input, not a bug in vapl.

Every error a user can fix by changing a config value, a file or a folder (a missing data root, a
bad row, a prompt of the wrong size, a file that is not a checkpoint) derives from
:class:`UserInputError`. The ``vapl`` command prints such an error's message, with the file and line
it names, and exits with status 2, without a traceback (``--debug`` or ``VAPL_DEBUG=1`` shows it).
Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserInputError(Exception):
    """Base of every error caused by the user's input; its message says what to change."""
