"""Engine conversion: the validated model into the engine's ``ikev2.config`` dataclasses.

strongSwan's lifetime defaults are applied here (vici_config.c), DNS names are resolved,
and certificates and private keys are loaded into the :class:`ikev2.config.AuthConfig`.
"""

from __future__ import annotations

import socket
import time
from typing import Any

from aioipsec.config.credentials import (
    find_private_key,
    key_id_identity,
    load_certificate,
    load_crl_file,
    load_public_key,
    local_certificates,
    strongswan_dn,
)
from aioipsec.config.model import (
    AuthSettings,
    ChildSettings,
    ConfigError,
    Configuration,
    ConnectionSettings,
)
from aioipsec.config.values import ip_ok
from aioipsec.revocation import Authority, RevocationChecker, RevocationStore
from ikev2.config import AuthConfig, ChildConfig, IkeConfig
from ikev2.identity import Identity

# --------------------------------------------------------------------------- engine configs


def _child_to_engine(child: ChildSettings) -> ChildConfig:

    # strongSwan's lifetime defaults (vici_config.c check_lifetimes): rekey 1 h, or
    # life / 1.1 when only life is given; life = rekey * 1.1.
    rekey_time: float | None = child.rekey_time
    if rekey_time is None:
        rekey_time = child.life_time / 1.1 if child.life_time is not None else 3600.0
    _, rekey_bytes, rekey_packets = child_rekey_limits(child)
    life_bytes = child.life_bytes if child.life_bytes is not None else int(rekey_bytes * 1.1)
    life_packets = (
        child.life_packets if child.life_packets is not None else int(rekey_packets * 1.1)
    )
    return ChildConfig(
        name=child.name,
        local_ts=list(child.local_ts),
        remote_ts=list(child.remote_ts),
        esp_proposals=list(child.esp_proposals) if not child.ah_proposals else [],
        ah_proposals=list(child.ah_proposals),
        mode="transport" if child.mode == "transport" else "tunnel",  # shunts never get here
        start_action=child.start_action,
        close_action=child.close_action,
        dpd_action=child.dpd_action,
        rekey_time=float(rekey_time),
        life_time=child.life_time,
        rand_time=child.rand_time,
        rekey_bytes=rekey_bytes,
        life_bytes=life_bytes,
        rekey_packets=rekey_packets,
        life_packets=life_packets,
        replay_window=child.replay_window,
    )


def revocation_store(configuration: Configuration) -> RevocationStore:
    """The revocation store of one loaded configuration (aioipsec/revocation.py): the
    ``authorities`` with their CRL and OCSP URIs, the CRLs of x509crl/, the OCSP signers of
    x509ocsp/ (each file was read once at load, where a broken one was named)."""
    authorities = [
        Authority(
            name=name,
            cacert=load_certificate(section.cacert),
            crl_uris=list(section.crl_uris),
            ocsp_uris=list(section.ocsp_uris),
        )
        for name, section in configuration.authority_sections.items()
        if section.cacert is not None
    ]
    crls = [(load_crl_file(path), f"CRL file {path}") for path in configuration.crls]
    signers = [load_certificate(path) for path in configuration.ocsp_signers]
    return RevocationStore(authorities=authorities, crls=crls, ocsp_signers=signers)


# EAP methods that use our certificate when we have one (as the EAP-TLS/-TTLS server).
_MAYBE_CERTIFICATE = ("eap", "eap-ttls", "eap-dynamic")


def _auth_to_engine(
    configuration: Configuration,
    connection: ConnectionSettings,
    side: str,
    revocation: RevocationStore | None = None,
) -> AuthConfig:

    settings: AuthSettings = getattr(connection, side)
    raw_keys = settings.auth == "pubkey" and bool(settings.pubkeys)
    if side == "local" and settings.auth in ("pubkey", "eap-tls") and not raw_keys:
        # Only the file loader's credential check resolved a missing certs = before; a
        # connection from VICI load-conn reached find_private_key with none (IndexError).
        local_certificates(configuration, connection)
    elif side == "local" and settings.auth in _MAYBE_CERTIFICATE:
        # A gateway's EAP-TTLS/EAP-TLS server needs its certificate, a client none:
        # strongSwan's pick by our id, when there is one.
        try:
            local_certificates(configuration, connection)
        except ConfigError:
            pass
    certs = [load_certificate(path) for path in settings.certs]
    cacerts = [load_certificate(path) for path in settings.cacerts]
    pubkeys = [load_public_key(path) for path in settings.pubkeys] if raw_keys else []
    trusted_pubkeys = []
    if (
        side == "remote"
        and settings.auth in ("pubkey", "eap-tls", "eap-ttls", "eap", "eap-dynamic")
        and not cacerts
    ):
        # swanctl trusts every CA certificate it loaded (x509ca/): do the same.
        cacerts = [load_certificate(path) for path in configuration.authorities]
    if side == "remote" and settings.auth == "pubkey" and not raw_keys:
        # ... and every raw public key of pubkey/, for the peer whose KEY_ID it is.
        own = {path.resolve() for path in connection.local.pubkeys}
        trusted_pubkeys = [
            load_public_key(path) for path in configuration.public_keys if path.resolve() not in own
        ]
    identity = settings.id
    if identity is None and certs:
        # strongSwan's default: the certificate's subject, in certificate order.
        identity = strongswan_dn(certs[0].subject)
    if identity is None and pubkeys:
        # strongSwan's default for a raw key (pubkey_cert.c): its KEY_ID.
        identity = key_id_identity(pubkeys[0])
    auth = AuthConfig(
        auth=settings.auth,
        id=identity or "%any",
        certs=certs,
        cacerts=cacerts,
        send_certreq=connection.send_certreq,
        send_cert=connection.send_cert,
        rsa_pss=settings.rsa_pss,
        eap_id=settings.eap_id or "%any",
        groups=list(settings.groups),
        aaa_id=settings.aaa_id or "",
        pubkeys=pubkeys if side == "remote" else [],
        cert_policy=list(settings.cert_policy) if side == "remote" else [],
        ca_id=(settings.ca_id or "") if side == "remote" else "",
        trusted_pubkeys=trusted_pubkeys,
    )
    if side == "local" and (
        settings.auth in ("pubkey", "eap-tls")
        or (settings.auth in _MAYBE_CERTIFICATE and settings.certs)
    ):
        auth.private_key = find_private_key(configuration, connection)
    if side == "remote" and settings.auth == "pubkey" and revocation is not None:
        # A peer's Hash and URL certificate is fetched through the same HTTP client.
        auth.fetch_certificate = revocation.certificate
        # Every policy checks (strongSwan's relaxed still refuses a certificate a CRL or
        # OCSP responder says is revoked); the store is shared by all connections.
        auth.revocation = RevocationChecker(revocation, settings.revocation)
    return auth


def _with_status_and_url(
    configuration: Configuration, auth: AuthConfig, revocation: RevocationStore
) -> AuthConfig:
    """Our round answers a peer's RFC 4806 OCSP request with our certificate's status, which
    the revocation store fetches from the OCSP URIs of our certificate or its authority,
    and knows where its certificate is published (Hash and URL)."""
    if auth.auth != "pubkey" or not auth.certs:
        return auth
    issuers = [*auth.certs[1:], *(load_certificate(path) for path in configuration.authorities)]
    # Hash and URL (RFC 7296 sec. 3.6): our certificate is published under the
    # cert_uri_base of the authority that issued it.
    for section in configuration.authority_sections.values():
        issuer = load_certificate(section.cacert) if section.cacert else None
        if section.cert_uri_base and issuer and issuer.subject == auth.certs[0].issuer:
            auth.cert_uri_base = section.cert_uri_base

    def staple(cert: Any) -> bytes | None:
        issuer = next((c for c in issuers if c.subject == cert.issuer), None)
        return None if issuer is None else revocation.own_response(cert, issuer, time.time())

    auth.ocsp_staple = staple
    return auth


def _resolve_addrs(connection: ConnectionSettings, key: str) -> list[str]:
    """Addresses for the engine: DNS names are resolved now (at load and reload), as the
    engine and the data plane work with addresses only."""
    resolved: list[str] = []
    for addr in getattr(connection, key):
        if addr.startswith("%") or ip_ok(addr):
            resolved.append(addr)
            continue
        try:
            infos = socket.getaddrinfo(addr, None, type=socket.SOCK_DGRAM)
        except OSError as error:
            raise ConfigError(
                f"cannot resolve {addr!r}: {error.strerror or error}",
                file=connection.source,
                key=f"connections.{connection.name}.{key}",
                hint="write an IP address, or make the name resolvable",
            ) from None
        for info in infos:
            address = str(info[4][0])
            if address not in resolved:
                resolved.append(address)
    return resolved


def to_engine_configs(configuration: Configuration) -> list[IkeConfig]:
    """The engine's ``ikev2.config.IkeConfig`` objects, one per connection.

    strongSwan's IKE lifetime defaults are applied here (vici_config.c): with neither
    rekey_time nor reauth_time set, rekey every 4 h; with only reauth_time, no rekeying.
    The ``[daemon]`` retransmission settings apply to every connection (strongSwan's are
    daemon-wide too). PSKs are not copied in: give ``configuration.psk_lookup`` to the
    dispatcher. Remote ``pubkey`` rounds get one shared revocation store
    (aioipsec.revocation: CRLs and OCSP, answers cached until their nextUpdate).
    """

    revocation = revocation_store(configuration)
    # RFC 8784 PPKs by PPK_ID octets (strongSwan compares an identity's encoding).
    ppks = {
        Identity.parse(ppk_id).data: secret.secret
        for secret in configuration.ppk_secrets
        for ppk_id in secret.ids
    }
    engine_configs: list[IkeConfig] = []
    for connection in configuration.connections.values():
        children = [c for c in connection.children.values() if c.mode not in ("pass", "drop")]
        if connection.children and not children:
            continue  # shunts only: kernel policies (aioipsec/runtime/shunts.py), no IKE
        rekey_time, reauth_time = connection.rekey_time, connection.reauth_time
        if rekey_time is None and reauth_time is None:
            rekey_time, reauth_time = 14400.0, 0.0
        engine_configs.append(
            IkeConfig(
                name=connection.name,
                version=2,
                local_addrs=_resolve_addrs(connection, "local_addrs"),
                remote_addrs=_resolve_addrs(connection, "remote_addrs"),
                local_port=connection.local_port,
                remote_port=connection.remote_port,
                proposals=list(connection.proposals),
                encap=connection.encap,
                dpd_delay=connection.dpd_delay,
                dpd_timeout=connection.dpd_timeout,
                rekey_time=rekey_time or 0.0,
                reauth_time=reauth_time or 0.0,
                over_time=connection.over_time,
                rand_time=connection.rand_time,
                fragmentation=connection.fragmentation,
                childless=connection.childless,
                unique=connection.unique,
                ppk_id=connection.ppk_id,
                ppk_required=connection.ppk_required,
                ppks=ppks,
                ocsp=connection.ocsp,
                local=_with_status_and_url(
                    configuration, _auth_to_engine(configuration, connection, "local"), revocation
                ),
                remote=_auth_to_engine(configuration, connection, "remote", revocation),
                children=[_child_to_engine(c) for c in children],
                retransmit_timeout=configuration.daemon.retransmit_timeout,
                retransmit_base=configuration.daemon.retransmit_base,
                retransmit_tries=configuration.daemon.retransmit_tries,
                pools=list(connection.pools),
                vips=list(connection.vips),
            )
        )
    return engine_configs


def child_rekey_limits(child: ChildSettings) -> tuple[int, int, int]:
    """(rekey_time, rekey_bytes, rekey_packets) with strongSwan's defaults applied."""
    rekey_time = child.rekey_time
    if rekey_time is None:
        rekey_time = child.life_time / 1.1 if child.life_time is not None else 3600.0
    rekey_bytes = child.rekey_bytes
    if rekey_bytes is None:
        rekey_bytes = int(child.life_bytes / 1.1) if child.life_bytes else 0
    rekey_packets = child.rekey_packets
    if rekey_packets is None:
        rekey_packets = int(child.life_packets / 1.1) if child.life_packets else 0
    return int(rekey_time), rekey_bytes, rekey_packets
