# `make test` is the whole suite: it installs the black-box clients into the repo (.venv,
# node_modules; both git-ignored), then runs the gates and every test.
SHELL := /bin/bash
VENV := .venv
PYTHON ?= python3

.PHONY: run test tools lint check-fmt clippy unit

run:
	cargo run --release

test: tools check-fmt clippy lint
	PROVISIOND_REQUIRE_CLIENTS=1 cargo test --all-targets

tools: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: tests/clients/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/clients/requirements.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

lint: node_modules/.installed
	node_modules/.bin/buf lint

check-fmt:
	cargo fmt --check

clippy:
	cargo clippy --all-targets -- -D warnings
