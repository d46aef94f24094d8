"""The daemon's commands that came with VICI (issue 18), as a mixin of
:class:`aioipsec.daemon.Daemon`.

They sit in the daemon's one command table (``Daemon.control_handlers``) beside ``sas``,
``initiate`` and the others: the JSON control socket and the VICI socket call the same
handler, each handler taking an ``args`` dict and returning JSON-encodable data. Results use
strongSwan's VICI key names, so the VICI layer (:mod:`aioipsec.vici.commands`) only
reshapes (streams lists as events, adds ``success``); it implements nothing.

Connections, shared keys, private keys and certificates loaded here (``load-conn``, ...)
live beside the configuration files' and survive a reload; ``get-conns`` / ``get-shared`` /
``get-keys`` list only these, as charon lists only what came over VICI. Certificate and key
blobs are written to a private directory (mode 0700) because the configuration refers to
certificates by file; private keys stay in memory.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from aioipsec.control import RequestError
from aioipsec.pools import PoolProblem, parse_pool

__all__ = ["DaemonCommands"]

_SHARED_TYPES = ("ike",)  # load-shared types aioipsec supports
_UNSUPPORTED_SHARED = {
    "eap": "aioipsec has no EAP",
    "xauth": "XAuth is IKEv1, aioipsec speaks IKEv2 only",
    "ntlm": "aioipsec has no EAP (NTLM secrets serve EAP-MSCHAPv2)",
    "ppk": "aioipsec has no postquantum preshared keys (RFC 8784)",
}


def _flag(value: Any) -> bool:
    return str(value).lower() in ("yes", "true", "1")


def _blob(value: Any) -> bytes:
    """A VICI blob as the VICI layer hands it (str with surrogates), or bytes."""
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8", "surrogateescape")


def _since(started: float) -> str:
    # charon prints its start time with "%b %d %H:%M:%S %Y" (stats, "since").
    return time.strftime("%b %d %H:%M:%S %Y", time.localtime(started))


class DaemonCommands:
    """Mixin: the handlers; ``Daemon`` provides settings, driver, datapath, counters."""

    # Provided by Daemon (declared for the type checker).
    settings: Any
    driver: Any
    datapath: Any
    engine_configs: list[Any]
    started_at: float
    counters: Any
    remote_access: Any
    _config_module: Any

    # ------------------------------------------------------------------ state

    def _init_commands(self) -> None:
        # What arrived over the control/VICI sockets, re-applied after every reload.
        self.loaded_connections: dict[str, Any] = {}
        self.loaded_secrets: dict[str, Any] = {}
        self.loaded_keys: dict[str, Any] = {}
        self.loaded_certs: dict[str, tuple[Path, bool]] = {}  # sha1 -> (file, is a CA)
        self.loaded_pools: dict[str, Any] = {}  # name -> PoolSettings (load-pool)
        self._creds_dir: Path | None = None

    def _creds_directory(self) -> Path:
        if self._creds_dir is None:
            self._creds_dir = Path(tempfile.mkdtemp(prefix="aioipsec-creds-"))
            os.chmod(self._creds_dir, 0o700)
        return self._creds_dir

    def _remove_creds_directory(self) -> None:
        if self._creds_dir is not None:
            shutil.rmtree(self._creds_dir, ignore_errors=True)
            self._creds_dir = None

    def _write_blob(self, blob: bytes, suffix: str) -> Path:
        digest = hashlib.sha1(blob).hexdigest()
        path = self._creds_directory() / f"{digest}{suffix}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(blob)
        return path

    def _overlay(self, settings: Any) -> None:
        """Put what was loaded over the sockets on top of SETTINGS (file configuration)."""
        settings.connections.update(self.loaded_connections)
        names = {s.name for s in self.loaded_secrets.values()}
        settings.shared_secrets = [
            s for s in settings.shared_secrets if s.name not in names
        ] + list(self.loaded_secrets.values())
        settings.private_keys.extend(self.loaded_keys.values())
        settings.authorities.extend(path for path, ca in self.loaded_certs.values() if ca)
        settings.pools.update(self.loaded_pools)

    def _apply_settings(self, settings: Any, configs: list[Any] | None = None) -> list[Any]:
        """Make SETTINGS the running configuration (engine configs, traps, start actions for
        new connections). Raises ConfigError (nothing changed) when it does not convert."""
        raise NotImplementedError  # Daemon implements it (shared with reload)

    def _try_apply(self, settings: Any) -> None:
        try:
            self._apply_settings(settings)
        except self._config_module.ConfigError as error:
            raise RequestError(str(error)) from None

    def _copy_settings(self) -> Any:
        """A shallow copy of the running settings to change and apply (the original stays
        in force if the change does not convert)."""
        from dataclasses import replace

        current = self.settings
        return replace(
            current,
            connections=dict(current.connections),
            shared_secrets=list(current.shared_secrets),
            private_keys=list(current.private_keys),
            authorities=list(current.authorities),
        )

    # ------------------------------------------------------------------ information

    async def _cmd_version(self, args: dict[str, Any]) -> dict[str, Any]:
        """VICI ``version``: daemon, version and the system's uname."""
        try:
            version = metadata.version("aioipsec")
        except metadata.PackageNotFoundError:
            version = "unknown"
        uname = platform.uname()
        return {
            "daemon": "aioipsec",
            "version": version,
            "sysname": uname.system,
            "release": uname.release,
            "machine": uname.machine,
        }

    async def _cmd_get_algorithms(self, args: dict[str, Any]) -> dict[str, Any]:
        """VICI ``get-algorithms``: algorithm type -> {name: implementation}, with
        strongSwan 5.9's type names and algorithm names, for what aioipsec implements (the
        ESP data plane's transforms, the IKE PRFs and key exchanges); every implementation
        is the ``cryptography`` package (OpenSSL)."""
        from aioipsec.runtime.listing import encr_name, integ_name, ke_name, prf_name
        from esp.transforms import ENCR_INFO, INTEG_INFO
        from ikev2.crypto.keyexchange import SUPPORTED_KE_METHODS
        from ikev2.crypto.prf import SUPPORTED_PRFS

        impl = "cryptography"
        return {
            "encryption": {encr_name(e): impl for e, info in ENCR_INFO.items() if not info.aead},
            "integrity": {integ_name(i) or str(i): impl for i in INTEG_INFO},
            "aead": {encr_name(e): impl for e, info in ENCR_INFO.items() if info.aead},
            "prf": {prf_name(p) or str(p): impl for p in sorted(SUPPORTED_PRFS)},
            "dh": {ke_name(k) or str(k): impl for k in sorted(SUPPORTED_KE_METHODS)},
        }

    async def _cmd_list_conns(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        """``swanctl --list-conns`` / VICI ``list-conns`` (optionally one ``ike``)."""
        listing = self._config_module.connection_listing(self.settings)
        wanted = args.get("ike")
        return [entry for entry in listing if not wanted or wanted in entry]

    async def _cmd_list_policies(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        """VICI ``list-policies``: the trap policies installed (``start_action = trap``,
        ``install``), one ``{"ike/child": {...}}`` each. aioipsec has no drop or bypass
        (shunt) policies, so ``drop``/``pass`` list nothing."""
        assert self.datapath is not None
        wanted_ike, wanted_child = args.get("ike"), args.get("child")
        if not any(_flag(args.get(k, "")) for k in ("trap", "drop", "pass")):
            trap = True  # charon lists nothing unless asked; the JSON socket asks for all
        else:
            trap = _flag(args.get("trap", ""))
        result: list[dict[str, Any]] = []
        if not trap:
            return result
        for config in self.engine_configs:
            if wanted_ike and config.name != wanted_ike:
                continue
            for child in config.children:
                if wanted_child and child.name != wanted_child:
                    continue
                if self.datapath.has_trap(config.name, child.name):
                    result.append(
                        {
                            f"{config.name}/{child.name}": {
                                "child": child.name,
                                "ike": config.name,
                                "mode": child.mode.upper(),
                                "local-ts": [str(ts) for ts in child.local_ts],
                                "remote-ts": [str(ts) for ts in child.remote_ts],
                            }
                        }
                    )
        return result

    async def _cmd_list_certs(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        """VICI ``list-certs``: every X.509 certificate the configuration uses (the
        connections' certs and cacerts, the authorities), DER-encoded as charon sends them.
        Only X509 certificates exist in aioipsec; other types list nothing."""
        from cryptography.hazmat.primitives.serialization import Encoding

        wanted_type = str(args.get("type", "ANY")).upper()
        wanted_flag = str(args.get("flag", "ANY")).upper()
        wanted_subject = args.get("subject")
        if wanted_type not in ("ANY", "X509"):
            return []
        own_keys = {
            _public_der(key.key.public_key())
            for key in self.settings.private_keys
            if key.key is not None
        }
        seen: dict[bytes, dict[str, Any]] = {}

        def add(path: Path, ca: bool) -> None:
            try:
                cert = self._config_module.load_certificate(path)
            except self._config_module.ConfigError:
                return
            der = cert.public_bytes(Encoding.DER)
            if der in seen:
                return
            entry: dict[str, Any] = {"type": "X509", "flag": "CA" if ca else "NONE"}
            if _public_der(cert.public_key()) in own_keys:
                entry["has_privkey"] = "yes"
            entry["data"] = der
            if wanted_subject and wanted_subject != self._config_module.strongswan_dn(cert.subject):
                return
            seen[der] = entry

        for connection in self.settings.connections.values():
            for side in (connection.local, connection.remote):
                for path in side.certs:
                    add(path, False)
                for path in side.cacerts:
                    add(path, True)
        for path in self.settings.authorities:
            add(path, True)
        for path, ca in self.loaded_certs.values():
            add(path, ca)
        return [entry for entry in seen.values() if wanted_flag in ("ANY", entry["flag"])]

    async def _cmd_list_authorities(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        """VICI ``list-authorities``: none. aioipsec has no ``authorities`` sections (CRL
        and OCSP URIs): its CA certificates are listed by ``list-certs``."""
        return []

    async def _cmd_get_authorities(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"authorities": []}

    async def _cmd_get_pools(self, args: dict[str, Any]) -> dict[str, Any]:
        """VICI ``get-pools``: the ``pools`` listing keyed by pool name, with charon's keys
        (``base``, ``size``, ``online``, ``offline``; ``leases`` numbered from "0", each
        ``address``/``identity``/``status``, only with ``leases = yes``); ``name`` filters."""
        wanted, leases = args.get("name"), _flag(args.get("leases", ""))
        listing = self.remote_access.listing(leases) if self.remote_access is not None else []
        result: dict[str, Any] = {}
        for pool in listing:
            if wanted and pool["name"] != wanted:
                continue
            entry: dict[str, Any] = {
                key: str(pool[key]) for key in ("base", "size", "online", "offline")
            }
            if leases:
                entry["leases"] = {str(i): lease for i, lease in enumerate(pool["leases"])}
            result[pool["name"]] = entry
        return result

    async def _cmd_load_pool(self, args: dict[str, Any]) -> dict[str, Any]:
        """Load (or replace) pools given as swanctl.conf ``pools`` sections,
        ``{name: {addrs, dns, ...}}``, as VICI ``load-pool`` carries them. As charon: a pool
        whose addresses change is replaced only while it has no online lease (one whose
        addresses stay keeps its leases and takes the new attributes)."""
        config = self._config_module
        if not args or not all(isinstance(v, dict) for v in args.values()):
            raise RequestError("load-pool needs one section {name: {addrs = ..., ...}}")
        current = self.settings.pools
        for name, section in args.items():
            old = current.get(name)
            if old is None:
                continue
            online = self._online_leases()
            try:
                new_addrs = parse_pool(name, section).addrs_text
            except PoolProblem:
                continue  # the build below reports what is wrong with it
            if new_addrs != old.addrs_text and online.get(name):
                raise RequestError(
                    f"pool {name} has {online[name]} online leases, unable to replace: "
                    "wait until its clients are gone, or give the new addresses another name"
                )
        # The other pools stay: the build checks the new ones do not overlap them.
        base = config.Configuration()
        base.pools = {name: pool for name, pool in current.items() if name not in args}
        source = config.RawSource(
            path="load-pool",
            data={"pools": dict(args)},
            locate=lambda key_path: ("load-pool", None),
            kind="swanctl",
        )
        try:
            built = config.build_configuration(source, base)
        except config.ConfigError as error:
            raise RequestError(str(error)) from None
        loaded = {name: built.pools[name] for name in args}
        self.settings.pools.update(loaded)
        self.loaded_pools.update(loaded)
        if self.remote_access is not None:
            self.remote_access.reload(self.settings.pools.values())
        return {"loaded": sorted(loaded)}

    def _online_leases(self) -> dict[str, int]:
        """Pool name -> its online leases (charon refuses to drop a pool in use)."""
        if self.remote_access is None:
            return {}
        return {pool["name"]: pool["online"] for pool in self.remote_access.listing(False)}

    async def _cmd_unload_pool(self, args: dict[str, Any]) -> dict[str, Any]:
        """Unload a pool by ``name``; refused while it has online leases (as charon)."""
        name = args.get("name")
        if not name:
            raise RequestError("unload-pool needs name = <pool>")
        if name not in self.settings.pools:
            raise RequestError(f"pool {name!r} not found (get-pools lists them)")
        online = self._online_leases()
        if online.get(name):
            raise RequestError(
                f"pool {name} has {online[name]} online leases, unable to unload: "
                "terminate its clients' IKE SAs first"
            )
        del self.settings.pools[name]
        self.loaded_pools.pop(name, None)
        if self.remote_access is not None:
            self.remote_access.reload(self.settings.pools.values())
        return {"unloaded": name}

    # ------------------------------------------------------------------ counters

    async def _cmd_get_counters(self, args: dict[str, Any]) -> dict[str, Any]:
        """VICI ``get-counters``: ``{"counters": {name|"": {counter: value}}}``."""
        if self.driver is not None:
            self.counters.engine_unknown_spi(self.driver.dispatcher.counters.get("unknown_spi", 0))
        name = args.get("name")
        if name and not _flag(args.get("all", "")) and name not in self.settings.connections:
            raise RequestError(f"no connection named {name!r}")
        return {"counters": self.counters.listing(name, _flag(args.get("all", "")))}

    async def _cmd_reset_counters(self, args: dict[str, Any]) -> dict[str, Any]:
        if self.driver is not None:
            self.counters.engine_unknown_spi(self.driver.dispatcher.counters.get("unknown_spi", 0))
        self.counters.reset(args.get("name"), _flag(args.get("all", "")))
        return {"reset": True}

    # ------------------------------------------------------------------ connections

    async def _cmd_load_conn(self, args: dict[str, Any]) -> dict[str, Any]:
        """Load (or replace) connections given as swanctl.conf sections, ``{name: {...}}``,
        as VICI ``load-conn`` carries them. Certificates (``certs``/``cacerts``) come as
        PEM or DER blobs (what swanctl sends) or, over the JSON socket, file names."""
        config = self._config_module
        if not args:
            raise RequestError("load-conn needs one section {name: {...connection...}}")
        tree = {name: self._conn_files(section) for name, section in args.items()}
        source = config.RawSource(
            path="load-conn",
            data={"connections": tree},
            locate=lambda key_path: ("load-conn", None),
            kind="swanctl",
            allow_weak=tuple(self.settings.daemon.allow_weak_algorithms),
        )
        try:
            built = config.build_configuration(source, config.Configuration())
        except config.ConfigError as error:
            raise RequestError(str(error)) from None
        settings = self._copy_settings()
        settings.connections.update(built.connections)
        self._try_apply(settings)
        self.loaded_connections.update(built.connections)
        return {"loaded": sorted(built.connections)}

    def _conn_files(self, section: Any) -> Any:
        """Write certificate blobs of a load-conn tree to files (the configuration names
        credentials by file)."""
        if not isinstance(section, dict):
            return section
        result: dict[str, Any] = {}
        for key, value in section.items():
            if key in ("certs", "cacerts", "pubkeys") and isinstance(value, list):
                paths = []
                for item in value:
                    blob = _blob(item)
                    if b"-----BEGIN" in blob or b"\x00" in blob or blob[:1] == b"\x30":
                        paths.append(str(self._write_blob(blob, ".crt")))
                    else:
                        paths.append(str(item))  # a file name (JSON socket)
                result[key] = paths
            else:
                result[key] = self._conn_files(value)
        return result

    async def _cmd_unload_conn(self, args: dict[str, Any]) -> dict[str, Any]:
        """Unload a connection by ``name`` (its SAs stay until they end, as in charon)."""
        name = args.get("name")
        if not name:
            raise RequestError("unload-conn needs name = <connection>")
        if name not in self.settings.connections:
            raise RequestError(f"connection '{name}' not found")
        settings = self._copy_settings()
        del settings.connections[name]
        self._try_apply(settings)
        self.loaded_connections.pop(name, None)
        return {"unloaded": name}

    async def _cmd_get_conns(self, args: dict[str, Any]) -> dict[str, Any]:
        """The connections loaded over the sockets (not those of the configuration files)."""
        return {"conns": sorted(self.loaded_connections)}

    async def _cmd_install(self, args: dict[str, Any]) -> dict[str, Any]:
        """Install the trap policy of a child (VICI ``install``): the next packet matching
        it negotiates the CHILD SA. aioipsec has no drop/pass policies to install."""
        assert self.datapath is not None
        config, child = self._find_child(args)
        if not self.datapath.has_trap(config.name, child.name):
            self.datapath.add_trap(config, child)
        return {"installed": f"{config.name}/{child.name}"}

    async def _cmd_uninstall(self, args: dict[str, Any]) -> dict[str, Any]:
        assert self.datapath is not None
        config, child = self._find_child(args)
        if not self.datapath.has_trap(config.name, child.name):
            raise RequestError(f"no trap policy installed for {config.name}/{child.name}")
        remove = getattr(self.datapath, "remove_trap", None)
        if remove is not None:
            remove(config.name, child.name)
        else:
            # The data path can only drop all traps: put back every other one.
            others = [
                (c, ch)
                for c in self.engine_configs
                for ch in c.children
                if self.datapath.has_trap(c.name, ch.name)
                and (c.name, ch.name) != (config.name, child.name)
            ]
            self.datapath.clear_traps()
            for c, ch in others:
                self.datapath.add_trap(c, ch)
        return {"uninstalled": f"{config.name}/{child.name}"}

    def _find_child(self, args: dict[str, Any]) -> tuple[Any, Any]:
        child_name, ike = args.get("child"), args.get("ike")
        if not child_name:
            raise RequestError("name the child (child = <CHILD_SA configuration name>)")
        for config in self.engine_configs:
            if ike and config.name != ike:
                continue
            for child in config.children:
                if child.name == child_name:
                    return config, child
        where = f" in connection {ike!r}" if ike else ""
        raise RequestError(f"no child configuration named {child_name!r}{where}")

    # ------------------------------------------------------------------ credentials

    async def _cmd_load_shared(self, args: dict[str, Any]) -> dict[str, Any]:
        """Load a pre-shared key: ``id``, ``type`` (IKE), ``data``, ``owners`` (identities;
        none: any), as VICI ``load-shared``. Replaces a key of the same ``id``."""
        config = self._config_module
        kind = str(args.get("type", "")).lower()
        if kind in _UNSUPPORTED_SHARED:
            raise RequestError(
                f"{kind.upper()} secrets are not supported: {_UNSUPPORTED_SHARED[kind]}"
            )
        if kind not in _SHARED_TYPES:
            raise RequestError(f"unknown shared key type {args.get('type')!r}: use IKE")
        data = args.get("data")
        if not data:
            raise RequestError("load-shared needs data = <the shared key>")
        owners = args.get("owners") or []
        if not isinstance(owners, list):
            owners = [owners]
        identifier = str(args.get("id") or f"shared-{hashlib.sha1(_blob(data)).hexdigest()[:8]}")
        secret = config.SharedSecret(
            name=identifier, ids=[str(o) for o in owners], secret=_blob(data), source="load-shared"
        )
        self.loaded_secrets[identifier] = secret
        self.settings.shared_secrets = [
            s for s in self.settings.shared_secrets if s.name != identifier
        ] + [secret]
        return {"loaded": identifier}

    async def _cmd_unload_shared(self, args: dict[str, Any]) -> dict[str, Any]:
        identifier = args.get("id")
        if identifier not in self.loaded_secrets:
            raise RequestError(
                f"no shared key with id {identifier!r} was loaded (get-shared lists them)"
            )
        del self.loaded_secrets[identifier]
        self.settings.shared_secrets = [
            s for s in self.settings.shared_secrets if s.name != identifier
        ]
        return {"unloaded": identifier}

    async def _cmd_get_shared(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"keys": sorted(self.loaded_secrets)}

    async def _cmd_load_key(self, args: dict[str, Any]) -> dict[str, Any]:
        """Load a private key (PEM or DER ``data``), kept in memory only; answers its
        ``id``: the hex SHA-1 of its public key (DER SubjectPublicKeyInfo)."""
        from cryptography.hazmat.primitives import serialization

        data = args.get("data")
        if not data:
            raise RequestError("load-key needs data = <PEM or DER private key>")
        blob = _blob(data)
        loaders: list[Any] = [serialization.load_der_private_key]
        if b"-----BEGIN" in blob:
            loaders.insert(0, serialization.load_pem_private_key)
        key = None
        for loader in loaders:
            try:
                key = loader(blob, password=None)
                break
            except (ValueError, TypeError):
                continue
        if key is None:
            raise RequestError(
                "cannot load the private key: give an unencrypted PEM or DER key "
                "(PKCS#1, SEC1 or PKCS#8)"
            )
        identifier = hashlib.sha1(_public_der(key.public_key())).hexdigest()
        loaded = self._config_module.PrivateKey(
            name=f"load-key/{identifier}",
            file=Path(f"<load-key {identifier}>"),  # never written to disk
            key=key,
            source="load-key",
        )
        old = self.loaded_keys.get(identifier)
        self.loaded_keys[identifier] = loaded
        self.settings.private_keys = [k for k in self.settings.private_keys if k is not old] + [
            loaded
        ]
        return {"id": identifier}

    async def _cmd_unload_key(self, args: dict[str, Any]) -> dict[str, Any]:
        identifier = args.get("id")
        key = self.loaded_keys.pop(str(identifier), None)
        if key is None:
            raise RequestError(f"no private key with id {identifier!r} was loaded (get-keys)")
        self.settings.private_keys = [k for k in self.settings.private_keys if k is not key]
        return {"unloaded": identifier}

    async def _cmd_get_keys(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"keys": sorted(self.loaded_keys)}

    async def _cmd_load_cert(self, args: dict[str, Any]) -> dict[str, Any]:
        """Load an X.509 certificate (``data`` PEM or DER; ``flag = CA`` trusts it as an
        authority). Attribute certificates and CRLs are not supported."""
        kind = str(args.get("type", "X509")).upper()
        if kind != "X509":
            raise RequestError(f"{kind} certificates are not supported: aioipsec loads X509 only")
        data = args.get("data")
        if not data:
            raise RequestError("load-cert needs data = <PEM or DER certificate>")
        blob = _blob(data)
        path = self._write_blob(blob, ".crt")
        try:
            self._config_module.load_certificate(path)
        except self._config_module.ConfigError as error:
            path.unlink(missing_ok=True)
            raise RequestError(f"cannot load the certificate: {error.reason}") from None
        ca = str(args.get("flag", "NONE")).upper() == "CA"
        digest = hashlib.sha1(blob).hexdigest()
        self.loaded_certs[digest] = (path, ca)
        if ca and path not in self.settings.authorities:
            self.settings.authorities.append(path)
        return {"loaded": digest}

    async def _cmd_clear_creds(self, args: dict[str, Any]) -> dict[str, Any]:
        """Drop every credential loaded over the sockets (those of the files stay)."""
        names = set(self.loaded_secrets)
        keys = {id(k) for k in self.loaded_keys.values()}
        certs = {path for path, _ in self.loaded_certs.values()}
        self.settings.shared_secrets = [
            s for s in self.settings.shared_secrets if s.name not in names
        ]
        self.settings.private_keys = [k for k in self.settings.private_keys if id(k) not in keys]
        self.settings.authorities = [p for p in self.settings.authorities if p not in certs]
        self.loaded_secrets.clear()
        self.loaded_keys.clear()
        self.loaded_certs.clear()
        return {"cleared": True}


def _public_der(public_key: Any) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return bytes(public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo))
