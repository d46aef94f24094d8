"""The engine's events, acted on: IKE SA bookkeeping, counters, logging (refused
IKE_SA_INIT rate-limited), remote access, RADIUS, cluster and the subscribe stream,
NAT mapping changes, keyingtries."""

from __future__ import annotations

import time
from dataclasses import replace

import structlog

from aioipsec.daemon.state import DaemonState, IkeSaState
from aioipsec.daemon.stream import event_record, public_fields
from aioipsec.keyexport import IkeKeyRow
from aioipsec.log import sa_logger
from ikev2 import events as ev
from ikev2.eap.external import ExternalEapAnswer

log = structlog.get_logger("aioipsec.daemon")


class EngineEvents(DaemonState):
    """``_on_event``: what the daemon does with each engine event."""

    def _radius_answer(self, ike_sa_id: int, answer: ExternalEapAnswer) -> None:
        assert self.driver is not None
        self.driver.call(self.driver.dispatcher.external_eap_answer, ike_sa_id, answer)

    def _on_event(self, event: ev.Event) -> None:
        assert self.datapath is not None
        self._count_event(event)
        if self._subscribers:
            self._publish(event_record(event))
        self.cluster.on_event(event)  # resolves a REDIRECT's FQDN
        if self.radius.on_event(event, self.settings.radius):
            return  # remote auth = eap-radius: the EAP round trip (aioipsec/radius/relay.py)
        bound = sa_logger(log, event.connection, event.ike_sa_id)
        if self.remote_access is not None and self.remote_access.on_event(event, bound):
            return
        if isinstance(event, ev.IkeSaEstablished):
            new_state = IkeSaState(event, time.time())
            self.ike_sas[event.ike_sa_id] = new_state
            self._keying_attempts.pop(event.connection, None)
            self.datapath.nat_local[event.ike_sa_id] = event.nat_local
            bound.info(
                "IKE SA established",
                local=event.local_addr,
                remote=event.remote_addr,
                remote_id=event.remote_id,
                nat_local=event.nat_local,
                nat_remote=event.nat_remote,
                encap=event.udp_encap,
            )
            if event.nat_local and event.udp_encap:
                new_state.keepalive = self.loop.create_task(self._keepalive(event.ike_sa_id))
            self._export_ike_keys(event)
        elif isinstance(event, ev.IkeSaRekeyed):
            # The Child SAs move to the new IKE SA unchanged (RFC 7296 sec. 2.18).
            old = self.ike_sas.pop(event.old_ike_sa_id, None)
            if old is not None:
                old.established = _replace_ike(old.established, event)
                # The new IKE SA is established now (what charon's list-sas shows too).
                old.established_at = time.time()
                self.ike_sas[event.ike_sa_id] = old
                for child_id, child in list(old.children.items()):
                    old.children[child_id] = replace(child, ike_sa_id=event.ike_sa_id)
                if old.keepalive is not None:
                    old.keepalive.cancel()
                    old.keepalive = self.loop.create_task(self._keepalive(event.ike_sa_id))
            self.datapath.rebind_ike_sa(event.old_ike_sa_id, event.ike_sa_id)
            if event.old_ike_sa_id in self._outdated_ike_sas:  # the new SA has the old config
                self._outdated_ike_sas.discard(event.old_ike_sa_id)
                self._outdated_ike_sas.add(event.ike_sa_id)
            bound.info("IKE SA rekeyed", old_ike_sa_id=event.old_ike_sa_id)
            self._export_ike_keys(event)
        elif isinstance(event, ev.IkeSaDeleted):
            state = self.ike_sas.pop(event.ike_sa_id, None)
            self._outdated_ike_sas.discard(event.ike_sa_id)
            self.datapath.nat_local.pop(event.ike_sa_id, None)
            if state is not None:
                if state.keepalive is not None:
                    state.keepalive.cancel()
                for child in list(state.children.values()):
                    self.datapath.remove_child(child.child_sa_id)
                    self.updown.child_down(child.child_sa_id)
                    if self.farp is not None:
                        self.farp.child_down(child.child_sa_id)
            bound.info("IKE SA deleted", reason=event.reason)
            if self.exporter is not None:
                self.exporter.remove_ike_sa(event.spi_i, event.spi_r)
        elif isinstance(event, ev.ChildSaEstablished):
            self._install_child(event, bound)
            self._updown_up(event)
        elif isinstance(event, ev.ChildSaRekeyed):
            self._install_child(event.new, bound, rekey_of=event.old_child_sa_id)
            self.updown.child_rekeyed(event.old_child_sa_id, event.new.child_sa_id)
        elif isinstance(event, ev.ChildSaDeleted):
            if event.reason == "deleted by peer":
                # close_action = trap: the peer closed it; the next packet renegotiates.
                name = event.child
                self._trap_children(
                    event.connection,
                    lambda c: c.name == name and c.close_action == "trap",
                )
            state = self.ike_sas.get(event.ike_sa_id)
            if state is not None:
                state.children.pop(event.child_sa_id, None)
            self.datapath.remove_child(event.child_sa_id)
            self.updown.child_down(event.child_sa_id)
            if self.farp is not None:
                self.farp.child_down(event.child_sa_id)
            bound.info(
                "CHILD SA deleted",
                child=event.child,
                spi_in=f"{event.spi_in:08x}",
                spi_out=f"{event.spi_out:08x}",
                reason=event.reason,
            )
        elif isinstance(event, ev.AuthenticationFailed):
            bound.error(
                "authentication failed",
                check=event.check,
                # sent to the peer, or (check peer-rejected) received from it
                notify="AUTHENTICATION_FAILED",
                reason=event.reason,
                remote=event.remote_addr,
            )
        elif isinstance(event, ev.NegotiationFailed) and _refused_init(event):
            # Anyone can send IKE_SA_INIT, from any (spoofed) address: one line per
            # connection and notify every 10 s, with the count of those not logged.
            self._refusal_log.error(
                "negotiation failed",
                key=(event.connection, event.notify),
                connection=event.connection,
                ike_sa_id=event.ike_sa_id,
                exchange=event.exchange,
                reason=event.reason,
                notify=event.notify.name if event.notify is not None else None,
                received=event.received,
                child=event.child,
            )
        elif isinstance(event, ev.NegotiationFailed):
            bound.error(
                "negotiation failed",
                exchange=event.exchange,
                reason=event.reason,
                notify=event.notify.name if event.notify is not None else None,
                received=event.received,
                child=event.child,
            )
        elif isinstance(event, ev.PeerUnreachable):
            bound.warning("peer unreachable", action=event.action, remote=event.remote_addr)
            if event.action == "trap":
                # dpd_action = trap: the next packet renegotiates (strongSwan semantics).
                self._trap_children(event.connection, lambda c: c.dpd_action == "trap")
            self._retry_keying(event)
        elif isinstance(event, ev.IkeSaAddressChanged):
            self._follow_peer(event)
            bound.info(
                "peer address changed (NAT mapping, authenticated IKE)",
                old=event.old_remote_addr,
                new=event.remote_addr,
            )
        else:
            bound.info(type(event).__name__, **public_fields(event))

    def _count_event(self, event: ev.Event) -> None:
        """The IKE counters (swanctl --counters) that follow engine events."""
        if isinstance(event, ev.IkeSaEstablished):
            self.counters.ike_sa_up(event.connection, event.spi_i)
        elif isinstance(event, ev.IkeSaDeleted):
            self.counters.ike_sa_down(event.spi_i)
        elif isinstance(event, ev.IkeSaRekeyed):
            # RFC 7296 sec. 2.18: who rekeyed is the new IKE SA's original initiator.
            assert self.driver is not None
            try:
                initiator = bool(self.driver.dispatcher.ike_sa(event.ike_sa_id).initiator)
            except Exception:  # already gone again
                initiator = False
            self.counters.ike_rekeyed(event.connection, event.old_spi_i, event.spi_i, initiator)
        elif isinstance(event, ev.ChildSaRekeyed):
            self.counters.child_rekeyed(event.connection)

    def _on_esp_peer_moved(self, ike_sa_id: int, remote: tuple[str, int]) -> None:
        """ESP followed the peer to a new NAT mapping: let the IKE SA follow too (the engine
        applies RFC 7296 sec. 2.23 and answers with IkeSaAddressChanged when it moved)."""
        assert self.driver is not None
        self.driver.call(self.driver.dispatcher.peer_address_seen, ike_sa_id, remote)

    def _follow_peer(self, event: ev.IkeSaAddressChanged) -> None:
        """The engine follows the peer to a new NAT mapping (RFC 7296 sec. 2.23): send the
        Child SAs' ESP-in-UDP and the keepalives there too, so IKE and ESP agree."""
        assert self.datapath is not None
        state = self.ike_sas.get(event.ike_sa_id)
        if state is not None:
            state.established = replace(
                state.established, remote_addr=event.remote_addr, local_addr=event.local_addr
            )
        # The Child SAs of one IKE SA share one PeerAddressTracker (datapath._peer_tracker).
        for entry in self.datapath.children.values():
            if entry.ike_sa_id == event.ike_sa_id and entry.peer.address != event.remote_addr:
                entry.peer.address = (event.remote_addr[0], event.remote_addr[1])
                entry.peer.updates += 1
        self.datapath.peers_changed()  # an encrypt worker sends there too (workers = 2)

    def _export_ike_keys(self, event: ev.IkeSaEstablished | ev.IkeSaRekeyed) -> None:
        if self.exporter is None or self.driver is None:
            return

        keys = self.driver.dispatcher.ike_sa_keys_for_export(event.ike_sa_id)
        if keys is None:
            log.warning("cannot export IKE keys: no keys", ike_sa_id=event.ike_sa_id)
            return
        self.exporter.add_ike_sa(
            IkeKeyRow(
                spi_i=keys.spi_i,
                spi_r=keys.spi_r,
                encr=keys.encr,
                encr_key_bits=keys.encr_key_bits,
                integ=keys.integ,
                sk_ei=keys.sk_ei,
                sk_er=keys.sk_er,
                sk_ai=keys.sk_ai,
                sk_ar=keys.sk_ar,
            )
        )

    def _retry_keying(self, event: ev.PeerUnreachable) -> None:
        """strongSwan's keyingtries: a ``start_action = start`` connection whose IKE SA
        never came up (the peer did not answer) is tried again, with a back-off, until
        keyingtries attempts (0: forever). An SA that was up follows its dpd_action."""
        connection = self.settings.connections.get(event.connection)
        if event.ike_sa_id in self.ike_sas or connection is None:
            return
        starts = [c.name for c in connection.children.values() if c.start_action == "start"]
        if not starts or event.connection in self._keying_pending:
            return
        attempts = self._keying_attempts.get(event.connection, 1)
        delay = connection.keying_retry_delay(attempts)
        if delay is None:
            self._keying_attempts.pop(event.connection, None)
            log.warning("giving up after keyingtries attempts", connection=event.connection,
                        attempts=attempts)  # fmt: skip
            return
        self._keying_attempts[event.connection] = attempts + 1
        self._keying_pending.add(event.connection)
        log.info("peer unreachable: trying again (keyingtries)", connection=event.connection,
                 attempt=attempts + 1, keyingtries=connection.keyingtries, delay=delay)  # fmt: skip

        def retry() -> None:
            self._keying_pending.discard(event.connection)
            current = self.settings.connections.get(event.connection)
            if (
                current is None
                or self.driver is None
                or any(
                    state.established.connection == event.connection
                    for state in self.ike_sas.values()
                )
            ):
                return
            self.driver.call(self.driver.dispatcher.initiate, event.connection, child=starts[0],
                             children=starts[1:])  # fmt: skip

        self.loop.call_later(delay, retry)


def _replace_ike(old: ev.IkeSaEstablished, rekeyed: ev.IkeSaRekeyed) -> ev.IkeSaEstablished:
    return replace(
        old,
        ike_sa_id=rekeyed.ike_sa_id,
        spi_i=rekeyed.spi_i,
        spi_r=rekeyed.spi_r,
        encr=rekeyed.encr,
        encr_key_bits=rekeyed.encr_key_bits,
        integ=rekeyed.integ,
        prf=rekeyed.prf,
        ke=rekeyed.ke,
    )


def _refused_init(event: ev.NegotiationFailed) -> bool:
    """An IKE_SA_INIT request we refused (before any authentication)."""
    return event.exchange == "IKE_SA_INIT" and not event.received
