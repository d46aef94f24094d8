"""The daemon's RadiusService without a [radius] table: a relayed EAP conversation is
answered with a failure that says what to configure, outside the engine's event delivery."""

from __future__ import annotations

import asyncio

from aioipsec.radius.relay import RadiusService
from ikev2.eap.external import ExternalEapAnswer
from ikev2.events import AuthenticationFailed, EapRelay


def test_no_radius_server_fails_the_conversation_saying_what_to_configure() -> None:
    answers: list[tuple[int, ExternalEapAnswer]] = []
    relay = EapRelay(
        7, "rw", identity="carol", peer_id="carol@example.org", message=b"\x02\x01\x00\x05\x01",
        first=True, local_addr=("192.0.2.1", 500), remote_addr=("192.0.2.10", 500),
    )  # fmt: skip

    async def deliver() -> bool:
        service = RadiusService(lambda ike_sa_id, answer: answers.append((ike_sa_id, answer)))
        handled = service.on_event(relay, None)
        assert answers == []  # not from inside the engine's event delivery
        await asyncio.sleep(0)
        return handled

    assert asyncio.run(deliver())
    ((ike_sa_id, answer),) = answers
    assert ike_sa_id == 7 and answer.message == b"" and answer.msk is None
    assert answer.reason is not None and "[radius]" in answer.reason


def test_other_events_are_not_its_business() -> None:
    service = RadiusService(lambda ike_sa_id, answer: None)
    event = AuthenticationFailed(7, "rw", "eap", "refused", ("192.0.2.10", 500))
    assert service.on_event(event, None) is False
