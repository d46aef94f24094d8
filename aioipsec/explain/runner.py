"""The run: two in-memory engines negotiate; every datagram is recorded.

The engines are the daemon's own (``ikev2.dispatcher.Dispatcher``) on a virtual clock;
with ``--seed`` their ``rng`` is seeded per side and remembers its outputs, so the
derivations can find the key-exchange private values among them.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from ikev2.config import AuthConfig, ChildConfig, IkeConfig
from ikev2.crypto.sk import is_aead
from ikev2.dispatcher import Dispatcher
from ikev2.enums import (
    KeId,
    ProtocolId,
    TransformType,
)
from ikev2.events import (
    ChildSaEstablished,
    Event,
    IkeSaEstablished,
    IkeSaRekeyed,
)
from ikev2.message import IkeMessage, parse_message
from ikev2.proposals import chosen_transform, parse_proposals, to_strongswan

INITIATOR_ADDR = "192.0.2.1"
RESPONDER_ADDR = "192.0.2.2"
INITIATOR_ID = "initiator.example"
RESPONDER_ID = "responder.example"
DEMO_PSK = "aioipsec explain: a demo pre-shared key, never use it"
WIDTH = 78
VECTOR_FORMAT = "aioipsec-explain-vector/1"

X_CURVES = {KeId.CURVE25519: 32, KeId.CURVE448: 56}


class ExplainError(Exception):
    """Options that cannot be explained (reason for people)."""


# ------------------------------------------------------------------------- the run


class RecordingRng:
    """A seeded ``rng(n)`` that remembers what it handed out (to find the KE private
    values among its outputs by their public values: no guessing of call order)."""

    def __init__(self, seed: str | None) -> None:
        self._random = random.Random(seed) if seed is not None else None
        self.outputs: list[bytes] = []

    def __call__(self, size: int) -> bytes:
        data = self._random.randbytes(size) if self._random is not None else os.urandom(size)
        self.outputs.append(data)
        return data


@dataclass
class WireMessage:
    """One datagram between the peers, as parsed (and decrypted, once keys are known)."""

    number: int
    time: float
    from_initiator: bool  # sent by the side that initiated the IKE SA
    source: tuple[str, int]
    destination: tuple[str, int]
    data: bytes
    message: IkeMessage
    inner: IkeMessage | None = None
    sk_keys: str = ""  # which SK_e/SK_a protected it


@dataclass
class Run:
    """Everything one in-memory negotiation produced."""

    seed: int | None
    ike_proposal: str
    esp_proposal: str
    psk: bytes
    encap: bool
    messages: list[WireMessage] = field(default_factory=list)
    rekey_ike: bool = False
    events_i: list[Event] = field(default_factory=list)
    events_r: list[Event] = field(default_factory=list)
    rng_i: RecordingRng = field(default_factory=lambda: RecordingRng(None))
    rng_r: RecordingRng = field(default_factory=lambda: RecordingRng(None))


def _configs(ike: str, esp: str, encap: bool) -> tuple[IkeConfig, IkeConfig]:
    def config(local: str, remote: str, local_id: str, remote_id: str, ts: tuple[str, str]):
        return IkeConfig(
            name="explain",
            local_addrs=[local],
            remote_addrs=[remote],
            proposals=[ike],
            encap=encap,
            local=AuthConfig(auth="psk", id=local_id),
            remote=AuthConfig(auth="psk", id=remote_id),
            children=[
                ChildConfig(name="net", local_ts=[ts[0]], remote_ts=[ts[1]], esp_proposals=[esp])
            ],
        )

    return (
        config(INITIATOR_ADDR, RESPONDER_ADDR, INITIATOR_ID, RESPONDER_ID,
               ("10.1.0.0/16", "10.2.0.0/16")),
        config(RESPONDER_ADDR, INITIATOR_ADDR, RESPONDER_ID, INITIATOR_ID,
               ("10.2.0.0/16", "10.1.0.0/16")),
    )  # fmt: skip


def check_options(ike: str, esp: str, seed: int | None) -> None:
    """Refuse what cannot be explained (or not reproducibly), saying why."""
    try:
        ike_proposals = parse_proposals([ike], ProtocolId.IKE)
        esp_proposals = parse_proposals([esp], ProtocolId.ESP)
    except ValueError as error:
        raise ExplainError(f"proposal: {error}") from None
    if len(ike_proposals) != 1 or len(esp_proposals) != 1:
        raise ExplainError("give exactly one IKE and one ESP proposal (no 'default')")
    for proposal in (*ike_proposals, *esp_proposals):
        for transform in proposal.transforms:
            ttype = int(transform.type)
            if ttype == TransformType.KE and int(transform.id) not in (0, *X_CURVES):
                raise ExplainError(
                    f"{to_strongswan(proposal)}: explain needs x25519 or x448 as key exchange "
                    "(the engine draws ECP, MODP and ML-KEM private values from the OS, so "
                    "their g^ir cannot be shown or reproduced)"
                )
            if ttype > TransformType.ESN:
                raise ExplainError("additional key exchanges (RFC 9370) are not explained")
    encr = chosen_transform(ike_proposals[0], TransformType.ENCR)
    if seed is not None and encr is not None and not is_aead(int(encr.id)):
        raise ExplainError(
            "--seed needs an AEAD IKE cipher (aes*gcm*, aes*ccm*, chacha20poly1305): "
            "AES-CBC IVs come from os.urandom (RFC 7296 sec. 3.14 wants them unpredictable)"
        )


def run_negotiation(
    seed: int | None = None,
    ike: str = "aes256gcm16-prfsha256-x25519",
    esp: str = "aes256gcm16",
    psk: str = DEMO_PSK,
    encap: bool = False,
    rekey_ike: bool = False,
) -> Run:
    """Run the exchanges between two engines (see the module docstring); ``rekey_ike``
    adds a rekey of the IKE SA (CREATE_CHILD_SA, RFC 7296 sec. 2.18) before the end."""
    check_options(ike, esp, seed)
    run = Run(seed, ike, esp, psk.encode(), encap, rekey_ike=rekey_ike)
    run.rng_i = RecordingRng(None if seed is None else f"{seed}/initiator")
    run.rng_r = RecordingRng(None if seed is None else f"{seed}/responder")
    config_i, config_r = _configs(ike, esp, encap)
    lookup: Callable[[str, str], bytes | None] = lambda local, remote: run.psk  # noqa: E731
    initiator = Dispatcher([config_i], lookup, rng=run.rng_i)
    responder = Dispatcher([config_r], lookup, rng=run.rng_r)
    now = 0.0

    def pump() -> None:
        for _ in range(100):
            batch = [(True, d) for d in initiator.datagrams_to_send(now)]
            batch += [(False, d) for d in responder.datagrams_to_send(now)]
            if not batch:
                break
            for from_initiator, datagram in batch:
                target = responder if from_initiator else initiator
                run.messages.append(
                    WireMessage(
                        number=len(run.messages) + 1,
                        time=now,
                        from_initiator=from_initiator,
                        source=datagram.local_addr,
                        destination=datagram.remote_addr,
                        data=datagram.data,
                        message=parse_message(datagram.data),
                    )
                )
                target.receive_datagram(datagram.data, datagram.local_addr,
                                        datagram.remote_addr, now)  # fmt: skip
        else:
            raise ExplainError("the engines did not go quiet")
        while (event := initiator.next_event()) is not None:
            run.events_i.append(event)
        while (event := responder.next_event()) is not None:
            run.events_r.append(event)

    ike_sa_id = initiator.initiate("explain", "net", now=now)
    pump()
    first = [e for e in run.events_i if isinstance(e, ChildSaEstablished)]
    if not first or not any(isinstance(e, IkeSaEstablished) for e in run.events_r):
        raise ExplainError(f"the negotiation failed: {run.events_i + run.events_r}")
    now = 60.0
    initiator.rekey_child(ike_sa_id, first[0].child_sa_id, now)
    pump()
    if rekey_ike:
        now = 90.0
        initiator.rekey_ike(ike_sa_id, now)
        pump()
        rekeyed = [e for e in run.events_i if isinstance(e, IkeSaRekeyed)]
        if not rekeyed:
            raise ExplainError("the IKE SA rekey failed")
        ike_sa_id = rekeyed[-1].ike_sa_id
    now = 120.0
    initiator.terminate_ike(ike_sa_id, now)
    pump()
    return run
