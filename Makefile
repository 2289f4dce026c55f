# One command runs every check: `make test` (lint, format, types, architecture, tests).
PY ?= .venv/bin/python

.PHONY: install test lint types arch pytest demo bench soak screenshots

.venv/bin/python:
	python3 -m venv .venv
	.venv/bin/pip install --quiet --upgrade pip

install: .venv/bin/python
	.venv/bin/pip install --quiet -e '.[dev,http]'

lint:
	.venv/bin/ruff check src tests bench
	.venv/bin/ruff format --check src tests bench

types:
	.venv/bin/mypy src tests bench

arch:
	.venv/bin/lint-imports

pytest:
	.venv/bin/pytest

test: install lint types arch pytest

demo: install
	.venv/bin/credits demo

bench: install
	$(PY) bench/bench_core.py
	$(PY) bench/bench_verifier.py
	$(PY) bench/bench_http.py
	$(PY) bench/bench_sql.py

# The account page and the API reference in Debian's headless Chromium, saved as PNG
# files by the browser tests (apt-get install chromium chromium-driver).
screenshots: install
	CREDITS_SCREENSHOTS=docs/screenshots .venv/bin/pytest -q -p no:cacheprovider tests/test_browser.py

# The seeded fault simulator beyond CI's bounded run: `make soak SEEDS=5000 [STORE=sqlite]`.
SEEDS ?= 1000
STORE ?= memory
soak: install
	$(PY) tests/fault_simulator.py --seeds $(SEEDS) --store $(STORE)
