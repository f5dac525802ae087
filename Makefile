# spakky-outbox workspace. `make help` lists the targets.
.DEFAULT_GOAL := help
UV ?= python3 -m uv
PYTEST_ARGS ?=
# Parallel pytest workers: most tests wait on servers, leases and relay processes,
# so three share two cores well. TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 3

.PHONY: help uv setup demo test lint typecheck unasync bench screenshots trace new-backend docs

help: ## Show the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

uv: ## Install uv when missing
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet uv

setup: uv ## Create .venv with every package of the workspace (locked versions)
	@$(UV) sync --frozen --all-packages --quiet

demo: setup ## Run the example orders service: use cases write orders, the relay delivers events
	@$(UV) run --frozen python -m examples.orders

test: setup ## Run every test (real PostgreSQL, MariaDB, Redis, RabbitMQ where reachable)
	@$(UV) run --frozen pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

docs: setup ## Copy each file the docs include into its code block again (see docs/contributing.md)
	@$(UV) run --frozen python -m tests.docs.sync

lint: setup typecheck ## ruff, pyright (strict), sync twins up to date, actionlint on the workflows, shellcheck on .ci/run
	@$(UV) run --frozen ruff check .
	@$(UV) run --frozen python tools/unasync.py --check
	@$(UV) run --frozen actionlint
	@$(UV) run --frozen shellcheck .ci/run

typecheck: setup ## pyright in strict mode over the packages
	@$(UV) run --frozen pyright

unasync: setup ## Regenerate every sync twin (sync_*.py) from its async source (async_*.py)
	@$(UV) run --frozen python tools/unasync.py

bench: setup ## Benchmarks: ours beside spakky-outbox 8.5.0 (PostgreSQL, Redis, relay processes); table, JSON and plots in docs/benchmarks/
	@$(UV) run --frozen python -m benchmarks.run

screenshots: setup ## Run the console's browser tests and keep their screenshots in docs/images/console
	@SPAKKY_OUTBOX_CONSOLE_SCREENSHOTS=docs/images/console $(UV) run --frozen pytest -n 0 -q tests/console/test_browser.py

trace: setup ## Run the tracing test (PostgreSQL, relay, RabbitMQ) and keep the span tree it collected in docs/traces
	@mkdir -p docs/traces
	@SPAKKY_OUTBOX_TRACE_OUTPUT=docs/traces/commit-to-broker.txt $(UV) run --frozen pytest -n 0 -q tests/e2e/test_tracing.py

new-backend: setup ## Create packages/spakky-outbox-$(NAME), a storage that passes the suite (NAME=acme)
	@test -n "$(NAME)" || { echo "usage: make new-backend NAME=acme"; exit 2; }
	@$(UV) run --frozen spakky-outbox new-backend $(NAME) --into packages
	@$(UV) lock --quiet
	@$(UV) sync --frozen --all-packages --quiet
