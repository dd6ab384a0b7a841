"""Build the Azure Functions deployment zip (``python -m functions.azure.package``).

Layout of the zip (what the Python worker expects at the app root)::

    function_app.py                 one line: ``from functions.azure.function_app import app``
    host.json, requirements.txt
    functions/{__init__,api,azure,embedded,recovery}/ and shared/   (the code the app imports)
    node_runtime/recovery/ (+ the package's __init__ and sources/secrets.py)   (the flow's activities)
    .python_packages/lib/site-packages/                     (dependencies, unless --no-deps)

Dependencies are installed by ``pip --target`` as manylinux x86_64 wheels for the
runtime's Python (3.11), so the zip is built the same on any machine and deployed without
a remote build (``az functionapp deployment source config-zip`` or the Flex one-deploy).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CODE = [
    "shared", "functions/__init__.py", "functions/api", "functions/azure", "functions/embedded",
    "functions/recovery", "node_runtime/__init__.py", "node_runtime/recovery",
    "node_runtime/sources/__init__.py", "node_runtime/sources/secrets.py",
]  # fmt: skip
SHIM = '"""Entry module indexed by the Functions host."""\n\nfrom functions.azure.function_app import app  # noqa: F401\n'
PYTHON_VERSION = "3.11"


def _ignore(_dir: str, names: list[str]) -> list[str]:
    return [n for n in names if n == "__pycache__" or n.endswith((".pyc", ".pyo"))]


def stage(out: Path, *, deps: bool) -> Path:
    """Lay the app out under ``out`` (emptied first); return it."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for rel in CODE:
        src = ROOT / rel
        if src.is_dir():
            shutil.copytree(src, out / rel, ignore=_ignore)
        else:
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, out / rel)
    shutil.copy2(HERE / "host.json", out / "host.json")
    shutil.copy2(HERE / "requirements.txt", out / "requirements.txt")
    (out / "function_app.py").write_text(SHIM)
    if deps:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "--target", str(out / ".python_packages/lib/site-packages"),
             "--platform", "manylinux2014_x86_64", "--implementation", "cp",
             "--python-version", PYTHON_VERSION, "--only-binary=:all:",
             "-r", str(out / "requirements.txt")],
            check=True,
        )  # fmt: skip
    return out


def make_zip(staged: Path, zip_path: Path) -> Path:
    """Zip ``staged`` deterministically (sorted names, fixed timestamps)."""
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(p for p in staged.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(str(path.relative_to(staged)), date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes())
    return zip_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build/azure/functionapp.zip")
    parser.add_argument("--stage", type=Path, default=ROOT / "build/azure/functionapp")
    parser.add_argument("--no-deps", action="store_true", help="code only (tests, remote build)")
    args = parser.parse_args(argv)
    make_zip(stage(args.stage, deps=not args.no_deps), args.out)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
