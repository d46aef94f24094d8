"""Child SA state: what was negotiated for one ESP/AH SA pair and where it is in its life.

The engine (``ikev2.sa``) owns these objects; the data plane only ever sees the
:class:`ikev2.events.ChildSaEstablished` built by :meth:`ChildSa.established_event`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ikev2.config import ChildConfig
from ikev2.enums import EncrId, IntegId, ProtocolId
from ikev2.events import Address, ChildSaEstablished
from ikev2.states import ChildState, child_transition
from ikev2.ts import Ts


# slots: no instance dictionary (one Child SA per tunnel, 10,000s of them).
@dataclass(slots=True)
class ChildSa:
    child_sa_id: int
    config: ChildConfig
    protocol: ProtocolId = ProtocolId.ESP
    mode: str = "tunnel"
    state: ChildState = ChildState.CREATING
    spi_in: int = 0
    spi_out: int = 0
    encr: EncrId | None = None
    encr_key_bits: int | None = None
    integ: IntegId | None = None
    esn: bool = False
    encr_key_in: bytes = field(default=b"", repr=False)
    encr_key_out: bytes = field(default=b"", repr=False)
    integ_key_in: bytes = field(default=b"", repr=False)
    integ_key_out: bytes = field(default=b"", repr=False)
    local_ts: list[Ts] = field(default_factory=list)
    remote_ts: list[Ts] = field(default_factory=list)
    initiator: bool = False  # we initiated the exchange that created it
    tfc_padding: bool = True
    ke_method: int = 0  # PFS group used (0: none)
    # Lifetimes (absolute times, set when installed).
    installed_at: float = 0.0
    rekey_at: float | None = None
    expire_at: float | None = None
    # Nonces of the exchange that created this SA (RFC 7296 sec. 2.8.1 collisions).
    nonce_i: bytes = field(default=b"", repr=False)
    nonce_r: bytes = field(default=b"", repr=False)
    # Rekey bookkeeping: the successor this SA was replaced by, and the Child SA the peer
    # created by rekeying it while our own rekey was in flight (a collision).
    successor: ChildSa | None = field(default=None, repr=False)
    peer_rekey: ChildSa | None = field(default=None, repr=False)
    rekeyed_from: ChildSa | None = field(default=None, repr=False)
    delete_reported: bool = False
    proposal_text: str = ""
    # RFC 9370: additional key exchanges still to run before the keys exist.
    addke_methods: list[int] = field(default_factory=list)
    pending_shared: bytes | None = field(default=None, repr=False)

    def to(self, trigger: str) -> None:
        self.state = child_transition(self.state, trigger)

    @property
    def alive(self) -> bool:
        return self.state is not ChildState.DELETED

    @property
    def lowest_nonce(self) -> bytes:
        return min(self.nonce_i, self.nonce_r)

    def established_event(
        self,
        ike_sa_id: int,
        connection: str,
        *,
        udp_encap: bool,
        local_addr: Address,
        remote_addr: Address,
    ) -> ChildSaEstablished:
        config = self.config
        return ChildSaEstablished(
            ike_sa_id=ike_sa_id,
            connection=connection,
            child=config.name,
            child_sa_id=self.child_sa_id,
            protocol=self.protocol,
            mode=self.mode,
            spi_in=self.spi_in,
            spi_out=self.spi_out,
            encr=self.encr,
            encr_key_bits=self.encr_key_bits,
            integ=self.integ,
            esn=self.esn,
            encr_key_in=self.encr_key_in,
            encr_key_out=self.encr_key_out,
            integ_key_in=self.integ_key_in,
            integ_key_out=self.integ_key_out,
            local_ts=tuple(ts.to_range() for ts in self.local_ts),
            remote_ts=tuple(ts.to_range() for ts in self.remote_ts),
            udp_encap=udp_encap,
            local_addr=local_addr,
            remote_addr=remote_addr,
            replay_window=config.replay_window,
            rekey_time=config.rekey_time,
            life_time=config.effective_life_time(),
            rekey_bytes=config.rekey_bytes,
            life_bytes=config.life_bytes,
            rekey_packets=config.rekey_packets,
            life_packets=config.life_packets,
            initiator=self.initiator,
            tfc_padding=self.tfc_padding,
        )

    def describe(self) -> str:
        return (
            f"{self.config.name}{{{self.child_sa_id}}} {self.state.value} "
            f"SPIs {self.spi_in:08x}_i {self.spi_out:08x}_o"
        )
