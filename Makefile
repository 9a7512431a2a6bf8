# spoor — the verbs. `make run` starts the server on built-in defaults; `make test` runs
# everything CI runs. Builds reuse a target directory outside the clone when one exists.

SHELL := /bin/bash
CARGO ?= cargo
export CARGO_TARGET_DIR ?= $(HOME)/.cache/spoor-target
VENV ?= $(HOME)/.cache/spoor-venv
PYTHON := $(VENV)/bin/python
PY_REQUIREMENTS := tests/python/requirements.txt
PY_STAMP := $(VENV)/.installed-$(shell sha1sum $(PY_REQUIREMENTS) 2>/dev/null | cut -c1-12)

.PHONY: image image-tools build release run run-collector test test-rust test-python lint fmt bench bench-ingest bench-search bench-collector bench-cluster fuzz fuzz-tools fuzz-smoke clean-data packages deb rpm package-tools lint-packages

build:
	$(CARGO) build --bins

release:
	$(CARGO) build --release --bins

## The server on the embedded defaults: data under ./data, loopback ports.
run:
	$(CARGO) run --release --bin spoor-server

## The collector on its built-in default, forwarding to `make run`'s server.
run-collector:
	$(CARGO) run --release --bin spoor-collector

test: test-rust fuzz-smoke test-python

test-rust:
	$(CARGO) build --bins
	$(CARGO) test --lib --bins --tests --features test-util

$(PY_STAMP): $(PY_REQUIREMENTS)
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r $(PY_REQUIREMENTS)
	rm -f $(VENV)/.installed-*
	touch $@

test-python: $(PY_STAMP) image-tools
	$(CARGO) build --bins
	TEST_SPOOR_BIN_DIR=$(CARGO_TARGET_DIR)/debug $(PYTHON) -m pytest -q tests/python

## spoor-server and spoor-collector as .deb and .rpm, all in $(PKG_DIR).
PKG_DIR := $(CARGO_TARGET_DIR)/packages
PKG_STAGE := $(PKG_DIR)/stage
PKG_VARIANTS := server collector
# `make deb rpm PKG_VERSION=0.1.1` packages the same build as another version, for
# upgrade tests; by default the version is Cargo.toml's.
PKG_VERSION ?=
APT_GET := DEBIAN_FRONTEND=noninteractive apt-get -y -q

packages: deb rpm

## The packaging tools, and strace for the system call filter test (test_packaging.py).
package-tools:
	command -v cargo-deb >/dev/null || $(CARGO) install cargo-deb --locked
	command -v cargo-generate-rpm >/dev/null || $(CARGO) install cargo-generate-rpm --locked
	command -v lintian >/dev/null && command -v rpmlint >/dev/null && command -v rpm >/dev/null \
		&& command -v strace >/dev/null \
		|| { $(APT_GET) update && $(APT_GET) install --no-install-recommends lintian rpmlint rpm strace; }

deb: package-tools
	$(CARGO) build --release --bin spoor-server --bin spoor-collector
	mkdir -p $(PKG_DIR)
	for variant in $(PKG_VARIANTS); do \
		$(CARGO) deb --no-build --strip --no-separate-debug-symbols --variant $$variant -o $(PKG_DIR)/ \
			$(if $(PKG_VERSION),--deb-version $(PKG_VERSION)-1) || exit 1; \
	done
	@ls -1 $(PKG_DIR)/*.deb

# cargo-generate-rpm neither strips nor compresses man pages: a stage directory shaped
# like a target dir holds both, and --target-dir points `target/release/` assets at it.
rpm: package-tools
	$(CARGO) build --release --bin spoor-server --bin spoor-collector
	mkdir -p $(PKG_STAGE)/release
	for bin in spoor-server spoor-collector; do \
		strip --strip-all -o $(PKG_STAGE)/release/$$bin $(CARGO_TARGET_DIR)/release/$$bin && \
		gzip -9nc packaging/man/$$bin.1 > $(PKG_STAGE)/release/$$bin.1.gz || exit 1; \
	done
	for variant in $(PKG_VARIANTS); do \
		$(CARGO) generate-rpm --target-dir $(PKG_STAGE) --variant $$variant -o $(PKG_DIR)/ \
			$(if $(PKG_VERSION),--set-metadata 'version = "$(PKG_VERSION)"') || exit 1; \
	done
	@ls -1 $(PKG_DIR)/*.rpm

## lintian and rpmlint on the packages; accepted findings are listed with their reasons in
## packaging/lintian-overrides and packaging/rpmlint.toml.
lint-packages: packages
	lintian --no-cfg --fail-on error,warning $(PKG_DIR)/*.deb
	rpmlint -c packaging/rpmlint.toml $(PKG_DIR)/*.rpm

## OCI images spoor-server:<version> and spoor-collector:<version> (from scratch, non-root,
## no Docker daemon), in buildah's local storage: `buildah images`.
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)

image-tools:
	command -v buildah >/dev/null || { $(APT_GET) update && $(APT_GET) install --no-install-recommends buildah; }

image: image-tools
	$(CARGO) build --release --bin spoor-server --bin spoor-collector
	packaging/image/build-image.sh $(CARGO_TARGET_DIR)/release $(VERSION)

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --features test-util -- -D warnings

fmt:
	$(CARGO) fmt --all

## Benchmarks against a release build; figures go to docs/benchmarks.md.
bench: bench-ingest bench-search

## Ingest throughput, CPU, RSS, bytes per span, trace by ID (1M spans).
bench-ingest: release
	$(CARGO) bench --features test-util --bench server_load

## Search, tag values and TraceQL metrics latency on a store of 5M spans.
bench-search: release
	$(CARGO) bench --features test-util --bench server_search

## spoor-collector vs Rotel (the agent from the PyPI `rotel` wheel in the test venv) on the
## same load: spans/s, spans per collector CPU-second, peak RSS; then tail sampling with
## 50,000 live traces. Not part of `make bench`: it needs the Python venv.
bench-collector: release $(PY_STAMP)
	ROTEL_BIN="$${ROTEL_BIN:-$$($(PYTHON) -c 'import pathlib, rotel; print(pathlib.Path(rotel.__file__).parent / "rotel-agent")')}" \
		$(CARGO) bench --features test-util --bench collector_load

## 1, 2 and 3 spoor-servers on one bucket (moto from the test venv) behind two collectors
## balancing by trace ID: spans/s, spans per server CPU-second, trace-by-ID and search
## latency with peer fan-out. Not part of `make bench`: it needs the Python venv.
bench-cluster: release $(PY_STAMP)
	MOTO_BIN="$${MOTO_BIN:-$(VENV)/bin/moto_server}" \
		$(CARGO) bench --features test-util --bench cluster_load

## Every fuzz target under libFuzzer (cargo-fuzz) for FUZZ_SECONDS each, one after the
## other, each corpus seeded from fuzz/seeds/<target>/ (and, for traceql_parse, every query
## of the parser corpus) and kept under FUZZ_CORPUS_DIR so later runs continue from it.
## Stable toolchain: RUSTC_BOOTSTRAP, no sanitizer, optimised but with debug assertions so
## integer overflow panics as in the tests (see fuzz/Cargo.toml). Findings and recorded
## runs: docs/fuzzing.md.
FUZZ_TARGETS ?= traceql_parse otlp_proto otlp_json wal_record block_meta collector_config jaeger_thrift zipkin_json
FUZZ_SECONDS ?= 1200
FUZZ_SMOKE_RUNS ?= 20000
FUZZ_TARGET_DIR ?= $(HOME)/.cache/spoor-fuzz-target
FUZZ_CORPUS_DIR ?= $(HOME)/.cache/spoor-fuzz-corpus
FUZZ_CARGO = cd fuzz && RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR=$(FUZZ_TARGET_DIR) $(CARGO) fuzz
FUZZ_BUILD_FLAGS ?= -s none -O -a

fuzz-tools:
	command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked

fuzz: fuzz-tools $(PY_STAMP)
	$(PYTHON) fuzz/seed_corpus.py tests/data/traceql $(FUZZ_CORPUS_DIR)/traceql_parse
	for target in $(FUZZ_TARGETS); do \
		mkdir -p $(FUZZ_CORPUS_DIR)/$$target && cp fuzz/seeds/$$target/* $(FUZZ_CORPUS_DIR)/$$target/ \
		&& ($(FUZZ_CARGO) run $(FUZZ_BUILD_FLAGS) $$target $(FUZZ_CORPUS_DIR)/$$target -- \
			-max_total_time=$(FUZZ_SECONDS) -print_final_stats=1) || exit 1; \
	done

## Part of `make test`: every target over its checked-in seeds plus FUZZ_SMOKE_RUNS
## mutations. New inputs go to a scratch directory, never into fuzz/seeds.
fuzz-smoke: fuzz-tools
	$(FUZZ_CARGO) build $(FUZZ_BUILD_FLAGS)
	scratch=$$(mktemp -d) && for target in $(FUZZ_TARGETS); do \
		mkdir -p $$scratch/$$target \
		&& ($(FUZZ_CARGO) run $(FUZZ_BUILD_FLAGS) $$target $$scratch/$$target $(CURDIR)/fuzz/seeds/$$target -- \
			-runs=$(FUZZ_SMOKE_RUNS) -max_total_time=30 -print_final_stats=1) \
		|| { rm -rf $$scratch; exit 1; }; \
	done; rm -rf $$scratch

clean-data:
	rm -rf ./data
