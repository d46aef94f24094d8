"""The EAP method registry: which ``auth = eap-...`` values exist, what each runs in each
role, and the factories that build the methods from plain credentials.

swanctl's vocabulary (strongSwan's vici_config and eap-dynamic plugin):

* ``eap-md5``, ``eap-mschapv2``, ``eap-tls``, ``eap-ttls``: that method only. A client
  Naks any other and names this one (RFC 3748 sec. 5.3.1).
* ``eap`` (any method): a client runs whatever the gateway proposes, if it has the
  credentials for it; a gateway proposes as ``eap-dynamic`` does (strongSwan's charon
  itself cannot serve a bare ``eap`` without a RADIUS backend; aioipsec does not fail there).
* ``eap-dynamic`` (gateway): propose the preferred method, and accept the client's Nak for
  another one it supports (RFC 3748 sec. 5.3, strongSwan's eap-dynamic plugin). As a client
  it means ``eap``.

The gateway's preference order, strongest first: EAP-TLS (certificates on both ends),
EAP-TTLS (the gateway's certificate, an inner password method), EAP-MSCHAPv2, EAP-MD5.
Methods whose credentials are missing are left out (EAP-TLS and EAP-TTLS need our
certificate as gateway; EAP-TLS needs one as client too).

KEY_GENERATING: the methods that derive an MSK (RFC 7296 sec. 2.16); after any other
(EAP-MD5) the final AUTH payloads are keyed with SK_pi / SK_pr.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ikev2.eap.md5 import Md5Peer, Md5Server
from ikev2.eap.mschapv2 import MsChapV2Peer, MsChapV2Server
from ikev2.eap.session import PeerMethodFactory, ServerMethodFactory
from ikev2.eap.tls import EapTlsPeer, EapTlsServer, TlsCredentials
from ikev2.eap.ttls import EapTtlsPeer, EapTtlsServer
from ikev2.enums import EapType

PREFERENCE = (EapType.TLS, EapType.TTLS, EapType.MSCHAPV2, EapType.MD5_CHALLENGE)

AUTH_METHODS: dict[str, tuple[EapType, ...]] = {
    "eap-md5": (EapType.MD5_CHALLENGE,),
    "eap-mschapv2": (EapType.MSCHAPV2,),
    "eap-tls": (EapType.TLS,),
    "eap-ttls": (EapType.TTLS,),
    "eap-dynamic": PREFERENCE,
    "eap": PREFERENCE,
}
# strongSwan's phase2_method default is md5; MS-CHAPv2 when the client Naks MD5.
TTLS_PHASE2 = (EapType.MD5_CHALLENGE, EapType.MSCHAPV2)
KEY_GENERATING = frozenset({EapType.MSCHAPV2, EapType.TLS, EapType.TTLS})
# Methods that need a password (an eap secret), the inner method of EAP-TTLS included.
PASSWORD_METHODS = frozenset({EapType.MD5_CHALLENGE, EapType.MSCHAPV2, EapType.TTLS})

Random = Callable[[int], bytes]
PasswordLookup = Callable[[str], "str | None"]


def method_types(auth: str) -> tuple[EapType, ...]:
    """The methods an ``auth`` value allows, the gateway's preferred first."""
    return AUTH_METHODS.get(auth, ())


@dataclass(frozen=True)
class PeerCredentials:
    """What a client has for EAP: its EAP identity and password, its TLS credentials (for
    EAP-TLS: a certificate and key; for EAP-TTLS: the CAs that vouch for the gateway)."""

    identity: str
    password: str | None
    tls: TlsCredentials | None
    server_identity: str | None  # the gateway's identity its certificate must hold
    now: float
    random: Random


def peer_factories(
    types: tuple[EapType, ...], credentials: PeerCredentials
) -> dict[EapType, PeerMethodFactory]:
    """The client's methods among ``types`` that its credentials allow."""
    identity, password, random = credentials.identity, credentials.password, credentials.random
    inner: dict[EapType, PeerMethodFactory] = {}
    if password is not None:
        secret: str = password
        inner[EapType.MD5_CHALLENGE] = lambda: Md5Peer(secret)
        inner[EapType.MSCHAPV2] = lambda: MsChapV2Peer(identity, secret, random)
    tls = credentials.tls
    server, now = credentials.server_identity, credentials.now

    def eap_tls(certificates: TlsCredentials) -> PeerMethodFactory:
        return lambda: EapTlsPeer(certificates, now, server)

    def eap_ttls(cas: TlsCredentials) -> PeerMethodFactory:
        # The gateway's certificate is checked against our CAs; ours is not sent.
        return lambda: EapTtlsPeer(cas, now, identity, inner, server)

    methods: dict[EapType, PeerMethodFactory] = {}
    for method in types:
        if method in inner:
            methods[method] = inner[method]
        elif method == EapType.TLS and tls is not None and tls.certs:
            methods[method] = eap_tls(tls)
        elif method == EapType.TTLS and inner:
            methods[method] = eap_ttls(
                TlsCredentials((), None, tls.cacerts if tls is not None else ())
            )
    return methods


@dataclass(frozen=True)
class ServerCredentials:
    """What a gateway has for EAP: the password lookup, its own certificate and key (and
    the CAs for EAP-TLS clients), the inner identity EAP-TTLS must see (``eap_id``)."""

    lookup: PasswordLookup
    tls: TlsCredentials | None
    eap_id: str | None
    now: float
    random: Random


def server_factories(
    types: tuple[EapType, ...], credentials: ServerCredentials
) -> dict[EapType, ServerMethodFactory]:
    """The gateway's methods among ``types`` that its credentials allow, in that order."""
    lookup, random, now = credentials.lookup, credentials.random, credentials.now
    passwords: dict[EapType, ServerMethodFactory] = {
        EapType.MD5_CHALLENGE: lambda identity: Md5Server(identity, lookup, random),
        EapType.MSCHAPV2: lambda identity: MsChapV2Server(lookup, random=random),
    }
    tls = credentials.tls
    if tls is None or not tls.certs:
        return {t: passwords[t] for t in types if t in passwords}
    certificates: TlsCredentials = tls
    phase2 = {t: passwords[t] for t in TTLS_PHASE2}
    with_certificate: dict[EapType, ServerMethodFactory] = {
        EapType.TLS: lambda identity: EapTlsServer(identity, certificates, now),
        EapType.TTLS: lambda _identity: EapTtlsServer(
            certificates, now, phase2, credentials.eap_id
        ),
    }
    return {t: (passwords | with_certificate)[t] for t in types}
