# Every target is one call of the project CLI (or a test/lint tool); buildspecs call these targets.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
STAGE ?= staging
TARGET ?= local
VERSION ?=

.PHONY: install pipeline definition upsert run-aws test lint bench registry approve reject \
        deploy-build deploy-staging deploy-prod endpoint-test endpoint-status endpoint-stop \
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

registry: install
	$(BIN)/mlops registry list

approve: install
	@test -n "$(VERSION)" || { echo "usage: make approve VERSION=<model package version>"; exit 2; }
	$(BIN)/mlops registry approve $(VERSION)

reject: install
	@test -n "$(VERSION)" || { echo "usage: make reject VERSION=<model package version>"; exit 2; }
	$(BIN)/mlops registry reject $(VERSION)

# The deploy pipeline's build step (CodeBuild): newest approved package -> stage configs.
deploy-build: install
	$(BIN)/python -m model_deploy.build --output-dir build/deploy

deploy-staging: install
	$(BIN)/mlops deploy staging

deploy-prod: install
	$(BIN)/mlops deploy prod

endpoint-test: install
	$(BIN)/mlops endpoint test $(STAGE) --target $(TARGET)

endpoint-status: install
	$(BIN)/mlops endpoint status

endpoint-stop: install
	$(BIN)/mlops endpoint stop $(STAGE)

monitor: install
	$(BIN)/mlops monitor run $(STAGE)

bench: install
	$(BIN)/python -m benchmarks

clean:
	rm -rf build .mlops
