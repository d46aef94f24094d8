"""Security Policy Database (RFC 4301 sec. 4.4.1): what ``ip xfrm policy`` shows.

Policies are ordered (lower ``priority`` first, then insertion order) and the first whose
selector matches decides: PROTECT (through the SA of the policy's ``reqid``), BYPASS (send
in clear) or DISCARD. A packet that matches a PROTECT policy for which no SA is installed
is held briefly in a bounded queue and an ``Acquire`` event asks the IKE side to negotiate
one (like strongSwan's ``start_action = trap`` on an xfrm ACQUIRE); it is never sent in
clear. Held packets go out through ``release_held`` once the SA is installed, or are
dropped after ``hold_seconds``.

Inbound, packets that were decrypted through an SA must match that SA's selectors (checked
by the SA itself, RFC 4301 sec. 5.2 step 4); ``check_inbound_clear`` answers whether a
packet that arrived without IPsec is allowed in.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, TypeVar

from esp.events import Acquire
from esp.sa import SaBase
from esp.sad import Sad
from esp.selectors import (
    ANY_PORT,
    Selector,
    fixed_header_fields,
    icmp_error_fields,
    packet_fields,
)


class Protector(Protocol):
    """What protects a PROTECT policy's packets: an SA, or a daemon's entry holding one."""

    @property
    def expired(self) -> bool: ...


P = TypeVar("P", bound=Protector)


class Action(StrEnum):
    PROTECT = "protect"
    BYPASS = "bypass"
    DISCARD = "discard"


class PolicyDirection(StrEnum):
    OUT = "out"
    IN = "in"


@dataclass(frozen=True, slots=True)
class Template:
    """What a PROTECT policy asks for (``tmpl`` in ``ip xfrm policy``)."""

    protocol: str = "esp"  # "esp" or "ah"
    mode: str = "tunnel"
    src: str | None = None  # tunnel endpoints
    dst: str | None = None


@dataclass(slots=True)
class Policy:
    selector: Selector
    action: Action = Action.PROTECT
    direction: PolicyDirection = PolicyDirection.OUT
    reqid: int = 0
    priority: int = 0
    template: Template | None = None
    # strongSwan's icmp = yes: an ICMP error that matches no policy takes this one when
    # the packet it quotes, reversed, does (esp.selectors.icmp_error_fields).
    icmp: bool = False
    index: int = 0  # assigned by Spd.add
    matches: int = field(default=0)  # packets that hit this policy

    def to_json(self) -> dict[str, object]:
        info: dict[str, object] = {
            "index": self.index,
            "dir": self.direction.value,
            "priority": self.priority,
            "action": self.action.value,
            "reqid": self.reqid,
            "selector": self.selector.to_json(),
            "matches": self.matches,
        }
        if self.template is not None:
            info["tmpl"] = {
                "proto": self.template.protocol,
                "mode": self.template.mode,
                "src": self.template.src,
                "dst": self.template.dst,
            }
        return info

    def text(self) -> str:
        action = {Action.PROTECT: "allow", Action.BYPASS: "allow", Action.DISCARD: "block"}
        lines = [
            self.selector.text(),
            f"\tdir {self.direction.value} priority {self.priority} index {self.index} "
            f"action {action[self.action]} ({self.action.value})",
        ]
        if self.action is Action.PROTECT:
            tmpl = self.template or Template()
            lines.append(f"\ttmpl src {tmpl.src or '0.0.0.0'} dst {tmpl.dst or '0.0.0.0'}")
            lines.append(f"\t\tproto {tmpl.protocol} reqid {self.reqid} mode {tmpl.mode}")
        return "\n".join(lines) + "\n"


# Returned by Spd.outbound for a BYPASS policy: send the packet in clear.
BYPASS = Action.BYPASS


class Spd:
    """``max_held`` packets per policy are kept for at most ``hold_seconds`` while an SA is
    negotiated; an Acquire is repeated at most every ``acquire_retry`` seconds."""

    def __init__(
        self, sad: Sad, *, max_held: int = 32, hold_seconds: float = 5.0,
        acquire_retry: float = 30.0,
    ) -> None:  # fmt: skip
        self.sad = sad
        self.max_held = max_held
        self.hold_seconds = hold_seconds
        self.acquire_retry = acquire_retry
        self._policies: list[Policy] = []
        self._next_index = 1
        self._held: dict[int, collections.deque[tuple[float, bytes]]] = {}
        self._acquired_at: dict[int, float] = {}
        # Counters: packets dropped by policy (discard, no policy, unparsable), held,
        # dropped from a full hold queue or after hold_seconds.
        self.policy_drops = 0
        self.no_policy = 0
        self.held = 0
        self.held_dropped = 0

    # ------------------------------------------------------------ policies
    def add(self, policy: Policy) -> int:
        if policy.action is Action.PROTECT and policy.reqid <= 0:
            raise ValueError("a protect policy needs a reqid > 0 (the SA template it uses)")
        policy.index = self._next_index
        self._next_index += 1
        self._policies.append(policy)
        self._policies.sort(key=lambda p: (p.priority, p.index))
        return policy.index

    def remove(self, index: int) -> None:
        self._policies = [p for p in self._policies if p.index != index]

    def flush(self) -> None:
        self._policies.clear()
        self._held.clear()
        self._acquired_at.clear()

    def __iter__(self) -> Iterator[Policy]:
        return iter(list(self._policies))

    def __len__(self) -> int:
        return len(self._policies)

    def lookup(
        self, packet: bytes | bytearray | memoryview,
        direction: PolicyDirection = PolicyDirection.OUT,
    ) -> Policy | None:  # fmt: skip
        """The first policy of ``direction`` whose selector matches ``packet``.

        Addresses and protocol come from one ``unpack_from`` of the fixed header; the
        ports (``packet_fields``, an object per packet) only when a policy with ports
        is reached.
        """
        header = fixed_header_fields(packet)
        if header is None:
            return None
        version, protocol, src, dst = header
        fields = None
        for policy in self._policies:
            sel = policy.selector
            if (
                policy.direction is not direction
                or sel.version != version
                or not sel.src_first <= src <= sel.src_last
                or not sel.dst_first <= dst <= sel.dst_last
                or (sel.protocol and sel.protocol != protocol)
            ):
                continue
            if sel.src_ports != ANY_PORT or sel.dst_ports != ANY_PORT:
                if fields is None:
                    fields = packet_fields(packet)
                if fields is None or not sel.matches(fields):
                    continue
            policy.matches += 1
            return policy
        return None

    # ------------------------------------------------------------ packet decisions
    def outbound(
        self, packet: bytes | bytearray | memoryview, now: float
    ) -> SaBase | Action | None:
        """Decide for a packet read from the TUN device.

        Returns the SA to protect it with, ``BYPASS`` (send in clear), or None when the
        packet was dropped (DISCARD, no matching policy) or held for an SA being
        negotiated (an ``Acquire`` event is in the SAD's queue).
        """
        return self.decide(packet, now, self.sad.current_outbound)

    def decide(
        self, packet: bytes | bytearray | memoryview, now: float, protectors: Mapping[int, P]
    ) -> P | Action | None:
        """``outbound`` with the caller's table from reqid to what protects the packets of
        a PROTECT policy (``outbound`` uses the SAD's newest SA per reqid; the daemon its
        Child SA entries, so that one lookup after the policy gives all a packet needs).
        A reqid missing from ``protectors``, or whose protector is ``expired``, holds the
        packet and raises an ``Acquire``: it never leaves in clear."""
        policy = self.lookup(packet)
        if policy is None:
            policy = self._icmp_error_policy(packet)
        if policy is None:
            # RFC 4301 sec. 4.4.1: traffic that matches no policy is discarded.
            self.no_policy += 1
            return None
        if policy.action is Action.PROTECT:
            protector = protectors.get(policy.reqid)
            if protector is not None and not protector.expired:
                return protector
            self.hold(policy, packet, now)
            return None
        if policy.action is Action.BYPASS:
            return BYPASS
        self.policy_drops += 1
        return None

    def _icmp_error_policy(self, packet: bytes | bytearray | memoryview) -> Policy | None:
        """An outbound PROTECT policy with ``icmp`` whose selector matches the packet an
        ICMP error quotes, reversed (only looked for when no policy matched)."""
        quoted = None
        for policy in self._policies:
            if not policy.icmp or policy.direction is not PolicyDirection.OUT:
                continue
            if quoted is None:
                quoted = icmp_error_fields(packet)
                if quoted is None:
                    return None
            if policy.selector.matches(quoted):
                policy.matches += 1
                return policy
        return None

    def hold(self, policy: Policy, packet: bytes | bytearray | memoryview, now: float) -> None:
        """Keep ``packet`` (bounded, newest kept) until an SA for ``policy`` is there;
        an ``Acquire`` at most every ``acquire_retry`` seconds."""
        queue = self._held.setdefault(policy.reqid, collections.deque())
        self._drop_stale(queue, now)
        if len(queue) >= self.max_held:
            queue.popleft()  # keep the newest: bounded memory, never sent in clear
            self.held_dropped += 1
        queue.append((now, bytes(packet)))
        self.held += 1
        last = self._acquired_at.get(policy.reqid)
        if last is None or now - last >= self.acquire_retry:
            self._acquired_at[policy.reqid] = now
            fields = packet_fields(packet)
            assert fields is not None  # lookup() parsed it already
            self.sad.events.append(
                Acquire(
                    policy.reqid,
                    policy.index,
                    fields.src_text(),
                    fields.dst_text(),
                    fields.protocol,
                    fields.src_port,
                    fields.dst_port,
                )
            )

    def _drop_stale(self, queue: collections.deque[tuple[float, bytes]], now: float) -> None:
        while queue and now - queue[0][0] > self.hold_seconds:
            queue.popleft()
            self.held_dropped += 1

    def release_held(self, reqid: int, now: float) -> list[bytes]:
        """The packets held for ``reqid`` (oldest first, stale ones dropped), to be sent
        through the SA that was just installed. The Acquire state is reset."""
        queue = self._held.pop(reqid, collections.deque())
        self._acquired_at.pop(reqid, None)
        self._drop_stale(queue, now)
        return [packet for _, packet in queue]

    def acquire_failed(self, reqid: int) -> None:
        """The negotiation for ``reqid`` failed: drop what was held for it."""
        queue = self._held.pop(reqid, collections.deque())
        self.held_dropped += len(queue)
        self._acquired_at.pop(reqid, None)

    def expire_held(self, now: float) -> None:
        for queue in self._held.values():
            self._drop_stale(queue, now)

    def held_count(self, reqid: int) -> int:
        return len(self._held.get(reqid, ()))

    def check_inbound_clear(self, packet: bytes | bytearray | memoryview) -> bool:
        """May a packet that arrived without IPsec be delivered? Only through a BYPASS
        inbound policy, or when no inbound policy covers it; a packet that a PROTECT
        policy says should have been protected is dropped (RFC 4301 sec. 5.2)."""
        policy = self.lookup(packet, PolicyDirection.IN)
        if policy is None or policy.action is Action.BYPASS:
            return True
        self.policy_drops += 1
        return False

    def check_decrypted(self, packet: bytes | bytearray | memoryview, sa: SaBase) -> bool:
        """Policy check after decryption (RFC 4301 sec. 5.2 step 4) against the SPD: the
        first inbound policy matching ``packet`` must be PROTECT with the SA's reqid.
        SAs that carry their own selectors check them in ``decrypt`` already."""
        policy = self.lookup(packet, PolicyDirection.IN)
        if policy is not None and policy.action is Action.PROTECT and policy.reqid == sa.reqid:
            return True
        sa.policy_drops += 1
        return False

    # ------------------------------------------------------------ listings
    def to_json(self) -> list[dict[str, object]]:
        return [policy.to_json() for policy in self._policies]

    def json(self) -> str:
        return json.dumps(self.to_json(), indent=2)

    def text(self) -> str:
        """Close to ``ip xfrm policy``."""
        return "".join(policy.text() for policy in self._policies)
