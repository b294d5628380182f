"""Progress bars for long loops (reading a data set, building a cache): a tqdm bar on a terminal,
whole lines elsewhere.

Written to a file or a pipe, a tqdm bar leaves every redraw behind. :func:`progress` returns a
normal bar when its stream (standard error) is a terminal, and otherwise one that prints a plain
line when it starts, at most every :data:`LINE_INTERVAL` seconds, and when it ends. Lightning's
bars during training are :mod:`vapl.training.progress`'s.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm

#: Seconds between two progress lines when the output is not a terminal.
LINE_INTERVAL = 30.0


class LineProgress(tqdm):
    """tqdm writing whole lines (for log files and pipes), at most every ``mininterval`` seconds
    (:data:`LINE_INTERVAL` by default)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("mininterval", LINE_INTERVAL)
        kwargs["dynamic_ncols"] = False
        kwargs.setdefault("ncols", 100)
        super().__init__(*args, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> None:
        if msg == "":  # tqdm clearing the line of a bar with leave=False: nothing to clear
            return
        self.fp.write(f"{self.__str__() if msg is None else msg}\n")
        self.fp.flush()
        self._shown = self.n

    def close(self) -> None:
        """tqdm's, but ending with the final count as a line of its own (unless the last line
        showed it) and no clearing or extra newline."""
        if getattr(self, "disable", True):
            return
        final = self.n != getattr(self, "_shown", None)
        self.sp = None  # tqdm's close then neither clears the line nor adds a newline
        super().close()
        if final:
            self.display()


def progress(iterable: Iterable[Any] | None = None, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, **kwargs)`` on a terminal, else :class:`LineProgress` (module docstring)."""
    stream = kwargs.get("file") or sys.stderr
    isatty = getattr(stream, "isatty", None)
    bar = tqdm if callable(isatty) and isatty() else LineProgress
    return bar(iterable, **kwargs)
