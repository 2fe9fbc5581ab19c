# Every target is one call of the project CLI (or a test/lint tool); buildspecs call these targets.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
STAGE ?= staging

.PHONY: install pipeline definition upsert run-aws test lint bench \
        registry approve reject deploy-staging deploy-prod endpoint-test endpoint-stop \
        monitor clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

pipeline: install
	$(BIN)/mlops pipeline run

definition: install
	$(BIN)/mlops pipeline definition

upsert: install
	$(BIN)/mlops pipeline upsert --target aws

run-aws: install
	$(BIN)/mlops pipeline run --target aws --wait

test: install
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/cfn-lint cloudformation/*.yml

bench: install
	$(BIN)/python -m benchmarks

clean:
	rm -rf build .mlops
