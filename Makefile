# govchain: the two commands a new user needs are `make run` and `make test`.

CARGO ?= cargo
DEVNET_DIR ?= ./devnet
VALIDATORS ?= 4
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)

.PHONY: proto-lint proto-tools run test build lint fmt-check check-deps python-deps typescript-deps portal-deps unit integration bench bench-micro bench-redb-layout bench-catch-up soak clean fuzz fuzz-ci fuzz-build fuzz-tools

## A local consortium of $(VALIDATORS) validators with demo data, in the foreground.
## The build shows its progress (a first build takes minutes on 2 cores).
run:
	$(CARGO) build -p govchain-cli
	$(TARGET_DIR)/debug/govchain devnet --dir $(DEVNET_DIR) --validators $(VALIDATORS)

## Everything CI checks: formatting, lints, dependency direction, all tests,
## then every fuzz target for a few seconds.
test: fmt-check lint check-deps proto-lint python-deps typescript-deps portal-deps
	GOVCHAIN_PYTHON_VENV=$(abspath $(PYTHON_VENV)) $(CARGO) test --workspace --all-targets
	$(MAKE) fuzz-ci

## The Python packages of the generated-client tests (integration/python/,
## clients/python/: the govchain-client package, its runtime packages and
## setuptools to build it offline) and of the Helm chart's render test
## (helm/govchain/tests/), in a virtualenv; re-installed when the pins change.
PYTHON ?= python3
PYTHON_VENV ?= target/python-venv
python-deps: $(PYTHON_VENV)/.installed

PYTHON_REQUIREMENTS = integration/python/requirements.txt clients/python/requirements.txt helm/govchain/tests/requirements.txt
$(PYTHON_VENV)/.installed: $(PYTHON_REQUIREMENTS)
	$(PYTHON) -m venv $(PYTHON_VENV)
	$(PYTHON_VENV)/bin/python -m pip install --quiet --disable-pip-version-check $(addprefix -r ,$(PYTHON_REQUIREMENTS))
	touch $@

## The TypeScript client (clients/typescript): its npm packages exactly as
## package-lock.json pins them (npm ci, re-run when the pins change; no
## install scripts: buf's binary comes from its platform package), then
## its build: code generated from proto/ by buf and protoc-gen-es into
## src/gen/, compiled by tsc into dist/ (never committed).
TYPESCRIPT_CLIENT = clients/typescript
typescript-deps: $(TYPESCRIPT_CLIENT)/node_modules/.installed
	cd $(TYPESCRIPT_CLIENT) && npm run --silent build

## buf's binary is in an optional dependency (@bufbuild/buf-linux-x64 and
## its siblings), and npm skips an optional package whose download fails
## without failing the install: the next `buf` call then dies with ENOENT.
## So each install is checked by running buf, and retried (3 attempts).
NPM_CI = npm ci --ignore-scripts --no-audit --no-fund
define npm_install_with_buf # $(1): directory, $(2): install command, $(3): buf path
	@for attempt in 1 2 3; do \
		(cd $(1) && $(2)) && $(3) --version >/dev/null 2>&1 && exit 0; \
		echo "$(1): npm left no runnable buf ($(3)); its platform package is optional, and npm skips it when the download fails (attempt $$attempt of 3)" >&2; \
		[ $$attempt = 3 ] || sleep $$((attempt * 5)); \
	done; \
	echo "$(1): giving up: buf's platform package (@bufbuild/buf-<os>-<arch>) did not install; check npm's registry access and run the step again" >&2; \
	exit 1
endef

$(TYPESCRIPT_CLIENT)/node_modules/.installed: $(TYPESCRIPT_CLIENT)/package.json $(TYPESCRIPT_CLIENT)/package-lock.json
	$(call npm_install_with_buf,$(TYPESCRIPT_CLIENT),$(NPM_CI),$(abspath $(TYPESCRIPT_CLIENT))/node_modules/.bin/buf)
	touch $@

## The web portal's browser tests (integration/portal): playwright-core and
## axe-core as package-lock.json pins them. The browser is Debian's
## chromium (with certutil from libnss3-tools), which .ci/run installs;
## playwright never downloads one (no install scripts).
PORTAL_TESTS = integration/portal
portal-deps: $(PORTAL_TESTS)/node_modules/.installed

$(PORTAL_TESTS)/node_modules/.installed: $(PORTAL_TESTS)/package.json $(PORTAL_TESTS)/package-lock.json
	cd $(PORTAL_TESTS) && npm ci --ignore-scripts --no-audit --no-fund
	touch $@

## The proto's lint (buf STANDARD) and breaking-change check against the
## previous commit (wire and JSON compatibility). buf comes from npm
## (@bufbuild/buf ships the binary) into target/buf-tools.
## clients/typescript/package.json pins the same version for its generation.
BUF_VERSION ?= 1.75.0
BUF := $(abspath target/buf-tools/node_modules/.bin/buf)
proto-tools: $(BUF)

$(BUF):
	@mkdir -p target/buf-tools
	$(call npm_install_with_buf,target/buf-tools,npm install --silent --no-audit --no-fund --prefix . @bufbuild/buf@$(BUF_VERSION),$(BUF))

proto-lint: $(BUF)
	cd proto && $(BUF) lint
	@git rev-parse --verify -q HEAD~1 >/dev/null || { echo "proto-lint: no previous commit to check breaking changes against (a shallow clone?); fetch the history" >&2; exit 1; }
	$(BUF) breaking proto --against '.git#ref=HEAD~1,subdir=proto'

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
	./target/release/govchain bench --validators 4 --duration 15s --concurrency 2048 --submit batch --prefill 200000 --json-out target/bench-4-prefilled.json

## Criterion micro-benchmarks (benches/README.md); FILTER selects a subset.
FILTER ?=
bench-micro:
	$(CARGO) bench -p govchain-benches --bench micro -- $(FILTER)

## One checkpoint interval of state tree writes in redb, by key layout
## (benches/redb_layout.rs; BENCHMARKS.md, "the state tree's key layout").
bench-redb-layout:
	$(CARGO) bench -p govchain-benches --bench redb_layout -- --rows 350000 --per-block 240 --blocks 64 --rounds 3

## Catch-up of a node 100,000 blocks behind: state sync against block sync
## (release build, real processes; about half an hour on 2 cores).
bench-catch-up:
	$(CARGO) bench -p govchain-cli --bench catch_up -- --blocks $(or $(BLOCKS),100000)

## The long simulation: 100,000 seeds of the PBFT simulator.
soak:
	$(CARGO) run --release -p govchain-sim -- --seed-start 0 --seeds 100000

## Fuzzing (fuzz/README.md). cargo-fuzz on the stable toolchain:
## RUSTC_BOOTSTRAP lets it pass libFuzzer's -Z flags; no sanitizer (every
## govchain crate forbids unsafe code, and the build is smaller without);
## its own target dir, since the instrumented build shares nothing with the
## normal one, with 16 codegen units (a faster build, slightly slower runs).
## FUZZ_TARGETS selects targets, e.g. `make fuzz FUZZ_TARGETS=block`.
FUZZ_TARGETS ?= ed25519_differential envelope block consensus_message cid sync_block
FUZZ_CI_SECONDS ?= 15
FUZZ_SECONDS ?= 600
FUZZ_TARGET_DIR ?= $(abspath target/fuzz)
CARGO_FUZZ_VERSION ?= 0.13.2
FUZZ_CARGO = cd fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz
FUZZ_FLAGS = --sanitizer none --codegen-units 16 --target-dir $(FUZZ_TARGET_DIR)

fuzz-tools:
	@$(CARGO) fuzz --version >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked --version $(CARGO_FUZZ_VERSION)

fuzz-build: fuzz-tools
	$(FUZZ_CARGO) build $(FUZZ_FLAGS)

## Each target for FUZZ_CI_SECONDS (part of `make test`): about 100 s once
## built; the first build takes 2.5-3.5 minutes on 2 busy cores. A crash
## fails it and leaves the input in fuzz/artifacts/.
fuzz-ci: fuzz-build
	@mkdir -p $(FUZZ_TARGET_DIR)/logs
	@for target in $(FUZZ_TARGETS); do \
		log=$(FUZZ_TARGET_DIR)/logs/$$target.log; \
		echo "fuzz: $$target for $(FUZZ_CI_SECONDS) s (log: $$log)"; \
		if ($(FUZZ_CARGO) run $(FUZZ_FLAGS) $$target -- -max_total_time=$(FUZZ_CI_SECONDS) -timeout=10 -print_final_stats=1) >$$log 2>&1; then \
			grep -E '^(Done|stat::number_of_executed_units)' $$log; \
		else \
			tail -n 60 $$log; \
			echo "fuzz: $$target failed; the input is in fuzz/artifacts/$$target/"; \
			exit 1; \
		fi; \
	done

## The same, longer: FUZZ_SECONDS per target (default 10 minutes).
fuzz: fuzz-build
	@for target in $(FUZZ_TARGETS); do \
		echo "fuzz: $$target for $(FUZZ_SECONDS) s"; \
		$(FUZZ_CARGO) run $(FUZZ_FLAGS) $$target -- -max_total_time=$(FUZZ_SECONDS) -timeout=10 -print_final_stats=1 || exit 1; \
	done

clean:
	$(CARGO) clean
	rm -rf $(DEVNET_DIR)
