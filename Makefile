# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Each creates the virtual environment and installs the Debian packages it needs when missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEBIAN_PACKAGES := strongswan-charon strongswan-swanctl libcharon-extra-plugins \
	libstrongswan-extra-plugins libstrongswan-standard-plugins strongswan-pki \
	iperf3 nftables iptables systemd tcpdump tshark iproute2 iputils-ping logrotate \
	softhsm2 swtpm swtpm-tools tpm2-tools libtss2-dev libtpm2-pkcs11-1 \
	libtpm2-pkcs11-tools tpm2-abrmd libtss2-tcti-tabrmd0 dbus opensc openssl \
	redis-server freeradius dnsmasq-base
# Only `make bench` needs these (a stack to compare against); installed without Recommends,
# which would pull in a kernel image.
BENCH_DEBIAN_PACKAGES := wireguard-go wireguard-tools

.PHONY: test demo demo-cluster demo-rw lint format bench fuzz debian-deps venv clean selftest

# The editable install is a plain .pth path, without an import finder (pyproject.toml,
# [tool.setuptools] package-dir).
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

# -rs: every skip is listed with its reason. Under CI=true a test whose component (charon,
# tshark, pki, nftables, iperf3, root, TUN...) is missing fails instead (tests/components.py).
# debian-deps first: tpm2-pytss (extra tokens) builds against libtss2-dev.
test: debian-deps venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(PY) -m pytest -q -rfEs --durations=25

demo: venv debian-deps
	$(PY) -m aioipsec.demo

# Three gateways, one Redis, four road warriors (one charon): a drain under a TCP transfer
# with a live count of IKE SAs per gateway, then a gateway SIGKILLed (docs/cluster.md).
demo-cluster: venv debian-deps
	$(PY) -m aioipsec.cluster.lab

# A road warrior getting a virtual IP and DNS from an aioipsec gateway (EAP-MSCHAPv2),
# pinging a LAN host, then `aioipsec pools` (docs/remote-access.md).
demo-rw: venv debian-deps
	$(PY) -m aioipsec.demo_rw

selftest: venv
	$(VENV)/bin/aioipsec selftest

# mypy reads its files and per-package strictness from pyproject.toml ([tool.mypy]).
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Side-by-side comparison with strongSwan and wireguard-go (root; 3 rounds take 40-50 minutes
# on a busy 2-core machine, about 90 s per stack and round): writes docs/performance.md.
# BENCH_ROUNDS=2 for a shorter run (the report says how many rounds it had).
# `$(PY) -m bench.esp_micro` alone is the ESP micro-benchmark (seconds, no root).
BENCH_ROUNDS ?= 3
bench: venv debian-deps
	@missing=""; for p in $(BENCH_DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) -m bench.esp_micro
	$(PY) -m bench.compare --rounds $(BENCH_ROUNDS) --ike --latency --profile --notes bench/notes.md

# Coverage-guided fuzzing (atheris) of every parser, 60 s per target; crashes land in fuzz/crashes/.
FUZZ_SECONDS ?= 60
fuzz: venv
	$(PY) -m pip install -q -e '.[fuzz]'
	$(PY) -m fuzz.run --seconds $(FUZZ_SECONDS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis .mypy_cache
