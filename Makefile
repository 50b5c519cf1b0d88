# The commands people and CI both run. `make test` does every set-up step itself:
# it installs the workspace and the npm test peers when they are missing, and runs the
# suite inside a D-Bus session with an unlocked gnome-keyring when one can be started,
# so the keyring tests run against a real Secret Service.
MEMBERS := packages/funnel-tokenstore packages/funnel-auth packages/funnel-transports packages/funnel-proxy apps/server
export UV_PYTHON_DOWNLOADS := never

.PHONY: install lint format typecheck test build bench bench-search clean

install:
	uv sync --locked
	npm ci --prefix tools --no-audit --no-fund

tools/node_modules/.package-lock.json:
	npm ci --prefix tools --no-audit --no-fund

lint:
	uv run --locked ruff check .
	uv run --locked ruff format --check .

format:
	uv run ruff check --fix .
	uv run ruff format .

typecheck:
	@set -e; for m in $(MEMBERS); do echo "mypy $$m"; uv run --locked mypy $$m/src $$(test -d $$m/tests && echo $$m/tests); done
	uv run --locked mypy tests $$(test -d tools/bench && echo tools/bench)

test: tools/node_modules/.package-lock.json
	uv sync --locked
	bash tools/with-keyring.sh uv run --locked pytest $(PYTEST_ARGS)

build:
	uv build --all-packages --out-dir dist

bench:
	uv run --locked python tools/bench/run.py

clean:
	rm -rf dist .mypy_cache .ruff_cache .pytest_cache

# Discovery search quality (labelled dev and held-out sets, beside a plain BM25) and speed
# at 5,000 tools: tools/bench/search/evaluate.py --help for the options.
bench-search:
	uv run --locked python tools/bench/search/evaluate.py --ablate
