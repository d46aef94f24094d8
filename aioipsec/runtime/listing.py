"""SA listings with the key names of strongSwan's VICI ``list-sas`` event.

``aioipsec sas --json`` returns these dicts, so tools written for ``swanctl --list-sas``
/ VICI can read ours. As in VICI, values are strings (numbers in decimal, SPIs in hex);
lists are lists of strings. Keys are never part of a listing.
"""

from __future__ import annotations

from typing import Any

from ikev2 import events as ev
from ikev2.enums import EncrId, IntegId, KeId, PrfId

_AEAD = {
    EncrId.ENCR_AES_GCM_8,
    EncrId.ENCR_AES_GCM_12,
    EncrId.ENCR_AES_GCM_16,
    EncrId.ENCR_AES_CCM_8,
    EncrId.ENCR_AES_CCM_12,
    EncrId.ENCR_AES_CCM_16,
    EncrId.ENCR_CHACHA20_POLY1305,
    EncrId.ENCR_NULL_AUTH_AES_GMAC,
}


def encr_name(encr: EncrId | int | None) -> str:
    """strongSwan's name: ``AES_GCM_16``, ``AES_CBC``, ``CHACHA20_POLY1305``."""
    if encr is None:
        return "NULL"
    try:
        return EncrId(encr).name.removeprefix("ENCR_")
    except ValueError:
        return f"ENCR_{int(encr)}"


def integ_name(integ: IntegId | int | None) -> str | None:
    if integ is None or integ == IntegId.NONE:
        return None
    try:
        return IntegId(integ).name.removeprefix("AUTH_")
    except ValueError:
        return f"AUTH_{int(integ)}"


def prf_name(prf: PrfId | int | None) -> str | None:
    if prf is None:
        return None
    try:
        return PrfId(prf).name
    except ValueError:
        return f"PRF_{int(prf)}"


def ke_name(ke: KeId | int | None) -> str | None:
    """strongSwan's names: ``CURVE_25519``, ``ECP_256``, ``MODP_2048``, ``ML_KEM_768``."""
    if ke is None or ke == 0:
        return None
    try:
        name = KeId(ke).name
    except ValueError:
        return f"KE_{int(ke)}"
    return {"CURVE25519": "CURVE_25519", "CURVE448": "CURVE_448"}.get(name, name)


def _ts_text(ts: ev.TrafficSelectorRange) -> str:
    return str(ts)


def ike_sa_listing(info: Any, state: Any, now_wall: float) -> dict[str, Any]:
    """One IKE SA. ``info`` is the engine's snapshot (``Dispatcher.sas()`` item), ``state``
    the daemon's record (``None`` while the SA is still being negotiated)."""
    established: ev.IkeSaEstablished | None = state.established if state is not None else None
    entry: dict[str, Any] = {
        "uniqueid": str(getattr(info, "ike_sa_id", "")),
        "version": "2",
        "state": str(getattr(info, "state", "ESTABLISHED" if established else "CONNECTING")),
    }
    engine_state = getattr(info, "state", None)
    if engine_state is not None:
        entry["state"] = getattr(engine_state, "name", str(engine_state))
    if established is None:
        for key, attr in (("initiator-spi", "spi_i"), ("responder-spi", "spi_r")):
            value = getattr(info, attr, None)
            if value is not None:
                entry[key] = f"{value:016x}"
        return entry
    entry.update(
        {
            "local-host": established.local_addr[0],
            "local-port": str(established.local_addr[1]),
            "local-id": established.local_id,
            "remote-host": established.remote_addr[0],
            "remote-port": str(established.remote_addr[1]),
            "remote-id": established.remote_id,
            "initiator-spi": f"{established.spi_i:016x}",
            "responder-spi": f"{established.spi_r:016x}",
            "encr-alg": encr_name(established.encr),
            "established": str(max(0, int(now_wall - state.established_at))),
        }
    )
    if established.initiator:
        entry["initiator"] = "yes"  # VICI lists it only when true
    if established.encr_key_bits:
        entry["encr-keysize"] = str(established.encr_key_bits)
    integ = integ_name(established.integ)
    if integ is not None:
        entry["integ-alg"] = integ
    prf = prf_name(established.prf)
    if prf is not None:
        entry["prf-alg"] = prf
    ke = ke_name(established.ke)
    if ke is not None:
        entry["dh-group"] = ke
    if established.nat_local:
        entry["nat-local"] = "yes"
    if established.nat_remote:
        entry["nat-remote"] = "yes"
    if established.nat_local or established.nat_remote:
        entry["nat-any"] = "yes"
    return entry


def ike_sa_timers(deadline: Any, now: float) -> dict[str, str]:
    """VICI's ``rekey-time`` and ``reauth-time`` of an IKE SA: seconds until the engine's
    ``ike_rekey``/``ike_reauth`` deadlines (``deadline(name)`` gives one, or None when it
    is not set). As in VICI, an IKE SA has no ``life-time``."""
    timers: dict[str, str] = {}
    for key, name in (("rekey-time", "ike_rekey"), ("reauth-time", "ike_reauth")):
        at = deadline(name)
        if at is not None:
            timers[key] = str(max(0, int(at - now)))
    return timers


def child_sa_listing(
    child: ev.ChildSaEstablished, counters: dict[str, int], now_wall: float
) -> dict[str, Any]:
    """One Child SA, with the data plane's counters."""
    installed_at = counters.get("installed_at", now_wall)
    entry: dict[str, Any] = {
        "name": child.child,
        "uniqueid": str(child.child_sa_id),
        "state": "INSTALLED",
        "mode": child.mode.upper(),
        "protocol": getattr(child.protocol, "name", str(child.protocol)),
        "encap": "yes" if child.udp_encap else "no",
        "spi-in": f"{child.spi_in:08x}",
        "spi-out": f"{child.spi_out:08x}",
        "encr-alg": encr_name(child.encr),
        "bytes-in": str(counters.get("bytes_in", 0)),
        "packets-in": str(counters.get("packets_in", 0)),
        "bytes-out": str(counters.get("bytes_out", 0)),
        "packets-out": str(counters.get("packets_out", 0)),
        "install-time": str(max(0, int(now_wall - installed_at))),
        "rekey-time": str(max(0, int(child.rekey_time - (now_wall - installed_at)))),
        "life-time": str(max(0, int(child.life_time - (now_wall - installed_at)))),
        "local-ts": [_ts_text(ts) for ts in child.local_ts],
        "remote-ts": [_ts_text(ts) for ts in child.remote_ts],
    }
    if child.encr_key_bits and child.encr not in (None, EncrId.ENCR_CHACHA20_POLY1305):
        entry["encr-keysize"] = str(child.encr_key_bits)
    integ = integ_name(child.integ)
    if integ is not None:
        entry["integ-alg"] = integ
    if child.esn:
        entry["esn"] = "1"
    if counters.get("reqid") is not None:
        entry["reqid"] = str(counters["reqid"])
    for direction in ("in", "out"):
        # Seconds since the last packet (VICI use-in/use-out); absent before the first.
        if counters.get(f"use_{direction}") is not None:
            entry[f"use-{direction}"] = str(max(0, int(counters[f"use_{direction}"])))
    return entry
