"""The Lambda runtime cdk declares, for real: every function's handler imports on that Python
with only the built layer and code, and the handlers' tests pass there.

Runs ``build/lambda-venv`` (cdk/lambda_runtime.py, built by ``make deps``): CPython of exactly the
runtime's version with the locked test tools and boto3 (which the Lambda runtime provides), and
``PYTHONPATH=build/layer/python:build/lambda``. A layer built for another Python (binary wheels
of another ABI), a dependency missing from the layer or a handler importing a node-only library
fails here.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from cdk import lambda_runtime
from cdk.package_lambda import LAMBDA_DIR, LAMBDA_PYTHON, LAYER_DIR, ROOT
from tests.cdk.synth import Synthesized

pytestmark = pytest.mark.ops

#: the layer's distributions, by import name (cdk/package_lambda.LAYER_REQUIREMENTS)
LAYER_MODULES = ("pydantic", "pydantic_core", "pynamodb", "aws_lambda_powertools", "blake3", "zstandard",
                 "cryptography", "argon2", "jwt", "dissect.fat")  # fmt: skip
#: the tests that call the functions' handlers (API, jobs, recovery flow, ASL) and their stores
HANDLER_TESTS = (
    "tests/functional/test_api.py",
    "tests/functional/test_workflow_jobs.py",
    "tests/functional/test_recovery_flow.py",
    "tests/functional/test_asl_vs_moto.py",
)

_PROBE = """
import importlib, json, sys
handlers, modules = json.loads(sys.argv[1]), json.loads(sys.argv[2])
files = {}
for spec in handlers:
    module, _, attr = spec.rpartition(".")
    mod = importlib.import_module(module)
    assert callable(getattr(mod, attr)), spec
    files[module] = mod.__file__
for name in modules:
    files[name] = importlib.import_module(name).__file__
print(json.dumps({"version": "%d.%d" % sys.version_info[:2], "files": files}))
"""

_RUN_TESTS = """
import importlib, sys
import pytest
for name, root in (("shared", sys.argv[1]), ("functions", sys.argv[1]), ("pydantic", sys.argv[2]),
                   ("pynamodb", sys.argv[2]), ("aws_lambda_powertools", sys.argv[2])):
    where = importlib.import_module(name).__file__
    assert where.startswith(root), f"{name} imported from {where}, not {root}"
sys.path.append(sys.argv[3])  # the tests package, last: what the layer and the code hold comes first
sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", "--import-mode=append", *sys.argv[4:]]))
"""


@pytest.fixture(scope="module")
def runtime_python(artefacts: dict[str, Path]) -> str:
    """The runtime's interpreter in its virtualenv (built here too when ``make deps`` did not)."""
    lambda_runtime.build_venv()
    return str(lambda_runtime.python())


def _functions(full: Synthesized) -> dict[str, dict[str, str]]:
    return {
        path: fn["Properties"]
        for path, fn in full.resources("AWS::Lambda::Function").items()
        if str(fn["Properties"].get("Handler", "")).startswith("functions.")
    }


def test_every_function_declares_the_runtime_the_layer_is_built_for(full: Synthesized) -> None:
    functions = _functions(full)
    assert len(functions) >= 5, sorted(functions)  # API, scheduler, recovery tasks, events
    assert {p["Runtime"] for p in functions.values()} == {f"python{LAMBDA_PYTHON}"}
    for layer in full.resources("AWS::Lambda::LayerVersion").values():
        assert layer["Properties"]["CompatibleRuntimes"] == [f"python{LAMBDA_PYTHON}"]


def test_every_handler_imports_from_the_layer_on_the_runtime(full: Synthesized, runtime_python: str) -> None:
    handlers = sorted({p["Handler"] for p in _functions(full).values()})
    done = subprocess.run(
        [runtime_python, "-P", "-c", _PROBE, json.dumps(handlers), json.dumps(LAYER_MODULES)],
        env=lambda_runtime.environment(), cwd="/", capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    assert probe["version"] == LAMBDA_PYTHON
    for spec in handlers:
        assert probe["files"][spec.rpartition(".")[0]].startswith(str(LAMBDA_DIR)), spec
    for name in LAYER_MODULES:
        assert probe["files"][name].startswith(str(LAYER_DIR / "python")), (name, probe["files"][name])


def test_the_handlers_tests_pass_on_the_runtime(artefacts: dict[str, Path], runtime_python: str) -> None:
    done = subprocess.run(
        [runtime_python, "-P", "-c", _RUN_TESTS, str(LAMBDA_DIR), str(LAYER_DIR / "python"), str(ROOT),
         *HANDLER_TESTS],
        env=lambda_runtime.environment(), cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, (done.stdout[-6000:], done.stderr[-3000:])
    assert " passed" in done.stdout and " failed" not in done.stdout, done.stdout[-2000:]
