"""Progress bars that suit where they are shown.

In a terminal (or a notebook) tqdm redraws one line in place. In a log — a pipe, a file, a
CI job — each redraw would be another ``\\r`` frame glued to the last; there
:class:`LogProgress` writes a plain line instead, at most every ``LOG_INTERVAL_S`` seconds,
and where the work ended, once.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from tqdm.autonotebook import tqdm as auto_tqdm  # the notebook widget in Jupyter
from tqdm.std import tqdm as std_tqdm

LOG_INTERVAL_S = 10.0


class LogProgress(std_tqdm):
    """tqdm for logs: whole lines, one per ``interval`` seconds, and one at the end."""

    def __init__(self, *args: Any, interval: float = LOG_INTERVAL_S, **kwargs: Any) -> None:
        self._interval = interval
        self._shown_at = -float("inf")
        self._shown_n: float | None = None
        super().__init__(*args, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        if msg == "":  # tqdm clearing its line: nothing to clear in a log
            return False
        now = time.monotonic()
        finished = self.total is not None and self.n >= self.total
        if self.n == self._shown_n or (now - self._shown_at < self._interval and not finished):
            return True
        self.fp.write((msg or str(self)) + "\n")
        self.fp.flush()
        self._shown_at, self._shown_n = now, self.n
        return True

    def clear(self, nolock: bool = False) -> None:
        """Lines in a log stay (tqdm would write ``\\r`` to clear one before a message)."""

    def close(self) -> None:
        """Show where the work ended, unless that line is already out; no blank line after."""
        if not self.disable:
            self._interval = 0.0
            self.display()
            self.leave = False
        super().close()


def progress_bar(**kwargs: Any) -> std_tqdm:
    """A tqdm bar (same arguments) for a terminal or notebook, a :class:`LogProgress` for a
    stream that is neither."""
    stream: TextIO = kwargs.get("file") or sys.stderr
    interactive = auto_tqdm is not std_tqdm or (hasattr(stream, "isatty") and stream.isatty())
    return (auto_tqdm if interactive else LogProgress)(**kwargs)
