# Lifeboat developer entry points. `make up` and `make test` work on a fresh machine.
PY ?= python3
NODE_BIN := $(CURDIR)/tools/node/node_modules/.bin
export PATH := $(NODE_BIN):$(PATH)
export LIFEBOAT_AZURITE := $(NODE_BIN)/azurite-blob

.PHONY: deps up demo test lint bench clean azure-package synth

.stamps/py: pyproject.toml
	$(PY) -m pip install -q -e '.[test]'
	@mkdir -p .stamps && touch $@

.stamps/node: tools/node/package.json
	cd tools/node && npm install --no-audit --no-fund --loglevel=error
	@mkdir -p .stamps && touch $@

# checkov (Bicep checks) in its own virtualenv: its pinned boto3/packaging/pycep-parser
# conflict with the project's dependencies. tests/azure/test_bicep_templates.py runs it.
.stamps/checkov:
	$(PY) -m venv build/checkov-venv
	build/checkov-venv/bin/pip install -q 'checkov>=3.2,<4'
	@mkdir -p .stamps && touch $@

deps: .stamps/py .stamps/node .stamps/checkov

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

clean:
	rm -rf .stamps lifeboat-demo bench/work build cdk.out
