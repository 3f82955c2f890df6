# The two commands of the README: `make demo` (the main job, offline) and `make test`.
CARGO ?= cargo

.PHONY: demo up build test lint fmt

## Build, start both services, run a recursive completion offline (scripted model), stop.
demo:
	./scripts/demo.sh

## Build and start the sandbox agent and the orchestrator on localhost (Ctrl-C stops both).
up:
	./scripts/up.sh

build:
	$(CARGO) build --workspace --bins

## Every test: unit, end-to-end against the real binaries, the REPL driver's, and the Python and Go clients'.
## clients/ci-deps.sh first: the MCP test of `rlm mcp-serve` (cli/tests/mcp_serve.rs) uses clients/.venv.
test: build
	./tests/deps.sh
	./clients/ci-deps.sh
	$(CARGO) test --workspace
	cd sandbox-agent/driver && python3 -m unittest -q test_rlm_driver
	./clients/test.sh

## Formatting, clippy and the proto lint, as CI runs them.
lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	npm ci --prefix tools/buf --no-audit --no-fund
	tools/buf/node_modules/.bin/buf lint proto
