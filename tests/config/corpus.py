"""strongSwan's own test configurations (the swanctl corpus), prepared as strongSwan's test
harness prepares them, and loaded the way ``aioipsec check --swanctl-conf`` loads them.

The corpus lives in the project's read-only reference collection beside the checkout
(``../shared/reference/swanctl-corpus``); its licence note asks not to copy it into the
repository, so the tests read it there and skip, saying so, when it is absent. Each host
folder is copied to a temporary folder, its ``PH_IP_*`` placeholders are replaced as
strongSwan's ``load-testconfig`` does (every file except ``*.pem``, a host's ``...1`` name
before its plain name) and its modes are made 0600/0700 (git keeps no modes; an installed
``/etc/swanctl`` belongs to root).
"""

from __future__ import annotations

import re
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from aioipsec.config import ConfigError, load_configuration

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "reference" / "swanctl-corpus"
IKEV1_SUITES = ("ikev1", "ikev1-algs", "ikev1-multi-ca", "gcrypt-ikev1")

# The corpus README's table (strongSwan's testing/testing.conf); longer names first.
PLACEHOLDERS = {
    "PH_IP_ALICE1": "192.168.0.50", "PH_IP_ALICE": "10.1.0.10",
    "PH_IP6_ALICE1": "fec0::5", "PH_IP6_ALICE": "fec1::10",
    "PH_IP_BOB": "10.2.0.10", "PH_IPV6_BOB": "fec2::10",
    "PH_IP_CAROL1": "10.3.0.1", "PH_IP_CAROL": "192.168.0.100",
    "PH_IP6_CAROL1": "fec3::1", "PH_IP6_CAROL": "fec0::10",
    "PH_IP_DAVE1": "10.3.0.2", "PH_IP_DAVE": "192.168.0.200",
    "PH_IP6_DAVE1": "fec3::2", "PH_IP6_DAVE": "fec0::20",
    "PH_IP_MOON1": "10.1.0.1", "PH_IP_MOON": "192.168.0.1",
    "PH_IP6_MOON1": "fec1::1", "PH_IP6_MOON": "fec0::1",
    "PH_IP_SUN1": "10.2.0.1", "PH_IP_SUN": "192.168.0.2",
    "PH_IP6_SUN1": "fec2::1", "PH_IP6_SUN": "fec0::2",
    "PH_IP_VENUS": "10.1.0.20", "PH_IP6_VENUS": "fec1::20",
    "PH_IP_WINNETOU": "192.168.0.150", "PH_IP6_WINNETOU": "fec0::15",
}  # fmt: skip
_PLACEHOLDER_RE = re.compile("|".join(sorted(PLACEHOLDERS, key=len, reverse=True)))
_VERSION_1_RE = re.compile(r"^[^#\n]*\bversion\s*=\s*1\b", re.MULTILINE)


def hosts() -> list[Path]:
    """Every host folder (SUITE/SCENARIO/HOST), sorted."""
    return sorted(path.parent for path in CORPUS.glob("*/*/*/swanctl.conf"))


def is_ikev1(host: Path) -> bool:
    """The README's rule: an IKEv1 suite, or a ``*.conf`` that sets ``version = 1``."""
    if host.relative_to(CORPUS).parts[0] in IKEV1_SUITES:
        return True
    return any(_VERSION_1_RE.search(conf.read_text()) for conf in host.rglob("*.conf"))


def ikev2_hosts() -> list[Path]:
    return [host for host in hosts() if not is_ikev1(host)]


def prepare(host: Path, into: Path) -> Path:
    """A copy of ``host`` in ``into`` as the test harness installs it; its swanctl.conf."""
    target = into / "swanctl"
    shutil.copytree(host, target)
    for path in [target, *target.rglob("*")]:
        if path.is_dir():
            path.chmod(0o700)
            continue
        if path.suffix != ".pem":
            data = path.read_bytes()
            try:
                text = data.decode()
            except UnicodeDecodeError:
                text = None
            if text is not None and "PH_IP" in text:
                path.write_text(_PLACEHOLDER_RE.sub(lambda m: PLACEHOLDERS[m.group(0)], text))
        path.chmod(0o600)
    return target / "swanctl.conf"


@dataclass
class Outcome:
    host: str
    seconds: float
    error: ConfigError | None = None
    errors: tuple[ConfigError, ...] = ()

    @property
    def accepted(self) -> bool:
        return self.error is None


def load_host(host: Path, into: Path) -> Outcome:
    """Load one host as ``check`` does; a ConfigError is a refusal, anything else raises."""
    conf = prepare(host, into)
    name = str(host.relative_to(CORPUS))
    started = time.perf_counter()
    try:
        load_configuration(swanctl_path=conf)
    except ConfigError as error:
        errors = tuple(getattr(error, "errors", ()) or (error,))
        return Outcome(name, time.perf_counter() - started, error, errors)
    return Outcome(name, time.perf_counter() - started)


def refusal_key(error: ConfigError) -> str:
    """The key a refusal names, without connection/child/secret names, for counting."""
    if not error.key:
        return "(no key)"
    parts = error.key.split(".")
    if parts[0] == "connections" and len(parts) > 2:
        parts = parts[2:]
        if parts[0] == "children" and len(parts) > 2:
            parts = ["children", *parts[2:]]
    elif parts[0] == "secrets" and len(parts) > 1:
        parts = [re.sub(r"[-_].*|\d.*", "", parts[1]) or parts[1], *parts[2:]]
        parts[0] = "secrets." + parts[0]
    return ".".join(parts)


def summary(outcomes: list[Outcome]) -> tuple[int, Counter[str]]:
    """(accepted count, refusals counted by key: each host counts once per key)."""
    counter: Counter[str] = Counter()
    for outcome in outcomes:
        counter.update({refusal_key(error) for error in outcome.errors})
    return sum(outcome.accepted for outcome in outcomes), counter
