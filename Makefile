# lorapack developer targets. Everything installs what it needs: `make test` and `make demo` work
# on a fresh machine with Python 3.11+, Go 1.26.6 or newer and access to PyPI and the Go module proxy.
# Build caches (Go binaries, the vLLM CPU venv, test artifacts) live outside the repository in
# $(LORAPACK_CACHE) (default ~/.cache/lorapack); the project venv is .venv/.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export LORAPACK_CACHE ?= $(HOME)/.cache/lorapack
PYTEST_ARGS ?=
ENGINE ?= double

.PHONY: help venv fmt lint typecheck test test-unit test-integration test-contract manifests \
        verify demo demo-down cluster-up cluster-down tools vllm-env artifacts bench vllm-lock clean \
        image testworld-image node-tools test-realnode

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

$(VENV)/.installed: pyproject.toml testworld/pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --no-deps -r requirements.lock
	$(VENV)/bin/pip install --quiet --no-deps -e . -e testworld
	touch $@

venv: $(VENV)/.installed  ## create .venv with the pinned dependencies

fmt: venv  ## format the code (ruff format + import sorting)
	$(VENV)/bin/ruff format operator testworld tests bench hack
	$(VENV)/bin/ruff check --select I --fix operator testworld tests bench hack

lint: venv  ## ruff lint, format check, import-layer contracts
	$(VENV)/bin/ruff check operator testworld tests bench hack
	$(VENV)/bin/ruff format --check operator testworld tests bench hack
	$(VENV)/bin/lint-imports

typecheck: venv  ## mypy --strict with the pydantic plugin
	$(VENV)/bin/mypy operator/lorapack testworld/lorapack_testworld

manifests: venv  ## regenerate crds/, the chart's crds/ and docs/api.md from the models
	$(PY) -m lorapack.api.crdgen --out crds --out charts/lorapack/crds --docs docs/api.md

verify: manifests  ## fail if generated files differ from the committed ones
	@git diff --exit-code -- crds charts/lorapack/crds docs/api.md \
	  || { echo "generated files are stale: run 'make manifests' and commit"; exit 1; }

tools:  ## build or reuse the Go tools (Kubernetes, etcd, kwok, helm) in the cache
	hack/build-tools.sh

vllm-env:  ## build or reuse the vLLM CPU venv in the cache
	hack/vllm-env.sh >/dev/null

artifacts: venv vllm-env  ## build or reuse the tiny model and PEFT test adapters in the cache
	$(PY) -c "from lorapack_testworld.artifacts import artifacts_dir; print(artifacts_dir())"

image: venv  ## build the operator/agent image hermetically into an OCI archive under $(LORAPACK_CACHE)/images
	hack/image/build.sh product >/dev/null

testworld-image: venv  ## build the test-world image (engine double as `vllm`), the same way
	hack/image/build.sh testworld >/dev/null

node-tools:  ## build or reuse kubelet, kube-proxy, containerd; install runc, CNI plugins, iptables
	hack/image/install-packages.sh node
	hack/realnode/build-node.sh

test-realnode: venv tools artifacts image testworld-image node-tools  ## the real-node tier (kubelet + containerd in a network namespace)
	hack/realnode/in-netns.sh env LORAPACK_REALNODE=1 $(PY) -m pytest tests/realnode $(PYTEST_ARGS)

test-unit: venv  ## fast tiers only: unit and component tests
	$(PY) -m pytest tests/unit tests/component $(PYTEST_ARGS)

test: verify lint typecheck tools artifacts image testworld-image node-tools  ## everything CI runs: checks, every tier, then the real-node tier
	LORAPACK_REQUIRE_CLUSTER=1 $(PY) -m pytest tests $(PYTEST_ARGS)
	hack/realnode/in-netns.sh env LORAPACK_REALNODE=1 $(PY) -m pytest tests/realnode -m realnode $(PYTEST_ARGS)

test-integration: venv tools artifacts  ## the integration tier (real control plane, S3 server, engines)
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

test-contract: venv artifacts  ## the engine contract suite against the double and the real vLLM
	$(PY) -m pytest tests/contract $(PYTEST_ARGS)

cluster-up: venv tools  ## start the local control plane with simulated GPU nodes
	$(PY) -m lorapack_testworld.devcluster up

cluster-down: venv  ## stop the local control plane
	$(PY) -m lorapack_testworld.devcluster down

demo: venv tools artifacts  ## the newcomer's tour (ENGINE=vllm: the real vLLM CPU engine serves the adapters)
	$(PY) -m lorapack_testworld.demo up --engine $(ENGINE)

demo-down: venv  ## stop everything the demo started
	$(PY) -m lorapack_testworld.demo down

bench: venv tools artifacts  ## run every benchmark (prints tables)
	for b in bench/[!_]*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

vllm-lock:  ## regenerate hack/vllm/requirements.lock (needs uv)
	uv pip compile hack/vllm/requirements.in --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_28 --no-header -o hack/vllm/requirements.lock

clean:  ## remove the project venv and caches inside the repo (not $(LORAPACK_CACHE))
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
