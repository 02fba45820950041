# The two commands a new user needs: `make demo` and `make test`.
# Both create .venv and install what they need on first use.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# The tritonserver binary and its Python backend, from the nvidia-pytriton
# wheel; installed without its dependencies beside the venv's packages.
PYTRITON := nvidia-pytriton==0.7.0

DATA ?= data/samples/afd_coldstart_sample.csv
TRAIN_DATA ?= ../shared/data/ieee_cis_train.csv.gz
# The newest finished training run: a directory under runs/ with a run.json
# (written last), by that file's modification time.
RUN ?= $(patsubst %/run.json,%,$(firstword $(shell ls -t runs/*/run.json 2>/dev/null)))
GATEWAY_URL ?= http://127.0.0.1:$(or $(PORT),8080)

.PHONY: help install install-all demo up down status test lint audit train export evaluate live rollback releases bench clean

help:
	@echo "make demo    start the stack and replay DATA=$(DATA) through it"
	@echo "make test    run the whole test suite (unit, export, integration)"
	@echo "make audit   check the installed dependencies for known vulnerabilities"
	@echo "make up / make down / make status"
	@echo "make train   train both models on TRAIN_DATA=$(TRAIN_DATA)"
	@echo "make export publish the models of RUN=<runs/dir> as new versions"
	@echo "make evaluate DATA=later.csv HISTORY=earlier.csv  published models vs a baseline"
	@echo "              [VERSIONS=\"risk_classifier=3 anomaly_autoencoder=3\"]  candidates, not the live ones"
	@echo "make live MODEL=risk_classifier VERSION=3   make a published version live"
	@echo "make rollback MODEL=risk_classifier         back to the previous live version"
	@echo "make releases                               live versions, versions on disk"
	@echo "make bench   measure Triton and the gateway, write docs/benchmarks.md"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade "pip==25.3"

# Serving: gateway, feature contract, local Triton with its onnxruntime backend.
$(VENV)/.installed-serve: pyproject.toml | $(PY)
	$(PIP) install --quiet -e '.[triton,demo]'
	$(PIP) install --quiet --no-deps --upgrade --target $(VENV)/tritonserver $(PYTRITON)
	touch $@

# Everything: also torch, tensorflow, tf2onnx and the test tools.
$(VENV)/.installed-all: pyproject.toml $(VENV)/.installed-serve
	$(PIP) install --quiet -e '.[triton,demo,train,dev]'
	touch $@

# Benchmarks: matplotlib and py-spy; bench/tools.py adds perf_analyzer and wrk.
$(VENV)/.installed-bench: pyproject.toml $(VENV)/.installed-serve
	$(PIP) install --quiet -e '.[triton,bench]'
	touch $@

install: $(VENV)/.installed-serve
install-all: $(VENV)/.installed-all

up: install
	$(PY) -m stack up

down:
	@if [ -x $(PY) ]; then $(PY) -m stack down; else echo "nothing to stop"; fi

status: install
	$(PY) -m stack status

demo: up
	$(PY) -m demo.replay --url $(GATEWAY_URL) --data $(DATA)
	@echo
	@echo "The stack is still running: gateway on $(GATEWAY_URL). Stop it with: make down"

test: install-all
	$(PY) -m pytest

# Known vulnerabilities in the installed (pinned) dependencies, with pip-audit;
# "audit skipped: <reason>" when PyPI's vulnerability service is out of reach.
audit: install-all
	$(PY) .ci/audit.py

lint: install-all
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy gateway features

train: install-all
	$(PY) -m training --data $(TRAIN_DATA) --out runs/$$(date -u +%Y%m%dT%H%M%SZ)

export: install-all
	@test -n "$(RUN)" || (echo "no training run found: make train first, or RUN=runs/<dir>"; exit 2)
	$(PY) -m export --run $(RUN) --repository model_repository --publish

# The published (live) models on DATA against a gradient-boosted baseline fitted
# on HISTORY; writes evaluations/<UTC time>/ and prints its metrics.json last.
# VERSIONS="risk_classifier=3 anomaly_autoencoder=3" scores candidates instead.
# Live versions: recorded in each config.pbtxt, logged to model_repository/RELEASES.log.
# TRITON_HTTP_URL (default http://127.0.0.1:8000) is the Triton to ask.
live: install
	@test -n "$(MODEL)" -a -n "$(VERSION)" || (echo "usage: make live MODEL=<name> VERSION=<n>"; exit 2)
	$(PY) -m export.live live --model $(MODEL) --version $(VERSION)

rollback: install
	@test -n "$(MODEL)" || (echo "usage: make rollback MODEL=<name>"; exit 2)
	$(PY) -m export.live rollback --model $(MODEL)

releases: install
	$(PY) -m export.live status

evaluate: install-all
	@test -n "$(HISTORY)" || (echo "usage: make evaluate DATA=later.csv HISTORY=earlier.csv"; exit 2)
	$(PY) -m training.evaluate_release --data $(DATA) --history $(HISTORY) \
		$(foreach v,$(VERSIONS),--version $(v)) \
		--out evaluations/$$(date -u +%Y%m%dT%H%M%SZ)

# About 10 minutes; everything on 127.0.0.1, on ports 18000-18302 and 18080.
bench: $(VENV)/.installed-bench
	$(PY) -m bench

clean: down
	rm -rf .run
