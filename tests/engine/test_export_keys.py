"""Dispatcher.ike_sa_keys_for_export: the keys a Wireshark key log needs, checked by
decrypting the IKE_AUTH request with ``cryptography``'s AES-GCM (RFC 5282 sec. 3, 5.1),
not with the engine's own SK code."""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ikev2.dispatcher import IkeSaExportKeys
from ikev2.enums import EncrId, ExchangeType, PayloadType
from ikev2.events import IkeSaEstablished

from .harness import make_pair

IKE_HEADER = 28
GENERIC_HEADER = 4


def test_export_keys_decrypt_the_ike_auth_request() -> None:
    net = make_pair(seed=3)
    sent: list[tuple[str, bytes]] = []

    def record(datagram, direction):
        sent.append((direction, datagram.data))
        return datagram.data

    net.tap = record
    ike_a = net.a.initiate("conn", "net", now=net.now)
    net.pump()
    (established_b,) = net.events("b", IkeSaEstablished)
    keys_a = net.a.ike_sa_keys_for_export(ike_a)
    keys_b = net.b.ike_sa_keys_for_export(established_b.ike_sa_id)
    assert isinstance(keys_a, IkeSaExportKeys) and keys_a == keys_b
    assert keys_a.encr == EncrId.ENCR_AES_GCM_16 and keys_a.encr_key_bits == 256
    assert keys_a.integ is None and keys_a.sk_ai == b"" == keys_a.sk_ar
    assert (keys_a.spi_i, keys_a.spi_r) == (established_b.spi_i, established_b.spi_r)
    assert keys_a.sk_ei.hex() not in repr(keys_a)
    assert net.a.ike_sa_keys_for_export(999) is None

    (auth_request,) = [
        data for direction, data in sent
        if direction == "a->b" and data[18] == ExchangeType.IKE_AUTH
    ]  # fmt: skip
    # Header, SK payload header, 8-octet IV, ciphertext, 16-octet ICV; nonce = salt || IV.
    sk_start = IKE_HEADER
    assert auth_request[16] == PayloadType.SK
    body_start = sk_start + GENERIC_HEADER
    iv = auth_request[body_start : body_start + 8]
    key, salt = keys_a.sk_ei[:-4], keys_a.sk_ei[-4:]
    plain = AESGCM(key).decrypt(
        salt + iv, auth_request[body_start + 8 :], auth_request[:body_start]
    )
    pad_length = plain[-1]
    inner = plain[: len(plain) - 1 - pad_length]
    first_inner = auth_request[sk_start]
    assert first_inner == PayloadType.IDi
    # IDi's body: ID type 2 (FQDN) and the initiator's identity.
    id_length = int.from_bytes(inner[2:4], "big")
    assert inner[4] == 2 and inner[8:id_length].decode() == established_b.remote_id
