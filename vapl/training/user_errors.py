"""What the ``vapl`` command prints for an error that is the user's input, instead of a traceback.

An error is the user's when it is, or was caused by, a :class:`~vapl.core.errors.UserInputError`
(a missing data root, a bad row, a prompt of the wrong size, ...), a jsonargparse argument error
(an unknown option, a value of the wrong type, a missing required value) or a ``SystemExit`` with
a message. :func:`user_error_message` returns the short message for such an error, ``None`` for
any other (a bug, which keeps its traceback). ``--debug`` or ``VAPL_DEBUG=1`` shows the traceback
of user errors too.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

from jsonargparse import ArgumentError

from vapl.core.errors import UserInputError

DEBUG_FLAG = "--debug"
DEBUG_ENV = "VAPL_DEBUG"
#: Exit status of a user error (argparse's for a bad command line).
USER_ERROR_STATUS = 2


class ConfigValueError(UserInputError, ValueError):
    """A value in the config that a class rejected when it was built (raised from its
    ``ValueError``, which may name the class's own argument)."""


def debug_requested(argv: list[str]) -> tuple[bool, list[str]]:
    """Whether tracebacks are wanted (``--debug`` in ``argv`` or ``VAPL_DEBUG`` set to a true
    value), and ``argv`` without ``--debug``."""
    stripped = [arg for arg in argv if arg != DEBUG_FLAG]
    env = os.environ.get(DEBUG_ENV, "").strip().lower()
    return len(stripped) < len(argv) or env not in ("", "0", "false", "no"), stripped


def causes(error: BaseException) -> Iterator[BaseException]:
    """``error``, then what explicitly caused it (``raise ... from``), each once. An exception
    raised while handling another (``__context__``) is not caused by it: a bug in an ``except``
    block stays a bug."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__


def _from_worker(message: str, error: BaseException) -> str:
    """The original message of an error re-raised from a DataLoader worker process, whose message
    holds the worker's traceback: the text after the last ``ExcType:`` line."""
    if "Original Traceback (most recent call last)" not in message:
        return message
    kind = type(error)
    for name in (f"{kind.__module__}.{kind.__qualname__}", kind.__qualname__):
        marker = f"\n{name}: "
        if marker in message:
            return message.rsplit(marker, 1)[1].rstrip()
    return message.rstrip().splitlines()[-1]


# ----- jsonargparse's messages ------------------------------------------------------------------
_NOISE = (
    re.compile(r"^Does not validate against any of the Union subtypes$"),
    re.compile(r"^Subtypes: "),
    re.compile(r"^Errors:$"),
    re.compile(r"^Given value type: "),
    re.compile(r"^Given value: "),
    re.compile(r"^- Expected a <class 'NoneType'>"),
    re.compile(r"^- Not a valid subclass of "),
)
_KEY = re.compile(r'^(?:- )?Parser key "([^"]+)":$')
_CLASS = re.compile(r"^(?:- )?Problem with given class_path '([^']+)':$")


def _plain_types(text: str) -> str:
    """``Expected a <class 'int'>. Got value: abc`` -> ``expected int, got 'abc'``."""
    text = re.sub(r"<class '(?:[\w.]+\.)?(\w+)'>", r"\1", text)
    return re.sub(
        r"Expected an? ([\w\[\], |]+)\. Got value: (.*)",
        lambda m: f"expected {m.group(1)}, got {m.group(2)!r}",
        text,
    )


def simplify_argument_error(message: str) -> str:
    """jsonargparse's nested message as ``key.path (class): reason``; unknown shapes are kept,
    less the lines that repeat the given value and the ``None`` alternative."""
    keys: list[str] = []
    classes: list[str] = []
    rest: list[str] = []
    for raw in message.splitlines():
        line = raw.strip()
        if not line or any(pattern.search(line) for pattern in _NOISE):
            continue
        if key := _KEY.match(line):
            if classes and len(keys) == 1 and not keys[0].endswith(".init_args"):
                keys.append("init_args")
            keys.append(key.group(1))
            continue
        if found := _CLASS.match(line):
            classes.append(found.group(1))
            continue
        rest.append(line.removeprefix("- "))
    reason = _plain_types("\n".join(rest)) or message
    where = ".".join(keys)
    if classes:
        where += f" ({classes[-1]})"
    return f"{where}: {reason}" if where else reason


# ----- the one entry point ----------------------------------------------------------------------
def user_error_message(error: BaseException, command: str = "") -> tuple[str, str] | None:
    """For a user error (module docstring): the message and a hint of where to look next (may be
    empty); ``None`` for a bug. ``command`` (``fit``, ``report``) names the help to read."""
    if isinstance(error, SystemExit):
        if not isinstance(error.code, str):
            return None
        return error.code.removeprefix(f"vapl {command}: ").removeprefix("vapl: "), ""
    for cause in causes(error):
        if isinstance(cause, ConfigValueError):
            return str(cause), "(a bug rather than a bad value? --debug shows the traceback)"
        if isinstance(cause, UserInputError):
            return _from_worker(str(cause), cause), ""
        if isinstance(cause, ArgumentError):
            return simplify_argument_error(str(cause)), f"(vapl {command} --help lists the options)"
    return None
