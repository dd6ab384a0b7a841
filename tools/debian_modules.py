"""Make Debian-only Python bindings importable from this interpreter.

``python3-libnbd`` (module ``nbd``), ``python3-guestfs`` (``guestfs``) and ``python3-hivex``
(``hivex``) exist only as Debian packages (PyPI's ``nbd`` is an unrelated project). This
links the bindings' files (not the whole dist-packages folder, which would shadow the
locked PyPI packages) into ``build/debian-py`` and points a ``.pth`` file in this
interpreter's site-packages at it. Run by ``make deps``; a missing
package is reported, not fatal (the tests that need it then fail saying which to install).
"""

from __future__ import annotations

import site
import sys
import sysconfig
from pathlib import Path

DIST = Path("/usr/lib/python3/dist-packages")
MODULES = {
    "python3-libnbd": ["nbd.py", "libnbdmod.*.so"],
    "python3-guestfs": ["guestfs.py", "libguestfsmod.*.so"],
    "python3-hivex": ["hivex", "libhivexmod.*.so"],
}


def main() -> int:
    target = Path(__file__).resolve().parent.parent / "build" / "debian-py"
    target.mkdir(parents=True, exist_ok=True)
    for package, patterns in MODULES.items():
        found = [p for pattern in patterns for p in DIST.glob(pattern)]
        if len(found) < len(patterns):
            print(f"debian_modules: {package} is not installed (apt-get install {package})", file=sys.stderr)
            continue
        for path in found:
            link = target / path.name
            link.unlink(missing_ok=True)
            link.symlink_to(path)
    site_dir = Path(sysconfig.get_paths()["purelib"])
    if not site_dir.is_dir():
        site_dir = Path(site.getusersitepackages())
    (site_dir / "lifeboat-debian-modules.pth").write_text(f"{target}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
