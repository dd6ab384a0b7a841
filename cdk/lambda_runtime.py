"""The Lambda runtime's Python on this machine, to run the handlers against the built layer.

``cdk/constructs/function.py`` declares the runtime (``python3.13``) and ``package_lambda``
builds the layer's binary wheels for it. To know that the layer really imports there, the
tests run every function's handler, and the handlers' own tests, under an interpreter of the
same version with only ``build/layer/python`` and ``build/lambda`` on the path, plus what the
Lambda runtime itself provides (boto3) and the test tools (``requirements/lambda-test.lock``),
in the virtualenv ``build/lambda-venv``.

``python -m cdk.lambda_runtime`` builds that virtualenv (``make deps`` does).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

from cdk.package_lambda import BUILD, LAMBDA_DIR, LAMBDA_PYTHON, LAYER_DIR, ROOT, _digest, _fresh, _stamp

VENV = BUILD / "lambda-venv"
LOCK = ROOT / "requirements" / "lambda-test.lock"
#: where an interpreter of the runtime's version is looked for, after $LIFEBOAT_LAMBDA_PYTHON
CANDIDATES = (
    f"/root/.pyenv/versions/{LAMBDA_PYTHON}.*/bin/python{LAMBDA_PYTHON}",
    f"/usr/local/bin/python{LAMBDA_PYTHON}",
    f"/usr/bin/python{LAMBDA_PYTHON}",
)


class RuntimeMissingError(RuntimeError):
    """No interpreter of the Lambda runtime's version is on this machine."""


def _version(python: str) -> str | None:
    try:
        done = subprocess.run(
            [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def interpreter() -> str:
    """A CPython of exactly the Lambda runtime's minor version, or :class:`RuntimeMissingError`."""
    wanted = [os.environ.get("LIFEBOAT_LAMBDA_PYTHON", "")]
    wanted += [p for pattern in CANDIDATES for p in sorted(glob.glob(pattern), reverse=True)]
    wanted.append(shutil.which(f"python{LAMBDA_PYTHON}") or "")
    for python in filter(None, wanted):
        if _version(python) == LAMBDA_PYTHON:
            return python
    raise RuntimeMissingError(
        f"no Python {LAMBDA_PYTHON} (the Lambda runtime cdk declares) on this machine: "
        f"set LIFEBOAT_LAMBDA_PYTHON to one; looked in {', '.join(CANDIDATES)} and PATH"
    )


def python() -> Path:
    return VENV / "bin" / "python"


def build_venv(force: bool = False) -> Path:
    """``build/lambda-venv``: the runtime's Python with the locked test tools and boto3 only."""
    base = interpreter()
    digest = _digest((base, LAMBDA_PYTHON, LOCK.read_bytes()))
    if not force and _fresh(VENV, digest):
        return VENV
    shutil.rmtree(VENV, ignore_errors=True)
    subprocess.run([base, "-m", "venv", str(VENV)], check=True)
    subprocess.run(
        [str(python()), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--require-hashes",
         "-r", str(LOCK)],
        check=True,
    )  # fmt: skip
    _stamp(VENV, digest)
    return VENV


def environment() -> dict[str, str]:
    """A Lambda-like environment: the layer first, then the code; nothing of this process's path."""
    keep = ("PATH", "HOME", "LANG", "TMPDIR", "LIBGUESTFS_BACKEND", "LIBGUESTFS_BACKEND_SETTINGS")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.update(
        PYTHONPATH=f"{LAYER_DIR / 'python'}{os.pathsep}{LAMBDA_DIR}",
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONNOUSERSITE="1",
        AWS_DEFAULT_REGION="us-east-1",
    )
    return env


if __name__ == "__main__":
    print(build_venv("--force" in sys.argv[1:]))
