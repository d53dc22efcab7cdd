# govchain: the two commands a new user needs are `make run` and `make test`.

CARGO ?= cargo
DEVNET_DIR ?= ./devnet
VALIDATORS ?= 4

.PHONY: run test build lint fmt-check check-deps python-deps unit integration bench bench-micro soak clean

## A local consortium of $(VALIDATORS) validators with demo data, in the foreground.
run:
	$(CARGO) run --quiet -p govchain-cli -- devnet --dir $(DEVNET_DIR) --validators $(VALIDATORS)

## Everything CI checks: formatting, lints, dependency direction, all tests.
test: fmt-check lint check-deps python-deps
	GOVCHAIN_PYTHON_VENV=$(abspath $(PYTHON_VENV)) $(CARGO) test --workspace --all-targets

## The Python packages of the generated-client test (integration/python/),
## in a virtualenv; re-installed when the pins change.
PYTHON ?= python3
PYTHON_VENV ?= target/python-venv
python-deps: $(PYTHON_VENV)/.installed

$(PYTHON_VENV)/.installed: integration/python/requirements.txt
	$(PYTHON) -m venv $(PYTHON_VENV)
	$(PYTHON_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r $<
	touch $@

build:
	$(CARGO) build --workspace

fmt-check:
	$(CARGO) fmt --all -- --check

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## The consensus core and the rules stay free of I/O crates (see ARCHITECTURE.md).
check-deps:
	./scripts/check-deps.sh

unit:
	$(CARGO) test --workspace --lib --bins

integration:
	$(CARGO) test -p govchain-cli --test cluster

## The standard benchmark set (release build, a few minutes); see BENCHMARKS.md.
bench:
	$(CARGO) build --release -p govchain-cli
	for n in 4 7; do ./target/release/govchain bench --validators $$n --duration 15s --concurrency 2048 --json-out target/bench-$$n.json; done
	for n in 10 20; do ./target/release/govchain bench --validators $$n --duration 15s --concurrency 1024 --json-out target/bench-$$n.json; done
	./target/release/govchain bench --validators 4 --mode open --rate 1750 --duration 15s --json-out target/bench-4-open.json
	./target/release/govchain bench --validators 4 --duration 5s --concurrency 64 --blob-mib 64 --json-out target/bench-4-blob.json

## Criterion micro-benchmarks (benches/README.md); FILTER selects a subset.
FILTER ?=
bench-micro:
	$(CARGO) bench -p govchain-benches --bench micro -- $(FILTER)

## The long simulation: 100,000 seeds of the PBFT simulator.
soak:
	$(CARGO) run --release -p govchain-sim -- --seed-start 0 --seeds 100000

clean:
	$(CARGO) clean
	rm -rf $(DEVNET_DIR)
