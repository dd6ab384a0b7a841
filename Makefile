# Lifeboat developer entry points. `make up` and `make test` work on a fresh machine.
PY ?= python3
NODE_BIN := $(CURDIR)/tools/node/node_modules/.bin
export PATH := $(NODE_BIN):$(PATH)
export LIFEBOAT_AZURITE := $(NODE_BIN)/azurite-blob

.PHONY: deps lock up demo test lint bench clean azure-package synth

.stamps/py: pyproject.toml requirements/test.lock
	$(PY) -m pip install -q --require-hashes -r requirements/test.lock
	$(PY) -m pip install -q --no-deps -e .
	$(PY) tools/debian_modules.py
	@mkdir -p .stamps && touch $@

.stamps/node: tools/node/package.json
	cd tools/node && npm install --no-audit --no-fund --loglevel=error
	@mkdir -p .stamps && touch $@

# checkov (Bicep checks) in its own virtualenv: its pinned boto3/packaging/pycep-parser
# conflict with the project's dependencies. tests/azure/test_bicep_templates.py runs it.
.stamps/checkov: requirements/checkov.lock
	$(PY) -m venv build/checkov-venv
	build/checkov-venv/bin/pip install -q --require-hashes -r requirements/checkov.lock
	@mkdir -p .stamps && touch $@

# the Lambda runtime's Python (cdk/lambda_runtime.py) with the locked test tools: the handlers'
# tests run on it against the built layer (tests/cdk/test_lambda_runtime.py)
.stamps/lambda-venv: requirements/lambda-test.lock .stamps/py
	$(PY) -m cdk.lambda_runtime
	@mkdir -p .stamps && touch $@

deps: .stamps/py .stamps/node .stamps/checkov .stamps/lambda-venv

## lock: re-resolve the pinned, hashed installs (requirements/*.lock) from pyproject.toml and
## requirements/checkov.in with uv; run `make test` afterwards (the stamps see the new lock).
UV_COMPILE = uv pip compile --quiet --generate-hashes --universal --python-version 3.11
lock:
	$(PY) -m pip install -q 'uv>=0.5'
	$(UV_COMPILE) pyproject.toml --extra test -o requirements/test.lock
	$(UV_COMPILE) requirements/checkov.in -o requirements/checkov.lock
	uv pip compile --quiet --generate-hashes --python-version 3.13 requirements/lambda-test.in -o requirements/lambda-test.lock

## up: the control plane on this machine (API + scheduler + a local node) on 127.0.0.1:8080,
## state in ./lifeboat-data; the admin password is printed on first start.
up: .stamps/py
	$(PY) -m cli.main up --data-dir lifeboat-data

## demo: the data plane alone: protect a disk image, replicate incrementally, restore, verify.
demo: .stamps/py
	bash scripts/demo.sh

lint: .stamps/py
	ruff check shared node_runtime functions cli cdk tests bench
	mypy
	lint-imports

## test: lint, then every test suite (starts moto, SeaweedFS and Azurite itself).
test: deps lint
	$(PY) -m pytest -q -p no:cacheprovider

## synth: the AWS CDK app, offline (builds build/lambda, build/layer, build/node when stale) -> cdk.out/
synth: deps
	CDK_DISABLE_CLI_TELEMETRY=true JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20 cdk synth --no-notices

## azure-package: the Azure Functions deployment zip (docs/deploy-azure.md)
azure-package: .stamps/py
	$(PY) -m functions.azure.package

bench: .stamps/py
	bash bench/install_peers.sh
	$(PY) bench/run.py --size 2G --repeat 3 --out docs/BENCHMARKS.md
	$(PY) bench/recovery_bench.py --out docs/BENCHMARKS.md
	$(PY) bench/vsphere_bench.py --size 512M --repeat 3 --out docs/BENCHMARKS.md

clean:
	rm -rf .stamps lifeboat-demo bench/work build cdk.out
