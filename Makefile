# otel-xray — entry points. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help
CARGO ?= cargo
VENV := tests/.venv
PY := $(VENV)/bin/python
RELEASE := target/release
LOCAL_LAYER := target/layer
LAYER_ZIPS := target/layer-zips

.PHONY: help setup build local-layer demo test test-rust test-e2e lint bench layer fuzz load deny

help: ## List the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

setup: ## Install what the tests need (rustup components, Python venv, Node SDK); idempotent
	@bash tests/setup.sh

build: ## Build the test tools once, release: local Lambda, sample function (the layer: local-layer)
	$(CARGO) build --release --workspace --bins --exclude otel-xray-extension --exclude otel-xray-wrapper

# The layer's binaries are the zip's (static musl, layer-build/build.sh), built once for both.
HOST_ARCH := $(if $(filter aarch64 arm64,$(shell uname -m)),arm64,x86_64)

local-layer: build ## Lay out the host architecture's layer zip binaries in target/layer (what /opt holds)
	@bash layer-build/build.sh --local $(HOST_ARCH)
	@ls -l $(LOCAL_LAYER)/extensions/otel-xray $(LOCAL_LAYER)/otel-xray-wrapper

demo: setup local-layer ## Run the layer on a local Lambda with a sample Rust function; print the X-Ray traces
	$(PY) tests/e2e/demo.py --layer $(LOCAL_LAYER) --bin-dir $(RELEASE)

test: setup local-layer ## Run every test: unit, golden, property, integration, end-to-end (builds the layer zips)
	$(CARGO) test --workspace --features otel-xray-extension/fault-injection
	@$(MAKE) --no-print-directory layer
	OTEL_XRAY_LAYER=$(abspath $(LOCAL_LAYER)) OTEL_XRAY_BIN_DIR=$(abspath $(RELEASE)) \
		OTEL_XRAY_LAYER_ZIPS=$(abspath $(LAYER_ZIPS)) OTEL_XRAY_REQUIRE_LAYER=1 \
		$(PY) -m pytest tests/e2e -q -p no:cacheprovider

test-rust: ## Only the cargo tests
	$(CARGO) test --workspace --features otel-xray-extension/fault-injection

test-e2e: local-layer ## Only the end-to-end tests (needs `make setup` once)
	OTEL_XRAY_LAYER=$(abspath $(LOCAL_LAYER)) OTEL_XRAY_BIN_DIR=$(abspath $(RELEASE)) \
		$(PY) -m pytest tests/e2e -q -p no:cacheprovider

lint: ## cargo fmt --check and clippy with warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --workspace --all-targets --features otel-xray-extension/fault-injection -- -D warnings

bench: setup local-layer ## Benchmarks: criterion (decode + translate, event context), then the extension on the local Lambda (on-demand and Managed Instances)
	$(CARGO) bench -p otel-xray-extension --bench translate
	$(CARGO) bench -p otel-xray-extension --bench event_context
	OTEL_XRAY_LAYER=$(abspath $(LOCAL_LAYER)) OTEL_XRAY_BIN_DIR=$(abspath $(RELEASE)) \
		$(PY) tests/bench/lambda_bench.py
	OTEL_XRAY_LAYER=$(abspath $(LOCAL_LAYER)) OTEL_XRAY_BIN_DIR=$(abspath $(RELEASE)) \
		$(PY) tests/bench/propagation_bench.py
	OTEL_XRAY_LAYER=$(abspath $(LOCAL_LAYER)) OTEL_XRAY_BIN_DIR=$(abspath $(RELEASE)) \
		$(PY) tests/bench/lmi_bench.py

layer: ## Build the layer zips, x86_64 and arm64, with cargo lambda (target/layer-zips/otel-xray-<arch>.zip)
	@bash layer-build/build.sh

fuzz: ## Run every fuzz target for FUZZ_SECONDS (default 60) each; table of executions and crashes
	@bash fuzz/run.sh

deny: ## cargo deny: licenses, sources, bans (and advisories where their database is reachable)
	@bash tests/tools/deny.sh

load: setup local-layer ## Bounded load test (loopback): concurrent OTLP clients + back-to-back invocations; spans/s, p50/p99, peak RSS, drops
	OTEL_XRAY_LAYER=$(abspath $(LOCAL_LAYER)) OTEL_XRAY_BIN_DIR=$(abspath $(RELEASE)) \
		$(PY) tests/load/load.py
