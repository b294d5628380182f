"""Bad input found while reading a data set: raised at once, or skipped and counted.

A reader calls :meth:`BadInputLog.record` for every problem it can survive (an annotation row whose
matrix has the wrong size, an image file that cannot be opened). With ``on_bad_input="error"`` the
first one raises :class:`BadInputError`; with ``"skip"`` the row or file is left out, counted by
reason, and :meth:`BadInputLog.warn` reports the counts with the first few cases once reading ends.
Problems a reader cannot survive (a file with the wrong format) always raise.
"""

from __future__ import annotations

import warnings
from collections import defaultdict

from vapl.core.errors import UserInputError

ON_BAD_INPUT = ("skip", "error")

#: How many individual cases :meth:`BadInputLog.summary` lists per reason.
SHOWN_PER_REASON = 3


class BadInputError(UserInputError, ValueError):
    """Bad input that was not to be skipped; the message names the file (and row)."""


class SkippedInputWarning(UserWarning):
    """Some input was skipped; the message counts it by reason."""


def check_on_bad_input(value: str) -> str:
    if value not in ON_BAD_INPUT:
        raise ValueError(f"on_bad_input is one of {', '.join(ON_BAD_INPUT)}, got {value!r}")
    return value


class BadInputLog:
    """Counts skipped input by reason, or raises on the first problem."""

    def __init__(self, on_bad_input: str = "skip", source: str = "data") -> None:
        self.on_bad_input = check_on_bad_input(on_bad_input)
        self.source = source
        self.cases: dict[str, list[str]] = defaultdict(list)

    def record(self, reason: str, message: str) -> None:
        """Skip one row or file for ``reason``; raise instead when skipping is off."""
        if self.on_bad_input == "error":
            raise BadInputError(
                f"{message} (set on_bad_input='skip' to leave such input out and count it)"
            )
        self.cases[reason].append(message)

    @property
    def counts(self) -> dict[str, int]:
        """Number of skipped cases per reason."""
        return {reason: len(cases) for reason, cases in self.cases.items()}

    def summary(self) -> str:
        lines = [f"{self.source}: skipped {sum(self.counts.values())} bad input(s)"]
        for reason, cases in sorted(self.cases.items()):
            lines.append(f"  {reason}: {len(cases)}")
            lines += [f"    {case}" for case in cases[:SHOWN_PER_REASON]]
            if len(cases) > SHOWN_PER_REASON:
                lines.append(f"    ... and {len(cases) - SHOWN_PER_REASON} more")
        return "\n".join(lines)

    def warn(self) -> None:
        """Warn once with :meth:`summary` when anything was skipped."""
        if self.cases:
            warnings.warn(self.summary(), SkippedInputWarning, stacklevel=2)
