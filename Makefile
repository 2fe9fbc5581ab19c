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
        deploy-build deploy-staging deploy-prod invoke batch deploy-batch endpoint-test endpoint-status endpoint-stop \
        monitor deploy-infra destroy-infra clean

install: $(STAMP)

# checkov and taskcat pin old libraries (taskcat pulls moto 4 and urllib3 1), so each gets a
# venv of its own and cannot downgrade the project's.
CHECKOV := .venv-checkov/bin/checkov
TASKCAT := .venv-taskcat/bin/taskcat

$(CHECKOV):
	$(PYTHON) -m venv .venv-checkov
	.venv-checkov/bin/pip install --quiet 'checkov>=3.2,<4'

$(TASKCAT):
	$(PYTHON) -m venv .venv-taskcat
	.venv-taskcat/bin/pip install --quiet 'setuptools<82' 'taskcat>=0.9.50,<1'

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

test: lint
	$(BIN)/pytest --cov --cov-report=term

lint: install $(CHECKOV) $(TASKCAT)
	$(BIN)/ruff check .
	$(BIN)/cfn-lint cloudformation/*.yml
	$(BIN)/python -m model_deploy.pipeline_wiring cloudformation/*.yml
	$(CHECKOV) -d cloudformation --framework cloudformation --skip-download --compact --quiet
	$(TASKCAT) lint

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

invoke: install
	@test -n "$(FILE)" || { echo "usage: make invoke STAGE=staging FILE=rows.csv"; exit 2; }
	$(BIN)/mlops endpoint invoke $(STAGE) --file $(FILE)

batch: install
	@test -n "$(INPUT)" || { echo "usage: make batch INPUT=rows.csv [OUTPUT=scores.out]"; exit 2; }
	$(BIN)/mlops batch run --input $(INPUT) $(if $(OUTPUT),--output $(OUTPUT))

deploy-batch: install
	$(BIN)/mlops batch deploy

endpoint-status: install
	$(BIN)/mlops endpoint status

endpoint-stop: install
	$(BIN)/mlops endpoint stop $(STAGE)

monitor: install
	$(BIN)/mlops monitor run $(STAGE)

bench: install
	$(BIN)/python -m benchmarks

deploy-infra: install
	$(BIN)/mlops infra deploy

destroy-infra: install
	$(BIN)/mlops infra destroy

clean:
	rm -rf build .mlops
