# Every target is one call of the project CLI (or a test/lint tool); buildspecs call these targets.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUNTIME_STAMP := $(VENV)/.installed-runtime
STAGE ?= staging
TARGET ?= local
VERSION ?=

.PHONY: install install-runtime install-all test-fast pipeline rehearse definition upsert run-aws test lint $(LINTERS) bench registry \
        approve reject \
        deploy-build deploy-staging deploy-prod invoke batch deploy-batch endpoint-test endpoint-status endpoint-stop \
        monitor console deploy-infra destroy-infra clean

install: $(STAMP)
install-runtime: $(RUNTIME_STAMP)
# Every environment `make test` uses (the project's, checkov's, taskcat's); independent, so
# `make -j3 install-all` fills them at once.
install-all: install $(CHECKOV) $(TASKCAT)

# uv installs the same packages as pip in a fraction of the time (parallel downloads, no build
# isolation rebuilds); it is bootstrapped into each venv by pip. Bytecode is compiled at install
# time, as pip does, so the first import of the SDK in every job process is not a compile.
UV_INSTALL = UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy
# checkov and taskcat pin old libraries (taskcat pulls moto 4 and urllib3 1), so each gets a
# venv of its own and cannot downgrade the project's.
CHECKOV := .venv-checkov/bin/checkov
TASKCAT := .venv-taskcat/bin/taskcat

define venv_with_uv
	$(PYTHON) -m venv $(1)
	$(1)/bin/pip install --quiet --disable-pip-version-check uv
endef

$(CHECKOV):
	$(call venv_with_uv,.venv-checkov)
	$(UV_INSTALL) .venv-checkov/bin/uv pip install --quiet --python .venv-checkov/bin/python 'checkov>=3.2,<4'

$(TASKCAT):
	$(call venv_with_uv,.venv-taskcat)
	$(UV_INSTALL) .venv-taskcat/bin/uv pip install --quiet --python .venv-taskcat/bin/python 'setuptools<82' 'taskcat>=0.9.50,<1'

# What the deploy build and the staging gate need (the deploy buildspecs); `install` adds the
# test and lint tools on top.
$(RUNTIME_STAMP): pyproject.toml
	$(call venv_with_uv,$(VENV))
	$(UV_INSTALL) $(BIN)/uv pip install --quiet --python $(BIN)/python -e .
	touch $(RUNTIME_STAMP)

$(STAMP): $(RUNTIME_STAMP)
	$(UV_INSTALL) $(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[dev]'
	touch $(STAMP)

pipeline: install-runtime
	$(BIN)/mlops pipeline run

# What CodeBuild runs (`make run-aws`: the aws profile, its tuning job), on this machine.
rehearse: install-runtime
	$(BIN)/mlops pipeline run --profile aws

definition: install-runtime
	$(BIN)/mlops pipeline definition

upsert: install-runtime
	$(BIN)/mlops pipeline upsert --target aws

run-aws: install-runtime
	$(BIN)/mlops pipeline run --target aws --wait

test: lint
	$(BIN)/pytest -n 2 --dist loadfile --cov --cov-report=term --durations=10

# The quick subset while working: unit and infra tests, no end-to-end runs (under 2 minutes).
test-fast: install
	$(BIN)/pytest -m "not slow"

# The checks are independent: side by side (each one's output printed whole when it ends) they
# take about half the time of one after another.
LINTERS := lint-ruff lint-cfn lint-wiring lint-checkov lint-taskcat
lint: install $(CHECKOV) $(TASKCAT)
	@$(MAKE) --no-print-directory -j5 --output-sync=target $(LINTERS)

lint-ruff: install
	$(BIN)/ruff check .

lint-cfn: install
	$(BIN)/cfn-lint cloudformation/*.yml

lint-wiring: install
	$(BIN)/python -m model_deploy.pipeline_wiring cloudformation/*.yml

lint-checkov: $(CHECKOV)
	$(CHECKOV) -d cloudformation --framework cloudformation --skip-download --compact --quiet

lint-taskcat: $(TASKCAT)
	$(TASKCAT) lint

registry: install-runtime
	$(BIN)/mlops registry list

approve: install-runtime
	@test -n "$(VERSION)" || { echo "usage: make approve VERSION=<model package version>"; exit 2; }
	$(BIN)/mlops registry approve $(VERSION)

reject: install-runtime
	@test -n "$(VERSION)" || { echo "usage: make reject VERSION=<model package version>"; exit 2; }
	$(BIN)/mlops registry reject $(VERSION)

# The deploy pipeline's build step (CodeBuild): newest approved package -> stage configs.
deploy-build: install-runtime
	$(BIN)/python -m model_deploy.build

deploy-staging: install-runtime
	$(BIN)/mlops deploy staging

deploy-prod: install-runtime
	$(BIN)/mlops deploy prod

endpoint-test: install-runtime
	$(BIN)/mlops endpoint test $(STAGE) --target $(TARGET)

invoke: install-runtime
	@test -n "$(FILE)" || { echo "usage: make invoke STAGE=staging FILE=rows.csv"; exit 2; }
	$(BIN)/mlops endpoint invoke $(STAGE) --file $(FILE)

batch: install-runtime
	@test -n "$(INPUT)" || { echo "usage: make batch INPUT=rows.csv [OUTPUT=scores.out]"; exit 2; }
	$(BIN)/mlops batch run --input $(INPUT) $(if $(OUTPUT),--output $(OUTPUT))

deploy-batch: install-runtime
	$(BIN)/mlops batch deploy

endpoint-status: install-runtime
	$(BIN)/mlops endpoint status

endpoint-stop: install-runtime
	$(BIN)/mlops endpoint stop $(STAGE)

monitor: install-runtime
	$(BIN)/mlops monitor run $(STAGE)

console: install-runtime
	$(BIN)/mlops console $(if $(PORT),--port $(PORT))

bench: install-runtime
	$(UV_INSTALL) $(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[bench]'
	$(BIN)/python -m benchmarks

deploy-infra: install-runtime
	$(BIN)/mlops infra deploy

destroy-infra: install-runtime
	$(BIN)/mlops infra destroy

clean:
	rm -rf build .mlops
