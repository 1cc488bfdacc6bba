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

.PHONY: help setup system-packages platform lint test unit image-test molecule demo bench clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

system-packages:
	@bash scripts/install-system-packages.sh

$(VENV)/.installed: requirements.txt django_app/requirements.txt | system-packages
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -m pip install --quiet --requirement requirements.txt --requirement django_app/requirements.txt
	@touch $@

platform: $(VENV)/.installed ## Start the Docker engine, PostgreSQL and the registry; build base images
	@$(PY) -m deploykit platform-up

setup: system-packages $(VENV)/.installed platform ## Install and start everything the other targets need

lint: $(VENV)/.installed ## yamllint, ansible-lint, ruff, shellcheck, Django's deploy checks
	yamllint --strict .
	ansible-lint
	ruff check .
	ruff format --check .
	shellcheck scripts/*.sh .ci/run
	@$(PY) -m deploykit check-deploy

unit: setup ## Python and Django tests (real PostgreSQL), JUnit under reports/
	pytest -m "not docker" --junitxml=$(REPORTS)/junit-unit.xml tests django_app/tests

image-test: setup ## The app image: non-root, read-only, health, missing secret, database down
	pytest -m docker --junitxml=$(REPORTS)/junit-image.xml tests

molecule: setup ## Every Molecule scenario (molecule test --all)
	molecule test --all

test: setup lint unit image-test molecule ## Everything: lint, unit, image and Molecule tests

demo: setup ## Build the app, run it with PostgreSQL, print the URL
	@$(PY) -m deploykit demo

bench: setup ## Benchmarks: reports/bench.json and docs/benchmarks.md
	@$(PY) -m deploykit bench

clean: ## Remove the demo container, reports and caches (leaves the engine and images)
	-@$(PY) -m deploykit demo --down 2>/dev/null || true
	rm -rf $(REPORTS) .cache $(VENV)
