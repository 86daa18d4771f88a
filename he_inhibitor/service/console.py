"""Terminal output for `query` and `demo`: a progress line and aligned tables."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Status messages on stderr with elapsed time; rewritten in place on a terminal.

    Key generation and encrypted evaluation take seconds to minutes, so the
    user sees which step runs (and the refresh round trips tick by).
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr  # looked up now: sys.stderr may be replaced after import
        self.tty = self.stream.isatty()
        self.t0 = time.perf_counter()
        self._open = False

    def __call__(self, message: str) -> None:
        line = f"[{time.perf_counter() - self.t0:6.1f} s] {message}"
        if self.tty:
            self.stream.write("\r\033[K" + line)
            self._open = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def clear(self) -> None:
        """End the in-place line before other output."""
        if self._open:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._open = False


def megabytes(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def table(header: list[str], rows: list[list[str]]) -> str:
    """Left-aligned columns separated by two spaces, with a rule under the header."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
