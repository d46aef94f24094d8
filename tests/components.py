"""The real components the tests drive, and what a test does when one is missing.

``make test`` installs every component named here (``make debian-deps``; root and TUN come
with the machine CI runs on). A test that needs one says so with ``require_component(name,
...)`` inside the test or fixture, or with the marker ``@pytest.mark.needs(name, ...)``
(handled in ``tests/conftest.py``), never with an ad-hoc ``skipif``.

Where a component is missing the test is skipped with a reason that names it and says how to
get it (``pytest -rs`` lists them). Under ``CI=true`` the same test fails instead: in CI the
Makefile has installed everything, so a missing component means the run would otherwise stay
green without testing what the docs claim.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass

import pytest

# Debian's strongswan-charon puts the daemon here (the interop harness starts the same file).
CHARON_BINARY = "/usr/lib/ipsec/charon"


@dataclass(frozen=True)
class Component:
    check: Callable[[], bool]
    hint: str  # how to get it


# Debian's softhsm2 installs its PKCS#11 module here.
SOFTHSM2_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
# Debian's libtpm2-pkcs11-1 (the TPM as a PKCS#11 module) and tpm2-abrmd's TCTI.
TPM2_PKCS11_MODULE = "/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so"
TABRMD_TCTI = "/usr/lib/x86_64-linux-gnu/libtss2-tcti-tabrmd.so.0"


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _tool(name: str) -> Callable[[], bool]:
    return lambda: shutil.which(name) is not None


_DEBIAN = "Debian package {}; `make debian-deps` installs it"

COMPONENTS: dict[str, Component] = {
    "root": Component(lambda: os.geteuid() == 0, "run the tests as root (network namespaces)"),
    "tun": Component(lambda: os.path.exists("/dev/net/tun"), "a kernel with /dev/net/tun"),
    "charon": Component(lambda: os.path.exists(CHARON_BINARY), _DEBIAN.format("strongswan-charon")),
    "swanctl": Component(_tool("swanctl"), _DEBIAN.format("strongswan-swanctl")),
    "pki": Component(_tool("pki"), _DEBIAN.format("strongswan-pki")),
    "openssl": Component(_tool("openssl"), _DEBIAN.format("openssl")),
    "tshark": Component(_tool("tshark"), _DEBIAN.format("tshark")),
    "tcpdump": Component(_tool("tcpdump"), _DEBIAN.format("tcpdump")),
    "nftables": Component(_tool("nft"), _DEBIAN.format("nftables")),
    "iptables": Component(_tool("iptables"), _DEBIAN.format("iptables")),
    "systemd-analyze": Component(_tool("systemd-analyze"), _DEBIAN.format("systemd")),
    # strongSwan's default updown script (Debian's strongswan-libcharon, which
    # strongswan-charon depends on).
    "updown": Component(
        lambda: os.access("/usr/lib/ipsec/_updown", os.X_OK), _DEBIAN.format("strongswan-charon")
    ),
    "iperf3": Component(_tool("iperf3"), _DEBIAN.format("iperf3")),
    "ip": Component(_tool("ip"), _DEBIAN.format("iproute2")),
    "ss": Component(_tool("ss"), _DEBIAN.format("iproute2")),
    "logrotate": Component(_tool("logrotate"), _DEBIAN.format("logrotate")),
    "ping": Component(_tool("ping"), _DEBIAN.format("iputils-ping")),
    "unshare": Component(_tool("unshare"), "util-linux (essential on Debian)"),
    "setpriv": Component(_tool("setpriv"), "util-linux (essential on Debian)"),
    "softhsm2": Component(
        lambda: os.path.exists(SOFTHSM2_MODULE) and shutil.which("softhsm2-util") is not None,
        _DEBIAN.format("softhsm2"),
    ),
    "swtpm": Component(_tool("swtpm"), _DEBIAN.format("swtpm and swtpm-tools")),
    "tpm2-tools": Component(_tool("tpm2_createprimary"), _DEBIAN.format("tpm2-tools")),
    "tpm2-pkcs11": Component(
        lambda: (
            os.path.exists(TPM2_PKCS11_MODULE)
            and all(shutil.which(tool) for tool in ("tpm2_ptool", "tpm2-abrmd", "dbus-daemon"))
            and os.path.exists(TABRMD_TCTI)
        ),
        _DEBIAN.format(
            "libtpm2-pkcs11-1, libtpm2-pkcs11-tools, tpm2-abrmd, libtss2-tcti-tabrmd0 and dbus"
        ),
    ),
    "python-pkcs11": Component(
        lambda: _importable("pkcs11"), "PyPI python-pkcs11 (pip install -e '.[test]')"
    ),
    # The cluster store (tests/cluster, docs/cluster.md): Debian's redis-server, started
    # by the tests on a Unix socket, and redis-py's asyncio client.
    "redis-server": Component(_tool("redis-server"), _DEBIAN.format("redis-server")),
    "redis-py": Component(lambda: _importable("redis"), "PyPI redis (pip install -e '.[test]')"),
    # remote auth = eap-radius (tests/radius): Debian's FreeRADIUS, started by the tests with
    # a configuration they write, and pyrad, the RADIUS library of aioipsec/radius.
    "freeradius": Component(_tool("freeradius"), _DEBIAN.format("freeradius")),
    "dnsmasq": Component(_tool("dnsmasq"), _DEBIAN.format("dnsmasq-base")),
    "pyrad": Component(lambda: _importable("pyrad"), "PyPI pyrad (pip install -e '.[test]')"),
    "tpm2-pytss": Component(
        lambda: _importable("tpm2_pytss"),
        "PyPI tpm2-pytss, built against Debian's libtss2-dev (make debian-deps venv)",
    ),
}

# Names callers used before this module: an executable or path maps to its component.
_ALIASES = {"nft": "nftables", CHARON_BINARY: "charon"}


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def missing_components(*names: str) -> list[str]:
    """The named components that are not here; an unknown name is a programming error."""
    missing = []
    for name in names:
        key = _ALIASES.get(name, name)
        if key not in COMPONENTS:
            raise KeyError(f"unknown test component {name!r}: add it to tests/components.py")
        if not COMPONENTS[key].check():
            missing.append(key)
    return missing


def missing_reason(missing: list[str]) -> str:
    hints = "; ".join(f"{name}: {COMPONENTS[name].hint}" for name in missing)
    return f"missing component {', '.join(missing)} ({hints})"


def require_component(*names: str) -> None:
    """Skip the calling test (fail it under CI=true) unless every named component is here."""
    missing = missing_components(*names)
    if not missing:
        return
    reason = missing_reason(missing)
    if in_ci():
        pytest.fail(f"{reason} [CI=true: the Makefile installs it, so this is a failure]", False)
    pytest.skip(reason)
