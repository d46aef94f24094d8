# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Each creates the virtual environment and installs the Debian packages it needs when missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEBIAN_PACKAGES := strongswan-charon strongswan-swanctl libcharon-extra-plugins \
	libstrongswan-extra-plugins libstrongswan-standard-plugins strongswan-pki \
	iperf3 nftables tcpdump tshark iproute2 iputils-ping

.PHONY: test demo lint format bench debian-deps venv clean selftest

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# Install the Debian packages only when one of them is missing (dpkg -s is quick).
debian-deps:
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

test: venv debian-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q

demo: venv debian-deps
	$(PY) -m aioipsec.demo

selftest: venv
	$(VENV)/bin/aioipsec selftest

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: venv debian-deps
	$(PY) -m bench.esp_micro

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
