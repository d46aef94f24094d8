"""Fail closed: traffic to a loaded connection's remote selectors never leaves in clear.

The tunnel routes (:mod:`aioipsec.runtime.routes`, table 220) go through the TUN device, and
the kernel removes them with the device: when the daemon dies, is killed or stops, routing
falls through to the main table and the protected traffic would leave in clear by the
default route. RFC 4301 sec. 4.4.1 wants the opposite: a packet whose PROTECT policy has
no SA is discarded, never bypassed.

This module keeps that promise in kernel state that does not depend on the process or the
TUN device: one nftables table, ``inet aioipsec``::

    table inet aioipsec {
        comment "aioipsec fail-closed pid=1234 start=5678 tun=ipsec0 state=running"
        chain postrouting {
            type filter hook postrouting priority filter; policy accept;
            meta mark 0x2200 accept                 # our own IKE and ESP (BYPASS_MARK)
            oifname { "lo", "ipsec0" } accept       # into the tunnel, or local delivery
            icmpv6 type { nd-... } ip6 hoplimit 255 accept   # neighbour discovery
            jump child/site/net                     # one chain per loaded Child config
        }
        chain child/site/net {
            comment "connection=site child=net"
            ip daddr 10.2.0.0/24 counter drop       # one rule per remote selector
        }
    }

Why nftables and not blackhole/prohibit routes in table 220 (docs/hardening.md):

* the postrouting hook sees every packet that leaves, local or forwarded, whatever routing
  decided: a route in table 220 is only consulted through our policy-routing rule, which a
  clean stop removes and which any other rule of higher priority (a VRF, a tool that
  manages rules) can bypass;
* a drop rule matches on the outgoing interface, the one fact that says "not through the
  tunnel", and gives the same answer to IPv4 and IPv6, local and forwarded traffic: the
  local sender gets an immediate error (EPERM), a forwarded packet is discarded silently
  as RFC 4301 sec. 5.1 says for DISCARD (a ``prohibit`` route would answer forwarded
  packets with ICMP, and a ``blackhole`` route fails local senders with EINVAL);
* the whole table is replaced in one nftables transaction, so a take-over never leaves a
  moment without the drop, and the counters say how many packets were kept in.

The selectors are the remote traffic selectors' addresses (protocol and ports are not
matched): exactly what the tunnel routes cover while the daemon runs, where anything to
those addresses enters the TUN device and what no policy allows is dropped there.

State per Child config: its configured remote selectors; a child whose remote selector is
``dynamic`` without a literal remote address (a responder for road warriors) learns the
negotiated ones as its Child SAs are installed. Who removes what is the daemon's choice
(aioipsec.daemon): an explicit ``terminate`` of a ``start_action = none`` connection,
unloading a connection, a clean stop with ``fail_closed_after_stop = false``, or
``aioipsec cleanup``.

Everything here runs nftables commands (a few calls per configuration change or Child SA,
never per packet) in the caller's network namespace: one table per namespace, like the
routing rule. The commands go to libnftables, the library the ``nft`` program is built on,
in the daemon's own process (the same parser, transactions and messages as ``nft -f -``),
through one kept context per network namespace; the program is the fallback when the
library cannot be loaded. A process per call cost 8-24 ms (fork and exec of nft from a
large Python process), and a new library context per call 8-16 ms: most of a Child SA
set-up's time after a terminate, where the child is closed again before ``initiate``
answers. A call through a kept context takes 0.15-0.35 ms.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .sockets import BYPASS_MARK

FAMILY = "inet"
TABLE = "aioipsec"
BASE_CHAIN = "postrouting"
CHILD_PREFIX = "child/"
COMMENT_PREFIX = "aioipsec fail-closed"
NFT_TIMEOUT = 10.0

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
AddressRange = tuple[IpAddress, IpAddress]
ChildKey = tuple[str, str]  # (connection, child)

# Neighbour discovery (RFC 4861) is link-local and must reach the peer's address even when
# a selector covers it (a host-to-host IPv6 tunnel): its hop limit is always 255.
_ND_TYPES = (
    "nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, nd-redirect"
)


class FailClosedError(RuntimeError):
    """nftables refused or is missing; the message says what to do."""


# --------------------------------------------------------------------------- selectors


def address_range(start: str | IpAddress, end: str | IpAddress) -> AddressRange:
    first, last = ipaddress.ip_address(start), ipaddress.ip_address(end)
    if first.version != last.version or int(first) > int(last):
        raise ValueError(f"not an address range: {start}-{end}")
    return first, last


def range_text(entry: AddressRange) -> str:
    """nft's notation: an address, a prefix when the range is one, else ``a-b``."""
    first, last = entry
    if first == last:
        return str(first)
    networks = list(ipaddress.summarize_address_range(first, last))
    if len(networks) == 1:
        return str(networks[0])
    return f"{first}-{last}"


def parse_range_text(text: str) -> AddressRange:
    if "/" in text:
        network = ipaddress.ip_network(text, strict=False)
        return network[0], network[-1]
    if "-" in text:
        first, last = text.split("-", 1)
        return address_range(first, last)
    return address_range(text, text)


def covered(entry: AddressRange, ranges: Iterable[AddressRange]) -> bool:
    first, last = entry
    return any(
        first.version == a.version and int(a) <= int(first) and int(last) <= int(b)
        for a, b in ranges
    )


def _merge(ranges: Iterable[AddressRange]) -> list[AddressRange]:
    """Sorted, without duplicates or ranges another one contains (one rule per range)."""
    unique = sorted(set(ranges), key=lambda r: (r[0].version, int(r[0]), -int(r[1])))
    kept: list[AddressRange] = []
    for entry in unique:
        if not covered(entry, kept):
            kept.append(entry)
    return kept


@dataclass(frozen=True)
class ChildPlan:
    """What one Child config keeps closed: its remote selectors' address ranges, and
    whether it learns negotiated ones (``dynamic`` without a literal remote address)."""

    ranges: tuple[AddressRange, ...]
    learns: bool = False


def plan_for_configs(configs: Iterable[Any]) -> dict[ChildKey, ChildPlan]:
    """The fail-closed plan of every Child config of the engine's IkeConfigs."""
    from ikev2.ts import parse_ts_list  # the engine's selector syntax (``dynamic``, ranges)

    plans: dict[ChildKey, ChildPlan] = {}
    for config in configs:
        concrete = [a for a in config.remote_addrs if _is_address(a)]
        for child in config.children:
            ranges: list[AddressRange] = []
            learns = False
            for text in child.remote_ts:
                for part in (p.strip() for p in text.split(",")):
                    if not part:
                        continue
                    if part.split("[", 1)[0].strip() == "dynamic" and not concrete:
                        learns = True  # the peer's address is known once it is up
                        continue
                    for address in concrete or [None]:
                        for ts in parse_ts_list([part], address):
                            selector = ts.to_range()
                            ranges.append(address_range(selector.start, selector.end))
            plans[(config.name, child.name)] = ChildPlan(tuple(_merge(ranges)), learns)
    return plans


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------- names


_SAFE = re.compile(r"[A-Za-z0-9.-]")


def _encode(name: str) -> str:
    """A name as nft identifier characters: others (and ``_``) become ``_XX`` per octet."""
    out = []
    for char in name:
        if _SAFE.fullmatch(char):
            out.append(char)
        else:
            out.extend(f"_{octet:02x}" for octet in char.encode())
    return "".join(out)


def _decode(text: str) -> str:
    octets = bytearray()
    index = 0
    while index < len(text):
        if text[index] == "_":
            octets.append(int(text[index + 1 : index + 3], 16))
            index += 3
        else:
            octets.extend(text[index].encode())
            index += 1
    return octets.decode(errors="replace")


def chain_name(key: ChildKey) -> str:
    name = f"{CHILD_PREFIX}{_encode(key[0])}/{_encode(key[1])}"
    if len(name) > 250:  # NFT_CHAIN_MAXNAMELEN is 256
        raise FailClosedError(
            f"connection/child name too long for the fail-closed chain: {key[0]}/{key[1]} "
            "(shorten the connection or child name)"
        )
    return name


def key_of_chain(name: str) -> ChildKey | None:
    if not name.startswith(CHILD_PREFIX):
        return None
    parts = name[len(CHILD_PREFIX) :].split("/")
    if len(parts) != 2:
        return None
    try:
        return _decode(parts[0]), _decode(parts[1])
    except ValueError:
        return None


# --------------------------------------------------------------------------- state on the kernel


@dataclass(frozen=True)
class Owner:
    """The daemon that wrote the table (from its comment)."""

    pid: int
    start: int  # /proc/PID/stat starttime: a pid reused by another process does not match
    tun: str
    state: str  # "running" until a clean stop rewrites it as "stopped"

    def comment(self) -> str:
        return (
            f"{COMMENT_PREFIX} pid={self.pid} start={self.start} tun={self.tun} state={self.state}"
        )

    @classmethod
    def parse(cls, comment: str) -> Owner | None:
        if not comment.startswith(COMMENT_PREFIX):
            return None
        fields = dict(
            word.split("=", 1) for word in comment[len(COMMENT_PREFIX) :].split() if "=" in word
        )
        try:
            return cls(
                int(fields.get("pid", "0")),
                int(fields.get("start", "0")),
                fields.get("tun", ""),
                fields.get("state", "running"),
            )
        except ValueError:
            return None

    def running(self) -> bool:
        """The writing daemon is alive (same pid and start time), not just any process."""
        return self.state == "running" and self.pid > 0 and process_start(self.pid) == self.start


def process_start(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks after boot), None if no PID."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as file:
            text = file.read()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    try:
        return int(text.rsplit(")", 1)[1].split()[19])
    except (IndexError, ValueError):
        return None


@dataclass
class ChildState:
    key: ChildKey
    ranges: list[AddressRange]
    dropped: int = 0  # packets the chain's rules dropped (nft counters)


@dataclass
class State:
    """The ``inet aioipsec`` table as read back from the kernel."""

    owner: Owner | None
    children: dict[ChildKey, ChildState] = field(default_factory=dict)

    @property
    def dropped(self) -> int:
        return sum(child.dropped for child in self.children.values())

    def describe(self) -> str:
        """One line per child: ``site/net: 10.2.0.0/24 (3 packets dropped)``."""
        lines = []
        for (connection, child), state in sorted(self.children.items()):
            selectors = ", ".join(range_text(r) for r in state.ranges) or "(no selector yet)"
            lines.append(f"{connection}/{child}: {selectors} ({state.dropped} packets dropped)")
        return "\n".join(lines)


_CHAIN = re.compile(r"^\s*chain (\S+) \{")
_COMMENT = re.compile(r'^\s*comment "([^"]*)"')
_RULE = re.compile(r"^\s*ip6? daddr (\S+) counter packets (\d+) bytes \d+ drop")


def parse_table(text: str) -> State:
    """``nft list table inet aioipsec`` text into a State (the JSON output of nft 1.0.6
    leaves out the comments, which carry the owner)."""
    owner: Owner | None = None
    children: dict[ChildKey, ChildState] = {}
    chain: str | None = None
    for line in text.splitlines():
        match = _CHAIN.match(line)
        if match:
            chain = match.group(1)
            key = key_of_chain(chain)
            if key is not None:
                children[key] = ChildState(key, [])
            continue
        match = _COMMENT.match(line)
        if match and chain is None:
            owner = Owner.parse(match.group(1))
            continue
        match = _RULE.match(line)
        if match and chain is not None:
            key = key_of_chain(chain)
            if key is None:
                continue
            try:
                children[key].ranges.append(parse_range_text(match.group(1)))
            except ValueError:
                continue
            children[key].dropped += int(match.group(2))
    return State(owner, children)


def nft_path() -> str | None:
    for candidate in (shutil.which("nft"), "/usr/sbin/nft", "/sbin/nft"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


_NOT_INSTALLED = (
    "nftables' nft program is not installed: the daemon cannot fail closed "
    "(install it: apt-get install nftables; or set [daemon] fail_closed = false "
    "to accept that traffic leaves in clear when the daemon stops)"
)


@dataclass(frozen=True)
class NftResult:
    """What ``nft -f -`` would have said: its exit status, standard output and error."""

    returncode: int
    stdout: str
    stderr: str


class _Libnftables:
    """libnftables through ctypes (``libnftables.so.1``, installed with the nft program).

    One context per network namespace, kept: a context's netlink socket belongs to the
    namespace it was opened in (the table is per namespace), and the first command of a
    new context cost 8-16 ms here where a kept one takes 0.15-0.35 ms. A kept context
    stays right when others change the ruleset: libnftables compares the ruleset's
    generation with its cache before each command. Output and errors are buffered, as the
    program would print them."""

    MAX_CONTEXTS = 4  # the daemon uses one; tests switch between a few namespaces

    def __init__(self, library: ctypes.CDLL) -> None:
        self.lib = library
        library.nft_ctx_new.argtypes = [ctypes.c_uint32]
        library.nft_ctx_new.restype = ctypes.c_void_p
        library.nft_ctx_free.argtypes = [ctypes.c_void_p]
        library.nft_ctx_free.restype = None
        for name in ("nft_ctx_buffer_output", "nft_ctx_buffer_error"):
            getattr(library, name).argtypes = [ctypes.c_void_p]
            getattr(library, name).restype = ctypes.c_int
        for name in ("nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer"):
            getattr(library, name).argtypes = [ctypes.c_void_p]
            getattr(library, name).restype = ctypes.c_char_p
        library.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        library.nft_run_cmd_from_buffer.restype = ctypes.c_int
        self.contexts: dict[int, int] = {}  # network namespace inode -> context
        self.lock = threading.Lock()

    def _context(self) -> int:
        """The context of the calling thread's network namespace (made on first use)."""
        namespace = os.stat("/proc/thread-self/ns/net").st_ino
        context = self.contexts.get(namespace)
        if context is None:
            if len(self.contexts) >= self.MAX_CONTEXTS:
                oldest = next(iter(self.contexts))
                self.lib.nft_ctx_free(self.contexts.pop(oldest))
            context = self.lib.nft_ctx_new(0)  # NFT_CTX_DEFAULT, as the program uses
            if not context:
                raise FailClosedError("libnftables: cannot create a context (out of memory?)")
            self.lib.nft_ctx_buffer_output(context)
            self.lib.nft_ctx_buffer_error(context)
            self.contexts[namespace] = context
        return context

    def run(self, commands: str) -> NftResult:
        lib = self.lib
        with self.lock:
            context = self._context()
            status = lib.nft_run_cmd_from_buffer(context, commands.encode())
            # The buffers are reset by the next command: copy them now.
            out = lib.nft_ctx_get_output_buffer(context) or b""
            err = lib.nft_ctx_get_error_buffer(context) or b""
        return NftResult(0 if status == 0 else 1, out.decode(errors="replace"),
                         err.decode(errors="replace"))  # fmt: skip


_library: _Libnftables | bool | None = False  # False: not tried yet; None: not loadable


def _libnftables() -> _Libnftables | None:
    global _library
    if _library is False:
        try:
            _library = _Libnftables(ctypes.CDLL("libnftables.so.1"))
        except (OSError, AttributeError):
            _library = None  # no library (or an older one): the nft program does it
    return _library if isinstance(_library, _Libnftables) else None


def _nft(commands: str) -> NftResult:
    """Run nftables COMMANDS (``nft -f`` syntax) as one transaction."""
    library = _libnftables()
    if library is not None:
        return library.run(commands)
    binary = nft_path()
    if binary is None:
        raise FailClosedError(_NOT_INSTALLED)
    try:
        result = subprocess.run(
            [binary, "-f", "-"], input=commands, capture_output=True, text=True,
            timeout=NFT_TIMEOUT, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as error:
        raise FailClosedError(f"nft -f -: {error}") from None
    return NftResult(result.returncode, result.stdout, result.stderr)


def read_state() -> State | None:
    """The table left in this network namespace (by us or an earlier daemon), or None."""
    result = _nft(f"list table {FAMILY} {TABLE}\n")
    if result.returncode != 0:
        if "No such file or directory" in result.stderr or "does not exist" in result.stderr:
            return None
        raise FailClosedError(
            f"cannot read the fail-closed table (nft list table {FAMILY} {TABLE}): "
            f"{result.stderr.strip()} (run as root, with nf_tables in the kernel)"
        )
    return parse_table(result.stdout)


def remove_table() -> bool:
    """Delete the table (``aioipsec cleanup``); False when there was none."""
    result = _nft(f"table {FAMILY} {TABLE}\ndelete table {FAMILY} {TABLE}\n")
    if result.returncode != 0:
        raise FailClosedError(
            f"cannot remove the fail-closed table: {result.stderr.strip()} (run as root)"
        )
    return True


def _quote(text: str) -> str:
    if '"' in text or "\\" in text or "\n" in text:
        raise FailClosedError(f"unusable name for an nftables string: {text!r}")
    return f'"{text}"'


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() and c not in '"\\' else "?" for c in text)[:120]


def table_script(owner: Owner, children: Mapping[ChildKey, Iterable[AddressRange]]) -> str:
    """The whole table, replacing any previous one in the same transaction."""
    lines = [
        f"table {FAMILY} {TABLE}",  # so that the delete below never fails
        f"delete table {FAMILY} {TABLE}",
        f"table {FAMILY} {TABLE} {{",
        f"    comment {_quote(owner.comment())}",
        f"    chain {BASE_CHAIN} {{",
        "        type filter hook postrouting priority filter; policy accept;",
        f"        meta mark {BYPASS_MARK:#x} accept",
        f'        oifname {{ "lo", {_quote(owner.tun)} }} accept',
        f"        icmpv6 type {{ {_ND_TYPES} }} ip6 hoplimit 255 accept",
    ]
    names = {key: chain_name(key) for key in children}
    lines += [f"        jump {names[key]}" for key in sorted(children)]
    lines.append("    }")
    for key in sorted(children):
        lines.append(f"    chain {names[key]} {{")
        lines.append(f"        comment {_chain_comment(key)}")
        lines += [f"        {_rule(entry)}" for entry in _merge(children[key])]
        lines.append("    }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def child_script(key: ChildKey, ranges: Iterable[AddressRange]) -> str:
    """KEY's chain and its jump added to the existing table, in one transaction: what a
    Child SA's set-up needs after a terminate opened KEY. Rewriting the whole table there
    cost 2-8 ms on a loaded machine (the kernel waits for readers of the deleted table's
    base chain), on the path before ``initiate`` answers."""
    name = chain_name(key)
    lines = [f"add chain {FAMILY} {TABLE} {name} {{ comment {_chain_comment(key)}; }}"]
    lines += [f"add rule {FAMILY} {TABLE} {name} {_rule(entry)}" for entry in _merge(ranges)]
    lines.append(f"add rule {FAMILY} {TABLE} {BASE_CHAIN} jump {name}")
    return "\n".join(lines) + "\n"


def _chain_comment(key: ChildKey) -> str:
    label = f"connection={key[0]} child={key[1]}"  # for people; the name decides
    return _quote(_printable(label))


def _rule(entry: AddressRange) -> str:
    family = "ip" if entry[0].version == 4 else "ip6"
    return f"{family} daddr {range_text(entry)} counter drop"


# --------------------------------------------------------------------------- the daemon's handle


@dataclass
class Adoption:
    """What :meth:`FailClosed.adopt` found and did."""

    previous: State | None
    adopted: list[ChildKey]  # loaded children that a previous daemon had closed already
    stale: dict[ChildKey, list[AddressRange]]  # state of children no longer loaded: removed


class FailClosed:
    """The daemon's fail-closed state: what is in the kernel, kept in memory too."""

    def __init__(self, tun_name: str, pid: int | None = None) -> None:
        self.pid = os.getpid() if pid is None else pid
        self.owner = Owner(self.pid, process_start(self.pid) or 0, tun_name, "running")
        _quote(tun_name)
        self.children: dict[ChildKey, list[AddressRange]] = {}
        self.learns: set[ChildKey] = set()
        # Children opened by an explicit terminate: a reload that does not change them
        # leaves them open; their next Child SA closes them again.
        self.opened: set[ChildKey] = set()
        self.existed_before = False

    # The whole table is rewritten for load, reload, terminate and stop (rare); a learned
    # selector adds one rule (possibly per Child SA of a road-warrior responder).

    def _write(self) -> None:
        script = table_script(self.owner, self.children)
        result = _nft(script)
        if result.returncode != 0:
            raise FailClosedError(
                f"cannot install the fail-closed rules (nft -f): {result.stderr.strip()} "
                "(the daemon needs CAP_NET_ADMIN and nf_tables in the kernel: modprobe "
                "nf_tables; or set [daemon] fail_closed = false to run without it)"
            )

    def adopt(self, plans: Mapping[ChildKey, ChildPlan]) -> Adoption:
        """Take over what a previous daemon left (no duplicates: the table is replaced in
        one transaction) and close every loaded child. Children of the previous table that
        are no longer loaded were unloaded by this start: their state goes, reported."""
        previous = read_state()
        owner = previous.owner if previous is not None else None
        if owner is not None and owner.pid != self.pid and owner.running():
            raise FailClosedError(
                f"another aioipsec daemon (pid {owner.pid}) holds the fail-closed rules of "
                "this network namespace: run one daemon per namespace (stop that one first)"
            )
        self.existed_before = previous is not None
        self.opened = set()
        old = previous.children if previous is not None else {}
        self.children = {}
        self.learns = {key for key, plan in plans.items() if plan.learns}
        adopted = []
        for key, plan in plans.items():
            ranges = list(plan.ranges)
            if key in old:
                adopted.append(key)
                if plan.learns:  # keep what the earlier run learned for this child
                    ranges += old[key].ranges
            self.children[key] = _merge(ranges)
        stale = {key: state.ranges for key, state in old.items() if key not in plans}
        self._write()
        return Adoption(previous, adopted, stale)

    def reload(self, plans: Mapping[ChildKey, ChildPlan], changed: set[ChildKey]) -> list[ChildKey]:
        """A reload: children no longer loaded lose their state (returned), new and CHANGED
        ones get their plan; unchanged ones keep theirs (also when opened by terminate)."""
        removed = [key for key in self.children if key not in plans]
        for key in removed:
            del self.children[key]
        for key, plan in plans.items():
            if key in changed or (key not in self.children and key not in self.opened):
                self.children[key] = _merge(plan.ranges)
        self.learns = {key for key, plan in plans.items() if plan.learns}
        self.opened = {key for key in self.opened if key in plans and key not in changed}
        self._write()
        return removed

    def open(self, keys: Iterable[ChildKey]) -> list[ChildKey]:
        """Remove the state of KEYS (an explicit terminate); returns those that had one."""
        removed = [key for key in keys if key in self.children]
        if not removed:
            return []
        for key in removed:
            del self.children[key]
        self.opened |= set(removed)
        self._write()
        return removed

    def close(self, key: ChildKey, plan: ChildPlan | None, ranges: Iterable[AddressRange]) -> bool:
        """A Child SA of KEY is installed with RANGES (its negotiated remote selectors):
        make sure KEY is closed (again, after a terminate) and covers them. True when
        something was added."""
        current = self.children.get(key)
        wanted = [r for r in ranges if current is None or not covered(r, current)]
        if current is not None and not wanted:
            return False
        self.opened.discard(key)
        if current is None:
            # Not in the table (opened by a terminate, or learned only now): its chain and
            # jump are added; the rest of the table stays as it is.
            self.children[key] = _merge([*(plan.ranges if plan else ()), *wanted])
            script = child_script(key, self.children[key])
        else:
            self.children[key] = _merge([*current, *wanted])
            script = "".join(
                f"add rule {FAMILY} {TABLE} {chain_name(key)} {_rule(entry)}\n" for entry in wanted
            )
        result = _nft(script)
        if result.returncode != 0:  # the table went away under us: write it whole
            self._write()
        return True

    def stop(self, keep: bool) -> None:
        """A clean stop: keep the table, marked stopped (``fail_closed_after_stop``,
        the default), or remove it."""
        if keep:
            self.owner = Owner(self.owner.pid, self.owner.start, self.owner.tun, "stopped")
            self._write()
        else:
            remove_table()
        self.children.clear()

    def listing(self) -> dict[str, list[str]]:
        """``connection/child -> [selectors]`` for the ``policies`` command."""
        return {
            f"{connection}/{child}": [range_text(r) for r in ranges]
            for (connection, child), ranges in sorted(self.children.items())
        }
