"""One RADIUS Access-Request and its answer (RFC 2865), EAP inside (RFC 3579).

Packets are encoded and checked by pyrad (a maintained library, PyPI ``pyrad``): the
Request Authenticator, the Message-Authenticator (HMAC-MD5, RFC 3579 sec. 3.2; sent in
every Access-Request and required in every answer, the BlastRADIUS countermeasure of
RFC 3579 sec. 3.2 and CVE-2024-3596), the Response Authenticator, and the salt
decryption of MS-MPPE-Send/Recv-Key (RFC 2548 sec. 2.4.2-2.4.3). What is ours: the
asyncio transport, retransmission and fail-over.

Retransmission (RFC 5080 sec. 2.2.1): the same packet (same Identifier and Request
Authenticator) is sent ``tries`` times to a server, ``timeout`` apart; then the next
server gets a new packet. Each exchange uses its own UDP socket, so Identifiers never
collide between concurrent road warriors.
"""

from __future__ import annotations

import asyncio
import io
import ipaddress
from dataclasses import dataclass, field
from typing import Any

import structlog

from aioipsec.radius.settings import RadiusServer

log = structlog.get_logger("aioipsec.radius")

# The attributes we send or read (RFC 2865, 2869, 3162, 3579; Microsoft's, RFC 2548).
_DICTIONARY = """
ATTRIBUTE User-Name 1 string
ATTRIBUTE NAS-IP-Address 4 ipaddr
ATTRIBUTE NAS-Port 5 integer
ATTRIBUTE Service-Type 6 integer
ATTRIBUTE Framed-IP-Address 8 ipaddr
ATTRIBUTE Reply-Message 18 string
ATTRIBUTE State 24 octets
ATTRIBUTE Class 25 octets
ATTRIBUTE Session-Timeout 27 integer
ATTRIBUTE Called-Station-Id 30 string
ATTRIBUTE Calling-Station-Id 31 string
ATTRIBUTE NAS-Identifier 32 string
ATTRIBUTE NAS-Port-Type 61 integer
ATTRIBUTE EAP-Message 79 octets
ATTRIBUTE Message-Authenticator 80 octets
ATTRIBUTE NAS-IPv6-Address 95 ipv6addr
ATTRIBUTE Framed-IPv6-Address 168 ipv6addr
ATTRIBUTE DNS-Server-IPv6-Address 169 ipv6addr
VENDOR Microsoft 311
BEGIN-VENDOR Microsoft
ATTRIBUTE MS-Primary-DNS-Server 28 ipaddr
ATTRIBUTE MS-Secondary-DNS-Server 29 ipaddr
ATTRIBUTE MS-MPPE-Send-Key 16 octets encrypt=2
ATTRIBUTE MS-MPPE-Recv-Key 17 octets encrypt=2
END-VENDOR Microsoft
"""

ACCESS_REQUEST, ACCESS_ACCEPT, ACCESS_REJECT, ACCESS_CHALLENGE = 1, 2, 3, 11
SERVICE_FRAMED = 2  # Service-Type (RFC 2865 sec. 5.6), as strongSwan sends
NAS_PORT_VIRTUAL = 5  # NAS-Port-Type (sec. 5.41)
EAP_CHUNK = 253  # RFC 3579 sec. 3.1: longer EAP packets span several EAP-Message


class RadiusUnavailable(Exception):
    """No server gave a valid answer; the message says what was tried and seen."""


@dataclass
class RadiusReply:
    code: int
    server: RadiusServer
    eap_message: bytes = b""
    state: bytes | None = None
    classes: list[bytes] = field(default_factory=list)
    reply_message: str = ""
    msk: bytes | None = field(default=None, repr=False)
    # pools = radius: the peer's address(es) and DNS servers (strongSwan's eap-radius set).
    framed_addresses: list[str] = field(default_factory=list)
    dns_servers: list[str] = field(default_factory=list)


# Framed-IP-Address values that are not an address (RFC 2865 sec. 5.8): "let the user
# choose" and "the NAS picks one from its pool"; neither gives the peer an address here.
_NOT_AN_ADDRESS = ("255.255.255.255", "255.255.255.254")


@dataclass
class AccessRequest:
    """What the gateway says about one EAP round (strongSwan's attribute set)."""

    user_name: str
    eap_message: bytes = field(repr=False)
    state: bytes | None = None
    nas_identifier: str = "aioipsec"
    nas_port: int = 0  # the IKE SA's id: one "port" per conversation
    local_addr: tuple[str, int] | None = None  # Called-Station-Id, NAS-IP-Address
    remote_addr: tuple[str, int] | None = None  # Calling-Station-Id


def _dictionary() -> Any:
    from pyrad.dictionary import Dictionary

    return Dictionary(io.StringIO(_DICTIONARY))


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | Exception] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.queue.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        self.queue.put_nowait(exc)  # ICMP port unreachable: nobody listens there


def _station(addr: tuple[str, int]) -> str:
    return f"{addr[0]}[{addr[1]}]"  # strongSwan's Called/Calling-Station-Id form


class RadiusClient:
    def __init__(
        self, servers: list[RadiusServer], secret: bytes, timeout: float, tries: int
    ) -> None:
        self.servers = servers
        self._secret = secret
        self.timeout = timeout
        self.tries = tries
        self._dict = _dictionary()

    def _packet(self, request: AccessRequest) -> Any:
        from pyrad.packet import AuthPacket

        packet = AuthPacket(code=ACCESS_REQUEST, secret=self._secret, dict=self._dict)
        packet.AddAttribute("User-Name", request.user_name)
        packet.AddAttribute("NAS-Identifier", request.nas_identifier)
        packet.AddAttribute("NAS-Port-Type", NAS_PORT_VIRTUAL)
        packet.AddAttribute("NAS-Port", request.nas_port)
        packet.AddAttribute("Service-Type", SERVICE_FRAMED)
        if request.local_addr is not None:
            address = ipaddress.ip_address(request.local_addr[0])
            if address.version == 4:
                packet.AddAttribute("NAS-IP-Address", str(address))
            else:
                packet.AddAttribute("NAS-IPv6-Address", str(address))
            packet.AddAttribute("Called-Station-Id", _station(request.local_addr))
        if request.remote_addr is not None:
            packet.AddAttribute("Calling-Station-Id", _station(request.remote_addr))
        message = request.eap_message
        for offset in range(0, len(message), EAP_CHUNK):
            packet.AddAttribute("EAP-Message", message[offset : offset + EAP_CHUNK])
        if request.state is not None:
            packet.AddAttribute("State", request.state)
        packet.add_message_authenticator()
        return packet

    async def exchange(
        self, request: AccessRequest, first: RadiusServer | None = None
    ) -> RadiusReply:
        """Send ``request`` (to ``first``, then the others in order) until one answers.
        RadiusUnavailable when none does."""
        order = list(self.servers)
        if first in order:
            order.remove(first)
            order.insert(0, first)
        seen: list[str] = []
        for server in order:
            packet = self._packet(request)
            try:
                reply = await self._with_server(server, packet, seen)
            except OSError as error:
                seen.append(f"{server}: {error.strerror or error}")
                continue
            if reply is not None:
                return reply
        raise RadiusUnavailable(
            f"no answer from the RADIUS server(s) {', '.join(str(s) for s in order)} "
            f"({self.tries} tries each, {self.timeout:g} s apart)"
            + (f": {'; '.join(seen)}" if seen else "")
        )

    async def _with_server(
        self, server: RadiusServer, packet: Any, seen: list[str]
    ) -> RadiusReply | None:
        from pyrad.packet import PacketError

        loop = asyncio.get_running_loop()
        transport, receiver = await loop.create_datagram_endpoint(
            _Receiver, remote_addr=(server.host, server.port)
        )
        forged = 0
        try:
            raw = packet.RequestPacket()  # the same octets for every retransmission
            for attempt in range(self.tries):
                if attempt:
                    log.info("RADIUS retransmission", server=str(server), attempt=attempt)
                transport.sendto(raw)
                deadline = loop.time() + self.timeout
                while (remaining := deadline - loop.time()) > 0:
                    try:
                        data = await asyncio.wait_for(receiver.queue.get(), remaining)
                    except TimeoutError:
                        break
                    if isinstance(data, Exception):
                        continue  # unreachable now; the next try may find it back
                    try:
                        reply = packet.CreateReply(packet=data)
                    except PacketError:
                        continue
                    if not packet.VerifyReply(reply, data, enforce_ma=True):
                        # A wrong shared secret looks exactly like this.
                        forged += 1
                        continue
                    reply.request_authenticator = packet.authenticator
                    return _reply(server, reply)
        finally:
            transport.close()
        if forged:
            seen.append(
                f"{server}: {forged} answer(s) failed the authenticator check (is "
                "the shared secret the same on both sides?)"
            )
        return None


def _reply(server: RadiusServer, reply: Any) -> RadiusReply:
    def values(name: str) -> list[Any]:
        return list(reply[name]) if name in reply else []

    eap = b"".join(values("EAP-Message"))
    states = values("State")
    messages = values("Reply-Message")
    recv, send = values("MS-MPPE-Recv-Key"), values("MS-MPPE-Send-Key")
    # RFC 5216 sec. 2.3 / strongSwan: MSK = MS-MPPE-Recv-Key | MS-MPPE-Send-Key.
    msk = recv[0] + send[0] if recv and send else None
    framed = [str(a) for a in values("Framed-IP-Address") if str(a) not in _NOT_AN_ADDRESS]
    framed += [str(a) for a in values("Framed-IPv6-Address")]
    dns = [str(a) for name in ("MS-Primary-DNS-Server", "MS-Secondary-DNS-Server",
                               "DNS-Server-IPv6-Address") for a in values(name)]  # fmt: skip
    return RadiusReply(
        code=int(reply.code),
        server=server,
        eap_message=eap,
        state=states[0] if states else None,
        classes=values("Class"),
        reply_message=" ".join(str(m) for m in messages),
        msk=msk,
        framed_addresses=framed,
        dns_servers=dns,
    )
