"""Our IKE_SA_INIT messages decoded by scapy's independent IKEv2 dissector (an oracle we
did not write): payload chain, proposal, KE group, nonce, NAT-D hashes computed the RFC
7296 sec. 2.23 way from the addresses and SPIs."""

from __future__ import annotations

import hashlib
import ipaddress

import pytest
import scapy.contrib.ikev2 as scapy_ikev2

from tests.engine.harness import ADDR_A, ADDR_B, make_pair


def layers(packet) -> list:
    out = []
    layer = packet.payload
    while layer is not None and layer.__class__.__name__ != "NoPayload":
        out.append(layer)
        layer = layer.payload
    return out


def natd(spi_i: bytes, spi_r: bytes, host: str, port: int) -> bytes:
    return hashlib.sha1(
        spi_i + spi_r + ipaddress.ip_address(host).packed + port.to_bytes(2, "big")
    ).digest()


@pytest.mark.parametrize("encap", [False, True])
def test_ike_sa_init_request_and_response_decode(encap: bool) -> None:
    net = make_pair(a_encap=encap)
    net.a.initiate("conn", "net", now=0.0)
    (request,) = net.a.datagrams_to_send(0.0)
    packet = scapy_ikev2.IKEv2(request.data)
    assert packet.exch_type == 34 and packet.flags == 0x08 and packet.id == 0
    assert packet.length == len(request.data)
    names = [layer.__class__.__name__ for layer in layers(packet)]
    assert names[:3] == ["IKEv2_SA", "IKEv2_KE", "IKEv2_Nonce"]
    sa, ke, nonce = layers(packet)[:3]
    assert ke.group == 31 and len(ke.ke) == 32
    assert len(nonce.nonce) == 32
    transforms = []
    transform = sa.prop.trans
    while transform is not None and transform.__class__.__name__ == "IKEv2_Transform":
        transforms.append((transform.transform_type, transform.transform_id))
        transform = transform.payload
    # aes256gcm16 (ENCR 20), prfsha256 (PRF 5), x25519 (KE 31)
    assert (1, 20) in transforms and (2, 5) in transforms and (4, 31) in transforms
    notifies = {
        layer.type: bytes(layer.notify)
        for layer in layers(packet)
        if layer.__class__.__name__ == "IKEv2_Notify"
    }
    spi_i = bytes(packet.init_SPI)
    assert notifies[16389] == natd(spi_i, bytes(8), ADDR_B, 500)  # DESTINATION_IP
    source_matches = notifies[16388] == natd(spi_i, bytes(8), ADDR_A, 500)
    assert source_matches is not encap  # encap fakes a NAT: the source hash never matches
    assert 16430 in notifies and notifies[16431] == bytes.fromhex("0002000300040005")

    net.b.receive_datagram(request.data, request.local_addr, request.remote_addr, 0.0)
    (response,) = net.b.datagrams_to_send(0.0)
    answer = scapy_ikev2.IKEv2(response.data)
    assert answer.exch_type == 34 and answer.flags == 0x20
    assert bytes(answer.init_SPI) == spi_i and any(bytes(answer.resp_SPI))
    chosen = layers(answer)[0]
    assert chosen.__class__.__name__ == "IKEv2_SA"
    notifies = {
        layer.type: bytes(layer.notify)
        for layer in layers(answer)
        if layer.__class__.__name__ == "IKEv2_Notify"
    }
    spi_r = bytes(answer.resp_SPI)
    assert notifies[16388] == natd(spi_i, spi_r, ADDR_B, 500)
    assert notifies[16389] == natd(spi_i, spi_r, ADDR_A, 500)
