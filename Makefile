# `make test` is the whole suite: it installs the black-box clients into the repo (.venv,
# node_modules; both git-ignored), then runs the gates and every test.
SHELL := /bin/bash
VENV := .venv
PYTHON ?= python3

.PHONY: run test tools lint check-fmt clippy crypto-check unit bench bench-tools fuzz fuzz-build

run:
	cargo run --release

test: tools check-fmt clippy crypto-check lint
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
	cargo clippy --workspace --all-targets -- -D warnings

# One rustls crypto provider, ring: with aws-lc-rs also compiled in, rustls cannot choose a
# process default and panics at the first TLS handshake. The check passes only on cargo's
# "did not match any packages" (aws-lc-rs is nowhere in the workspace, dev and build
# dependencies and every target platform included); a tree found, or any other cargo failure,
# fails it.
crypto-check:
	@out=$$(cargo tree --workspace --target all -e features -i aws-lc-rs 2>&1); status=$$?; \
	if [ $$status -ne 0 ] && grep -q 'package ID specification `aws-lc-rs` did not match any packages' <<<"$$out"; then \
	  echo "crypto-check: aws-lc-rs is not in the dependency tree (ring is the one provider)"; \
	elif [ $$status -eq 0 ]; then \
	  echo "$$out"; echo "crypto-check: aws-lc-rs is in the dependency tree (above); rustls would have two crypto providers"; exit 1; \
	else \
	  echo "$$out"; echo "crypto-check: cargo tree failed"; exit 1; \
	fi

# `make bench` is the load benchmark (DESIGN.md section 6, issue #10): release build, echo ceiling
# and provisiond in interleaved rounds, replicas, Watch and List, figures and targets written to
# BENCHMARKS.md (generated: never edit it by hand). About 6 minutes on 2 cores, 10 with
# PostgreSQL. BENCH_ARGS passes options to bench-run, e.g.
# `make bench BENCH_ARGS="--rounds 3 --seconds 3"` (see `target/release/bench-run --help`).
# PROVISIOND_BENCH_POSTGRES_URL (environment or make variable) adds the PostgreSQL figures.
BENCH_ARGS ?=

bench: bench-tools
	cargo build --release -p provisiond -p provisiond-bench --bins
	target/release/bench-run --out BENCHMARKS.md $(BENCH_ARGS) \
	  $(if $(PROVISIOND_BENCH_POSTGRES_URL),--postgres '$(PROVISIOND_BENCH_POSTGRES_URL)')

# h2load and nghttp (Debian's nghttp2-client); the machine runs as root.
bench-tools:
	@command -v h2load >/dev/null && command -v nghttp >/dev/null || \
	  { apt-get update && apt-get install -y nghttp2-client; }

# Fuzzing (fuzz/README.md): needs the nightly toolchain and cargo-fuzz, neither of which
# `make test` needs. The seed corpus is written from the golden cases and the example policies
# first (fuzz/corpus is git-ignored). FUZZ_SECONDS=0 runs until stopped.
FUZZ_TARGET ?= check_policy
FUZZ_SECONDS ?= 300

fuzz: fuzz-build
	PROVISIOND_FUZZ_CORPUS=$(CURDIR)/fuzz/corpus/$(FUZZ_TARGET) cargo test --test golden write_fuzz_corpus -- --exact
	cargo +nightly fuzz run $(FUZZ_TARGET) fuzz/corpus/$(FUZZ_TARGET) -- \
		-max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -timeout=10

fuzz-build:
	@rustup run nightly rustc --version >/dev/null 2>&1 || \
		{ echo "make fuzz needs a nightly toolchain: rustup toolchain install nightly"; exit 1; }
	@cargo fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked
	cargo +nightly fuzz build $(FUZZ_TARGET)
