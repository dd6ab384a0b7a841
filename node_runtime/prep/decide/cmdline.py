"""Edit kernel command lines inside boot-loader files, as text (pure).

Knows where each loader keeps them: GRUB's ``linux``/``linux16``/``linuxefi`` lines,
``GRUB_CMDLINE_LINUX`` in /etc/default/grub, syslinux/extlinux ``APPEND``, BLS ``options``,
``kernelopts=`` in grubenv (a 1024-byte block: the ``#`` padding is adjusted to keep its size)
and /etc/kernel/cmdline.
"""

from __future__ import annotations

import re
from collections.abc import Callable

Edit = Callable[[str], str]

_LINE_PATTERNS = (
    re.compile(r"^(\s*linux(?:16|efi)?\s+\S+)(.*)$"),  # grub.cfg: linux /vmlinuz-… args
    re.compile(r"^(\s*append\s+)(.*)$", re.IGNORECASE),  # extlinux/syslinux
    re.compile(r"^(options\s+)(.*)$"),  # BLS entries
    re.compile(r"^(kernelopts=)(.*)$"),  # grubenv
)
#: GRUB_CMDLINE_LINUX applies to every entry (…_DEFAULT only to the normal ones: not edited,
#: so a console is never added twice)
_QUOTED = re.compile(r'^(\s*GRUB_CMDLINE_LINUX=")([^"]*)(".*)$')
GRUBENV_SIZE = 1024
#: a root= naming a bus-specific device node (what moves between platforms)
BUS_ROOT = re.compile(r"\broot=(/dev/(?:[shv]d[a-z]+\d*|xvd[a-z]+\d*|nvme\d+n\d+(?:p\d+)?))(?=\s|$)")


def edit_cmdlines(path: str, text: str, edit: Edit) -> str:
    """``text`` with ``edit`` applied to every kernel command line it holds."""
    if path == "/etc/kernel/cmdline":
        return edit(text.strip()) + "\n"
    out = []
    for line in text.split("\n"):
        m = _QUOTED.match(line)
        if m and path == "/etc/default/grub":
            line = f"{m.group(1)}{edit(m.group(2))}{m.group(3)}"
        elif path != "/etc/default/grub":
            for pattern in _LINE_PATTERNS:
                m2 = pattern.match(line)
                if m2 and m2.group(2).strip():
                    line = f"{m2.group(1)}{' ' if pattern is _LINE_PATTERNS[0] else ''}{edit(m2.group(2).strip())}"
                    break
        out.append(line)
    result = "\n".join(out)
    return _pad_grubenv(result) if path.endswith("/grubenv") else result


def cmdlines(path: str, text: str) -> list[str]:
    """Every kernel command line in the file (what :func:`edit_cmdlines` would edit)."""
    seen: list[str] = []
    edit_cmdlines(path, text, lambda args: seen.append(args) or args)  # type: ignore[func-returns-value]
    return seen


def _pad_grubenv(text: str) -> str:
    body = text.rstrip("#")
    if not body.endswith("\n"):
        body += "\n"
    return body + "#" * max(0, GRUBENV_SIZE - len(body.encode()))


def replace_root(uuid: str) -> Edit:
    return lambda args: BUS_ROOT.sub(f"root=UUID={uuid}", args)


def add_serial_console(args: str) -> str:
    """Add ``console=tty0 console=ttyS0,115200`` unless a serial console is already named."""
    if re.search(r"\bconsole=ttyS\d", args):
        return args
    return f"{args} console=tty0 console=ttyS0,115200".strip()
