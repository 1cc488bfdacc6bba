# The front door. `make help` lists the targets; `make demo` and `make test` work on a fresh
# Debian/Ubuntu machine as root: they install and start what they need first.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV := .venv
PY := $(VENV)/bin/python
# The venv's tools (ansible, molecule, pytest) first; molecule and ansible call each other by name.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
REPORTS := reports

.PHONY: help setup system-packages platform lint test unit image-test molecule e2e demo bench clean \
	stand-in-up stand-in-down stand-in-status push

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z0-9-]+:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

system-packages:
	@bash scripts/install-system-packages.sh

$(VENV)/.installed: requirements.txt requirements-deploy.txt django_app/requirements.txt | system-packages
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -m pip install --quiet --requirement requirements.txt --requirement django_app/requirements.txt
	@touch $@

platform: $(VENV)/.installed ## Start the Docker engine, PostgreSQL and the registry; build base images
	@$(PY) -m deploykit platform-up

setup: system-packages $(VENV)/.installed platform ## Install and start everything the other targets need

# checkov pins its own, older boto3, botocore and packaging: installed into .venv it would
# downgrade the versions ansible-core, the AWS collections and ansible-lint are pinned with, so
# it has a venv of its own (under the git-ignored cache), with checkov itself pinned here.
CHECKOV_VERSION := 3.3.30
CHECKOV_VENV := .cache/venv-checkov
CHECKOV := $(CHECKOV_VENV)/bin/checkov

$(CHECKOV_VENV)/.installed-$(CHECKOV_VERSION):
	@test -x $(CHECKOV_VENV)/bin/python || python3 -m venv $(CHECKOV_VENV)
	@$(CHECKOV_VENV)/bin/python -m pip install --quiet checkov==$(CHECKOV_VERSION)
	@touch $@

lint: $(VENV)/.installed $(CHECKOV_VENV)/.installed-$(CHECKOV_VERSION) ## yamllint, ansible-lint, ruff, shellcheck, Django's deploy checks, IAM policies (parliament), IaC scan (checkov)
	yamllint --strict .
	ansible-lint
	ruff check .
	ruff format --check .
	shellcheck scripts/*.sh .ci/run
	@$(PY) -m deploykit.codebuild validate buildspec.yml
	@$(PY) -m deploykit.codebuild validate buildspec-deploy.yml
	@$(PY) -m deploykit check-deploy
	@$(PY) -m deploykit.iam_lint
	@$(CHECKOV) --config-file .checkov.yml && echo "checkov: no finding beyond .checkov.yml's skips and baseline"

unit: setup ## Python and Django tests (real PostgreSQL), JUnit under reports/
	pytest -m "not docker" --numprocesses auto --dist loadfile --junitxml=$(REPORTS)/junit-unit.xml tests django_app/tests

image-test: setup ## Docker-backed tests: app image, platform, AWS stand-in, inventories, provisioning
	pytest -m "docker and not e2e" --junitxml=$(REPORTS)/junit-image.xml tests

molecule: setup ## Every Molecule scenario on Debian 12 and 13, side by side (logs: reports/molecule/)
	DEPLOYKIT_APT_PROXY=http://172.30.0.1:3142 $(PY) -m deploykit.molecule_matrix

e2e: setup ## End to end on the AWS stand-in: rollouts, failures, rollback, lock, secrets, demo
	pytest -m e2e --junitxml=$(REPORTS)/junit-e2e.xml tests

test: setup lint unit image-test molecule e2e ## Everything: lint, unit, image, Molecule and end-to-end tests

demo: setup ## The whole pipeline: stand-in, git push, lint, test, build, deploy to 3 hosts, the HTTPS address
	@$(PY) -m deploykit demo

bench: setup ## Benchmarks: reports/bench.json and docs/benchmarks.md
	@$(PY) -m deploykit bench

STANDIN_HOSTS ?= 3
STANDIN_DISTRO ?= mixed

stand-in-up: platform ## Start the local AWS stand-in: moto and EC2 hosts (STANDIN_HOSTS, STANDIN_DISTRO)
	@$(PY) -m deploykit.standin up --hosts $(STANDIN_HOSTS) --distro $(STANDIN_DISTRO)

stand-in-down: $(VENV)/.installed ## Remove the stand-in's hosts, their volumes and moto
	@$(PY) -m deploykit.standin down

stand-in-status: $(VENV)/.installed ## moto and each stand-in host: container, address, instance, SSH
	@$(PY) -m deploykit.standin status

push: stand-in-up ## Push this commit to the local remote's main: the hook builds and deploys it
	@$(PY) -m deploykit push

clean: ## Remove the stand-in, reports and caches (leaves the engine, images and registry)
	-@$(PY) -m deploykit.standin down 2>/dev/null || true
	rm -rf $(REPORTS) .cache $(VENV)
