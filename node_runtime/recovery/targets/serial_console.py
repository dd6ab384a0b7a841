"""Judging a guest's serial console: has it printed the boot marker, or a fail pattern?

Pure and platform-neutral (console bytes in, verdict out), so every target that can read
a serial console (QEMU's log file, Azure boot diagnostics) judges it by the same rules:

* The marker is a substring of the raw console bytes (``marker`` encoded as UTF-8).
* The marker wins: console text showing the marker has booted, even if a fail pattern
  shows too (in the same read).
* Otherwise a fail pattern (:data:`DEFAULT_FAIL_PATTERNS`) means the boot failed for good;
  the first pattern, in the given order, that occurs is named.
* Otherwise nothing is decided yet.

When the marker is seen, :attr:`ConsoleVerdict.console` ends with the marker's line
(however much the guest printed after it), so its :attr:`~ConsoleVerdict.excerpt` does too.
Text may be given as ``str``; it is encoded as UTF-8.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Serial-console text that means the boot has failed for good.
DEFAULT_FAIL_PATTERNS: tuple[str, ...] = ("No bootable device", "Kernel panic - not syncing")

EXCERPT_LINES = 20
#: Console bytes a :class:`ConsoleWatch` keeps for the excerpt.
TAIL_BYTES = 64 << 10

_ANSI = re.compile(rb"\x1b(\[[0-9;?]*[A-Za-z]|[()][A-Za-z0-9]|[A-Za-z=>])")


def _bytes(text: bytes | str) -> bytes:
    return text.encode() if isinstance(text, str) else bytes(text)


def excerpt(console: bytes | str, lines: int = EXCERPT_LINES) -> str:
    """The last ``lines`` non-blank lines of ``console``, without ANSI escapes or CRs."""
    text = _ANSI.sub(b"", _bytes(console)).replace(b"\r", b"").decode("utf-8", errors="replace")
    kept = [line.rstrip() for line in text.splitlines() if line.strip()][-lines:]
    return "\n".join(kept) if kept else "(no serial console output)"


@dataclass(frozen=True)
class ConsoleVerdict:
    """What the console shows so far.

    ``console`` is the text the verdict rests on: up to the end of the marker's line when
    the marker was seen, else all of it (a :class:`ConsoleWatch`: its last bytes).
    """

    marker_seen: bool = False
    failed_on: str | None = None
    console: bytes = b""

    @property
    def done(self) -> bool:
        """True once the marker or a fail pattern was seen: nothing later changes the verdict."""
        return self.marker_seen or self.failed_on is not None

    @property
    def excerpt(self) -> str:
        return excerpt(self.console)


class ConsoleWatch:
    """The same judgement over a console read piece by piece.

    Each :meth:`feed` judges the new bytes together with enough of the earlier ones that a
    marker or fail pattern split across reads is found (and each is found once it is
    complete). ``keep`` bytes of console are kept for :attr:`ConsoleVerdict.console`.
    With no ``marker`` only fail patterns are looked for.
    """

    def __init__(
        self,
        marker: str | None,
        fail_patterns: tuple[str, ...] = DEFAULT_FAIL_PATTERNS,
        *,
        keep: int = TAIL_BYTES,
    ) -> None:
        self._want = marker.encode() if marker else b""
        self._fails = [(p, p.encode()) for p in fail_patterns]
        self._overlap = max([len(self._want), *(len(b) for _, b in self._fails), 1]) - 1
        self._keep = keep
        self._window = b""  # the bytes a match may span: the last read plus the overlap before it
        self._seen = b""  # the last ``keep`` bytes before the last read, and that read

    def feed(self, chunk: bytes | str) -> ConsoleVerdict:
        """Judge the console after ``chunk`` (the bytes read since the last call)."""
        chunk = _bytes(chunk)
        self._window = (self._window[-self._overlap :] if self._overlap else b"") + chunk
        self._seen = (self._seen + chunk)[-(self._keep + len(chunk)) :]
        seen = self._seen
        if self._want and self._want in self._window:
            at = seen.find(self._want, max(0, len(seen) - len(chunk) - self._overlap))
            eol = seen.find(b"\n", at + len(self._want))
            return ConsoleVerdict(marker_seen=True, console=seen[: eol + 1 if eol >= 0 else len(seen)])
        failed = next((p for p, b in self._fails if b in self._window), None)
        return ConsoleVerdict(failed_on=failed, console=seen)


def judge(
    console: bytes | str, marker: str | None, fail_patterns: tuple[str, ...] = DEFAULT_FAIL_PATTERNS
) -> ConsoleVerdict:
    """Judge the whole console seen so far (``marker`` None or empty: fail patterns only)."""
    return ConsoleWatch(marker, fail_patterns, keep=len(console)).feed(console)
