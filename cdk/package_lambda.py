"""Build the deployment artefacts the CDK app ships as assets, without Docker or AWS calls.

``python -m cdk.package_lambda`` builds, under ``build/`` at the repository root:

``build/lambda/``
    the Lambda code: the ``shared``, ``functions`` and ``node_runtime`` packages only (no tests,
    no caches). Every Lambda function of the app uses this one asset with its own handler.
``build/layer/python/``
    the dependency layer: the runtime dependencies installed for the Lambda platform
    (``--platform manylinux2014_x86_64 --only-binary=:all: --python-version 3.13``, the
    Lambda runtime's version), minus what
    the Lambda Python runtime already provides (boto3, botocore and their dependencies).
``build/node/``
    what a replication node installs, offline, from an S3 asset: a wheel of this repository and a
    wheelhouse of its dependencies for the node's platform (Amazon Linux 2023, CPython 3.11,
    x86_64), so nodes need no access to PyPI.

Each artefact is rebuilt only when missing or when its inputs changed (a stamp file holds a hash
of the inputs): the sources for ``lambda``, the requirement list for ``layer`` and ``node``
(``node`` also hashes the sources, as it contains the repository's own wheel). ``pip`` reaches
PyPI for the dependency downloads; nothing else is fetched.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build"
LAMBDA_DIR = BUILD / "lambda"
LAYER_DIR = BUILD / "layer"
NODE_DIR = BUILD / "node"

LAMBDA_PYTHON = "3.13"  # the Lambda runtime (cdk/constructs/function.py RUNTIME)
NODE_PYTHON = "3.11"  # python3.11 on Amazon Linux 2023 nodes
PLATFORM = "manylinux2014_x86_64"

#: What the Lambda functions import (boto3 is part of the Lambda runtime; the Azure SDK is
#: imported only for Azure targets, which never run in AWS Lambda).
LAYER_REQUIREMENTS = (
    "pydantic>=2.6",
    "pynamodb>=6.0",
    "aws-lambda-powertools>=3.0",
    "blake3>=0.4",
    "zstandard>=0.22",
    "cryptography>=44",
    "argon2-cffi>=23.1",
    "PyJWT>=2.8",
    "dissect.fat>=3.13",
)

#: Distributions the Lambda runtime already ships; installing them again only adds ~25 MB.
RUNTIME_PROVIDED = (
    "boto3",
    "botocore",
    "s3transfer",
    "jmespath",
    "dateutil",
    "python_dateutil",
    "six",
    "urllib3",
)

CODE_PACKAGES = ("shared", "functions", "node_runtime")
_EXCLUDED = ("__pycache__", "*.pyc", "*.pyo", "tests", "test_*.py", "*.egg-info", ".mypy_cache")


def _digest(parts: Iterable[str | bytes]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()


def _source_files(packages: Iterable[str]) -> list[Path]:
    files = []
    for package in packages:
        for path in sorted((ROOT / package).rglob("*")):
            rel = path.relative_to(ROOT)
            if path.is_file() and not any(rel.match(p) or p in rel.parts for p in _EXCLUDED):
                files.append(path)
    return files


def _sources_digest(packages: Iterable[str]) -> str:
    files = _source_files(packages)
    return _digest(part for f in files for part in (str(f.relative_to(ROOT)), f.read_bytes()))


def _fresh(target: Path, digest: str) -> bool:
    stamp = target / ".stamp"
    return stamp.is_file() and stamp.read_text() == digest


def _stamp(target: Path, digest: str) -> None:
    (target / ".stamp").write_text(digest)


def _pip(*args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode:
        raise RuntimeError(f"pip {args[0]} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


def build_code(force: bool = False) -> Path:
    """``build/lambda``: the three runtime packages, as they are in the work tree."""
    digest = _sources_digest(CODE_PACKAGES)
    if not force and _fresh(LAMBDA_DIR, digest):
        return LAMBDA_DIR
    shutil.rmtree(LAMBDA_DIR, ignore_errors=True)
    for package in CODE_PACKAGES:
        shutil.copytree(ROOT / package, LAMBDA_DIR / package, ignore=shutil.ignore_patterns(*_EXCLUDED))
    _stamp(LAMBDA_DIR, digest)
    return LAMBDA_DIR


def build_layer(force: bool = False) -> Path:
    """``build/layer/python``: the dependencies for the Lambda platform (binary wheels only)."""
    digest = _digest((LAMBDA_PYTHON, PLATFORM, *LAYER_REQUIREMENTS, *RUNTIME_PROVIDED))
    if not force and _fresh(LAYER_DIR, digest):
        return LAYER_DIR
    shutil.rmtree(LAYER_DIR, ignore_errors=True)
    target = LAYER_DIR / "python"
    _pip(
        "install", "--target", str(target), "--platform", PLATFORM, "--only-binary=:all:",
        "--python-version", LAMBDA_PYTHON, "--implementation", "cp", "--no-compile", *LAYER_REQUIREMENTS,
    )  # fmt: skip
    for entry in list(target.iterdir()):
        dist = re.split(r"_\d", entry.name.lower().replace("-", "_").removesuffix(".py"), maxsplit=1)[0]
        if dist in RUNTIME_PROVIDED or dist == "bin":
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    for cache in target.rglob("__pycache__"):
        shutil.rmtree(cache, ignore_errors=True)
    _stamp(LAYER_DIR, digest)
    return LAYER_DIR


def _project_requirements() -> list[str]:
    import tomllib

    with (ROOT / "pyproject.toml").open("rb") as f:
        return list(tomllib.load(f)["project"]["dependencies"])


def build_node(force: bool = False) -> Path:
    """``build/node``: ``lifeboat-*.whl`` plus ``wheels/`` (its dependencies) and ``requirements.txt``."""
    requirements = _project_requirements()
    digest = _digest(
        (
            NODE_PYTHON,
            PLATFORM,
            *requirements,
            _sources_digest(("shared", "functions", "node_runtime", "cli")),
        )
    )
    if not force and _fresh(NODE_DIR, digest):
        return NODE_DIR
    shutil.rmtree(NODE_DIR, ignore_errors=True)
    wheels = NODE_DIR / "wheels"
    wheels.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        # Build from a clean copy: setuptools writes build/ and *.egg-info next to the sources.
        src = Path(tmp) / "src"
        src.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(ROOT / name, src / name)
        for package in ("shared", "functions", "node_runtime", "cli"):
            shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns(*_EXCLUDED, "build"))
        _pip("wheel", "--no-deps", "-w", str(NODE_DIR), str(src))
    _pip(
        "download", "-d", str(wheels), "--platform", PLATFORM, "--only-binary=:all:",
        "--python-version", NODE_PYTHON, "--implementation", "cp", *requirements,
    )  # fmt: skip
    (NODE_DIR / "requirements.txt").write_text("\n".join(requirements) + "\n")
    _stamp(NODE_DIR, digest)
    return NODE_DIR


def ensure(force: bool = False) -> dict[str, Path]:
    """Every artefact, rebuilt only where stale."""
    return {"lambda": build_code(force), "layer": build_layer(force), "node": build_node(force)}


def size_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    args = parser.parse_args(argv)
    for name, path in ensure(args.force).items():
        print(f"{name:7} {path.relative_to(ROOT)}  {size_mib(path):7.1f} MiB")


if __name__ == "__main__":
    main()
