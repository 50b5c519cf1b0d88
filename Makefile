# The commands people and CI both run. `make test` does every set-up step itself:
# it installs the workspace and the npm test peers when they are missing, and runs the
# suite inside a D-Bus session with an unlocked gnome-keyring when one can be started,
# so the keyring tests run against a real Secret Service.
#
# The development tools (pytest, mypy, ruff, the SDK and playwright as test peers) are the
# `dev` dependency group, which a plain `uv run funnel-server` does not install: every
# target here asks for it explicitly.
MEMBERS := packages/funnel-tokenstore packages/funnel-auth packages/funnel-transports packages/funnel-proxy apps/server
PACKAGES := funnel-tokenstore funnel-auth funnel-transports funnel-proxy funnel-server
export UV_PYTHON_DOWNLOADS := never
UV_RUN := uv run --locked --group dev

.PHONY: install lint format typecheck test build release-check release-check-all bench bench-search clean

install:
	uv sync --locked --group dev
	npm ci --prefix tools --no-audit --no-fund
	npm ci --prefix tools/conformance-0.1 --no-audit --no-fund
	npm ci --prefix tools/conformance-0.2 --no-audit --no-fund

tools/node_modules/.package-lock.json:
	npm ci --prefix tools --no-audit --no-fund

tools/conformance-%/node_modules/.package-lock.json:
	npm ci --prefix tools/conformance-$* --no-audit --no-fund

lint:
	$(UV_RUN) ruff check .
	$(UV_RUN) ruff format --check .
	uv lock --check

format:
	uv run --group dev ruff check --fix .
	uv run --group dev ruff format .

typecheck:
	@set -e; for m in $(MEMBERS); do echo "mypy $$m"; $(UV_RUN) mypy $$m/src $$(test -d $$m/tests && echo $$m/tests); done
	$(UV_RUN) mypy tests tools/release $$(test -d tools/bench && echo tools/bench)

test: tools/node_modules/.package-lock.json tools/conformance-0.1/node_modules/.package-lock.json tools/conformance-0.2/node_modules/.package-lock.json
	uv sync --locked --group dev
	bash tools/with-keyring.sh $(UV_RUN) pytest $(PYTEST_ARGS)

# One wheel and sdist per package, each built alone (--no-sources: the requirements on
# the sibling packages are the compatible ranges of pyproject.toml, as on PyPI).
build:
	rm -rf dist
	@set -e; for p in $(PACKAGES); do uv build --package $$p --no-sources --out-dir dist -q; done
	@ls dist

# The release workflow's steps for one package, locally (offline except PyPI): build it
# alone, install the wheel into a fresh venv with only dist/ as --find-links for the
# sibling packages, install its own `test` group, run its tests against the installed
# wheel (for funnel-server also: serve tools/list over stdio to the official SDK client).
# RELEASE_CHECK_ARGS=--reuse keeps the wheels `make build` made.
release-check: tools/node_modules/.package-lock.json
	@test -n "$(PACKAGE)" || { echo "usage: make release-check PACKAGE=<one of: $(PACKAGES)>" >&2; exit 2; }
	uv run --no-project --python '>=3.11' python tools/release/check.py $(PACKAGE) $(RELEASE_CHECK_ARGS)

# Every package, reusing one build (what .ci/run does).
release-check-all: build
	@set -e; for p in $(PACKAGES); do $(MAKE) --no-print-directory release-check PACKAGE=$$p RELEASE_CHECK_ARGS=--reuse; done

# About 2 minutes on a quiet 2-core machine; BENCH_ARGS="--quick" for a smoke run,
# "--only calls,http", "--readme" to rewrite the README's figures (tools/bench/README.md).
bench: tools/node_modules/.package-lock.json
	$(UV_RUN) python tools/bench/run.py $(BENCH_ARGS)

clean:
	rm -rf dist .mypy_cache .ruff_cache .pytest_cache

# Discovery search quality (labelled dev and held-out sets, beside a plain BM25) and speed
# at 5,000 tools: tools/bench/search/evaluate.py --help for the options.
bench-search:
	uv run --locked python tools/bench/search/evaluate.py --ablate
