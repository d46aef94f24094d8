"""The walker: one raw source (TOML or swanctl.conf, as nested dicts) into the model.

Every key is checked against the key tables of :mod:`aioipsec.config.values`; an unknown
or unsupported key is a :class:`ConfigError` naming its file, line and key path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aioipsec.cluster.settings import ClusterSettings, ClusterSettingsError
from aioipsec.config.credentials import SWANCTL_FOLDERS, load_pkcs12, load_private_key
from aioipsec.config.model import (
    AuthoritySettings,
    AuthSettings,
    ChildSettings,
    ConfigError,
    Configuration,
    ConnectionSettings,
    DaemonSettings,
    EapSecret,
    PrivateKey,
    SharedSecret,
    raise_collected,
)
from aioipsec.config.tokens import TOKEN_SECTIONS, build_token_key, build_token_sections
from aioipsec.config.values import (
    _AUTH_KEYS,
    _AUTHORITY_KEYS,
    _CHILD_KEYS,
    _CLUSTER_KEYS,
    _CONNECTION_KEYS,
    _DAEMON_KEYS,
    _DHCP_KEYS,
    _FIXED_CHILD_KEYS,
    _FIXED_CONNECTION_KEYS,
    _KERNEL_ONLY_CHILD_KEYS,
    _KERNEL_ONLY_CONNECTION_KEYS,
    _PRIVATE_KEY_TYPES,
    _RADIUS_KEYS,
    _UNSUPPORTED_AUTH_KEYS,
    _UNSUPPORTED_AUTHORITY_KEYS,
    _UNSUPPORTED_CHILD_KEYS,
    _UNSUPPORTED_CONNECTION_KEYS,
    _UNSUPPORTED_SECRET_TYPES,
    RUNTIME_PENDING,
    ValueProblem,
    as_text,
    check_proposal_syntax,
    decode_secret,
    parse_auth,
    parse_bool,
    parse_identity,
)
from aioipsec.dhcp import DhcpSettings
from aioipsec.pools import EXTERNAL_POOLS, PoolProblem, parse_pool
from aioipsec.radius.settings import RadiusSettings, RadiusSettingsError
from ikev2.eap.methods import method_types
from ikev2.tasks.ike_eap import MUTUAL_KEY_GENERATING

# --------------------------------------------------------------------------- the walker


@dataclass
class RawSource:
    """One input file, already parsed into nested dicts, with its line locator."""

    path: str
    data: dict[str, Any]
    # key path -> (file, line): the file differs from ``path`` for swanctl.conf includes.
    locate: Callable[[tuple[str, ...]], tuple[str, int | None]]
    kind: str  # "toml" or "swanctl"
    allow_weak: tuple[str, ...] = ()
    warnings: list[str] = field(default_factory=list)
    # Every problem found so far: `check` reports them all, not only the first.
    problems: list[ConfigError] = field(default_factory=list)
    # Files (an include, for swanctl.conf) that hold a PSK or a key's passphrase.
    secret_files: dict[str, str] = field(default_factory=dict)
    # Top-level sections other sections are based on (swanctl.conf templates).
    templates: frozenset[str] = frozenset()

    @contextmanager
    def collecting(self) -> Iterator[None]:
        """Record a ConfigError raised inside and carry on with the next item."""
        try:
            yield
        except ConfigError as error:
            self.problems.extend(error.errors)

    def note_secret(self, key_path: tuple[str, ...]) -> None:
        """Remember the file holding this secret (and the first secret's key path)."""
        self.secret_files.setdefault(self.locate(key_path)[0], ".".join(key_path))

    def error(self, key_path: tuple[str, ...], reason: str, hint: str | None = None) -> ConfigError:
        file, line = self.locate(key_path) if key_path else (self.path, None)
        return ConfigError(
            reason,
            file=file,
            key=".".join(key_path) if key_path else None,
            line=line,
            hint=hint,
        )

    def check_proposals(
        self, key_path: tuple[str, ...], proposals: list[str], protocol: str
    ) -> None:
        try:
            for warning in check_proposal_syntax(proposals, protocol, self.allow_weak):
                self.warnings.append(f"{'.'.join(key_path)}: {warning}")
        except ValueProblem as problem:
            raise self.error(key_path, problem.reason, problem.hint) from None

    def resolve(self, text: str | Path, folder: str | None) -> Path:
        """A file named in the config: absolute, or relative to this file's folder
        (swanctl.conf: to the swanctl sub-folder for its kind, like swanctl does)."""
        path = Path(text).expanduser()
        if path.is_absolute():
            return path
        base = Path(self.path).resolve().parent
        if self.kind == "swanctl" and folder:
            candidate = base / folder / path
            if candidate.exists() or not (base / path).exists():
                return candidate
        return base / path


def _expect_table(
    source: RawSource, value: Any, key_path: tuple[str, ...], what: str
) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise source.error(key_path, f"must be a section ({what}), not a value")
    return value


def _same_value(value: Any, wanted: str) -> bool:
    """``value`` as strongSwan reads it equals ``wanted`` (yes/no, a number or a word)."""
    try:
        return parse_bool(value) == parse_bool(wanted)
    except ValueProblem:
        pass
    try:
        return as_text(value).lower() == wanted
    except ValueProblem:
        return False


def _apply_keys(
    source: RawSource,
    table: Mapping[str, Any],
    key_path: tuple[str, ...],
    parsers: Mapping[str, Callable[[Any], Any]],
    target: Any,
    *,
    fixed: Mapping[str, tuple[str, str]] | None = None,
    unsupported: Iterable[str] = (),
    kernel_only: Iterable[str] = (),
    skip: Iterable[str] = (),
    section_name: str,
) -> None:
    """Every key of ``table`` onto ``target``; each bad key is recorded, not only the first."""
    unsupported = set(unsupported)
    kernel_only = set(kernel_only)
    skip = set(skip)
    for key, value in table.items():
        if key in skip:
            continue
        with source.collecting():
            _apply_key(
                source, key, value, (*key_path, key), parsers, target, fixed or {},
                unsupported, kernel_only, section_name,
            )  # fmt: skip


def _apply_key(
    source: RawSource,
    key: str,
    value: Any,
    path: tuple[str, ...],
    parsers: Mapping[str, Callable[[Any], Any]],
    target: Any,
    fixed: Mapping[str, tuple[str, str]],
    unsupported: set[str],
    kernel_only: set[str],
    section_name: str,
) -> None:
    if key in fixed:
        wanted, why = fixed[key]
        if not _same_value(value, wanted):
            raise source.error(
                path,
                f"aioipsec supports only {key} = {wanted}: {why}",
                f"remove the key or set it to {wanted}",
            )
        return
    if key in kernel_only:
        raise source.error(
            path,
            f"{key!r} is a setting of strongSwan's kernel interface (XFRM): aioipsec's "
            "data path is in userspace, so it has no meaning here",
            "remove it",
        )
    if key in unsupported:
        raise source.error(
            path,
            f"strongSwan's {key!r} is not supported by aioipsec",
            "remove it; see docs/configuration.md for the keys aioipsec implements",
        )
    parser = parsers.get(key)
    if parser is None:
        known = ", ".join(sorted(parsers))
        raise source.error(path, f"unknown key {key!r} in {section_name}", f"known keys: {known}")
    if isinstance(value, dict):
        raise source.error(path, "expected a value, found a section")
    if value is None:
        # swanctl.conf's `key =` with nothing after it: the key stays at its default.
        return
    try:
        parsed = parser(value)
    except ValueProblem as problem:
        raise source.error(path, problem.reason, problem.hint) from None
    except RecursionError:
        raise source.error(path, "the value is nested too deeply") from None
    setattr(target, key, parsed)
    if key in RUNTIME_PENDING and not (key == "hostaccess" and parsed is False):
        raise source.error(
            path,
            f"{key} is read, but {RUNTIME_PENDING[key]}: refusing it rather than ignoring it",
            "remove it for now; see docs/configuration.md",
        )


def _split_suffix(name: str, prefixes: Iterable[str]) -> str | None:
    for prefix in prefixes:
        if name.startswith(prefix):
            return prefix
    return None


def _build_connection(source: RawSource, name: str, table: Any) -> ConnectionSettings:
    key_path = ("connections", name)
    table = _expect_table(source, table, key_path, "a connection")
    connection = ConnectionSettings(name=name, source=source.path)
    _apply_keys(
        source,
        table,
        key_path,
        _CONNECTION_KEYS,
        connection,
        fixed=_FIXED_CONNECTION_KEYS,
        unsupported=_UNSUPPORTED_CONNECTION_KEYS,
        kernel_only=_KERNEL_ONLY_CONNECTION_KEYS,
        skip={k for k, v in table.items() if isinstance(v, dict)},
        section_name="a connection",
    )
    with source.collecting():
        if "proposals" in table and table["proposals"] is not None:
            source.check_proposals((*key_path, "proposals"), connection.proposals, "ike")
    if connection.version == 1:
        raise source.error(
            (*key_path, "version"), "IKEv1 is not supported", "use version = 2 (or 0: any)"
        )
    connection.version = 2
    for key, value in table.items():
        if not isinstance(value, dict):
            continue
        with source.collecting():
            _build_section(source, connection, (*key_path, key), key, value)
    with source.collecting():
        _check_connection(source, connection, key_path, table)
    return connection


def _build_section(
    source: RawSource,
    connection: ConnectionSettings,
    path: tuple[str, ...],
    key: str,
    value: dict[str, Any],
) -> None:
    """One subsection of a connection: local, remote or children."""
    if key in ("local", "remote"):
        auth = AuthSettings()
        _apply_keys(
            source,
            value,
            path,
            _AUTH_KEYS,
            auth,
            unsupported=_UNSUPPORTED_AUTH_KEYS,
            section_name=f"the {key} section",
        )
        if "auth" in value and value["auth"] is not None:
            with source.collecting():
                try:
                    auth.rsa_pss = parse_auth(value["auth"])[1]
                except ValueProblem:
                    pass  # recorded with its location by _apply_keys
        if key == "local" and auth.cacerts:
            raise source.error(
                (*path, "cacerts"),
                "cacerts belongs in the remote section",
                "move it to remote: the CA certificates that vouch for the peer",
            )
        auth.certs = [source.resolve(c, SWANCTL_FOLDERS["certs"]) for c in auth.certs]
        auth.cacerts = [source.resolve(c, SWANCTL_FOLDERS["cacerts"]) for c in auth.cacerts]
        auth.pubkeys = [source.resolve(c, SWANCTL_FOLDERS["pubkeys"]) for c in auth.pubkeys]
        setattr(connection, key, auth)
    elif key.startswith(("local", "remote")):
        raise source.error(
            path,
            "more than one authentication round is not supported",
            "use a single 'local' and 'remote' section",
        )
    elif key == "children":
        for child_name, child_table in value.items():
            with source.collecting():
                connection.children[child_name] = _build_child(
                    source, (*path, child_name), child_name, child_table
                )
    else:
        raise source.error(
            path,
            f"unknown section {key!r} in a connection",
            "a connection has the sections local, remote and children",
        )


def _build_child(
    source: RawSource, key_path: tuple[str, ...], name: str, table: Any
) -> ChildSettings:
    table = _expect_table(source, table, key_path, "a child SA")
    child = ChildSettings(name=name)
    _apply_keys(
        source,
        table,
        key_path,
        _CHILD_KEYS,
        child,
        fixed=_FIXED_CHILD_KEYS,
        unsupported=_UNSUPPORTED_CHILD_KEYS,
        kernel_only=_KERNEL_ONLY_CHILD_KEYS,
        section_name="a child SA",
    )
    for key in ("esp_proposals", "ah_proposals"):
        if key in table and table[key] is not None:
            with source.collecting():
                source.check_proposals((*key_path, key), getattr(child, key), key.split("_")[0])
    if child.esp_proposals and "esp_proposals" in table and child.ah_proposals:
        raise source.error(
            (*key_path, "ah_proposals"),
            "a child SA uses ESP or AH, not both",
            "remove esp_proposals or ah_proposals",
        )
    if (
        child.rekey_time is not None
        and child.life_time is not None
        and child.life_time < child.rekey_time
    ):
        raise source.error(
            (*key_path, "life_time"),
            f"life_time ({child.life_time:g}s) is shorter than rekey_time ({child.rekey_time:g}s)",
            "life_time must be at least rekey_time: the SA must outlive its rekeying",
        )
    return child


def _check_connection(
    source: RawSource,
    connection: ConnectionSettings,
    key_path: tuple[str, ...],
    table: Mapping[str, Any],
) -> None:
    # A connection without children is an IKE SA only (strongSwan allows it: the peer's
    # children, or a later `initiate --child`, come from other connections).
    shunts = [c for c in connection.children.values() if c.mode in ("pass", "drop")]
    for child in shunts:
        if "dynamic" in (*child.local_ts, *child.remote_ts):
            raise source.error(
                (*key_path, "children", child.name),
                f"mode = {child.mode}: a shunt's selectors must be written out ('dynamic' "
                "stands for an IKE SA's addresses, and a shunt has none)",
                "give local_ts and remote_ts as subnets or ranges",
            )
    if shunts and len(shunts) == len(connection.children):
        return  # only shunts: no IKE SA, so no local and remote rounds (strongSwan's too)
    if all(addr.startswith("%any") for addr in connection.remote_addrs):
        for child in connection.children.values():
            if child.start_action == "trap" and "dynamic" in child.remote_ts:
                raise source.error(
                    (*key_path, "children", child.name, "start_action"),
                    "start_action = trap with remote_ts = dynamic and no remote_addrs is "
                    "strongSwan's trap-any (the peer found from each packet's destination), "
                    "which aioipsec does not implement: the trap would cover nothing",
                    "give remote_addrs (the peer) or remote_ts (the subnets to trap)",
                )
    for side in ("local", "remote"):
        if side not in table:
            raise source.error(
                key_path,
                f"the connection has no {side} section",
                f"add {side} with auth = psk or pubkey and an id",
            )
    if (
        connection.local.auth in ("pubkey", "eap-tls")
        and not connection.local.certs
        and not (connection.local.auth == "pubkey" and connection.local.pubkeys)
        and source.kind == "toml"
    ):
        raise source.error(
            (*key_path, "local"),
            f"auth = {connection.local.auth} needs our certificate",
            "add certs = <file> (PEM or DER), or use auth = psk",
        )
    if connection.local.auth == "eap-radius":
        raise source.error(
            (*key_path, "local", "auth"),
            "auth = eap-radius in the local section: the gateway relays its peer's EAP to "
            "RADIUS, it does not authenticate itself that way",
            "put auth = eap-radius in the remote section of the gateway's connection",
        )
    if connection.local.groups:
        raise source.error(
            (*key_path, "local", "groups"),
            "groups in the local section",
            "groups belong in the remote section: the groups a peer must be in",
        )
    if connection.remote.groups and connection.remote.auth != "eap-radius":
        # strongSwan proves groups with attribute certificates too; aioipsec does not.
        source.warnings.append(
            f"{'.'.join((*key_path, 'remote', 'groups'))}: group membership is proven only "
            "by a RADIUS server's Class attributes (remote auth = eap-radius); attribute "
            "certificates are not supported, so every peer of this connection is refused"
        )


def _build_secrets(source: RawSource, table: Any, configuration: Configuration) -> None:
    table = _expect_table(source, table, ("secrets",), "secrets")
    for name, value in table.items():
        with source.collecting():
            _build_secret(source, name, value, configuration)


def _build_secret(source: RawSource, name: str, value: Any, configuration: Configuration) -> None:
    path = ("secrets", name)
    value = _expect_table(source, value, path, "one secret")
    kind = _split_suffix(
        name,
        ("ike", "eap", "ppk", "token", "pkcs12", *_PRIVATE_KEY_TYPES, *_UNSUPPORTED_SECRET_TYPES),
    )
    if kind is None:
        raise source.error(
            path,
            f"unknown secret type {name!r}",
            "name it ike<suffix> (a PSK), eap<suffix> (an EAP password) or "
            "private<suffix> (a private key file)",
        )
    if kind in _UNSUPPORTED_SECRET_TYPES:
        raise source.error(path, f"{kind} secrets are not supported by aioipsec")
    if kind == "ike":
        configuration.shared_secrets.append(_build_shared_secret(source, name, value))
    elif kind == "eap":
        psk_like = _build_shared_secret(source, name, value, kind="an eap")
        configuration.eap_secrets.append(
            EapSecret(name, psk_like.ids, psk_like.secret, psk_like.source)
        )
    elif kind == "ppk":  # RFC 8784: found by the PPK_ID, which is one of its ids
        ppk = _build_shared_secret(source, name, value, kind="a ppk")
        if not ppk.ids:
            raise source.error(
                ("secrets", name), "a PPK needs the PPK_ID it is for", "add id = <PPK_ID>"
            )
        for ppk_id in ppk.ids:
            try:
                parse_identity(ppk_id)
            except ValueProblem as problem:
                raise source.error(("secrets", name), problem.reason) from None
        configuration.ppk_secrets.append(ppk)
    elif kind == "token":  # a key that stays in a PKCS#11 token or the TPM
        configuration.tokens.keys.append(build_token_key(source, name, value))
    else:
        configuration.private_keys.append(
            _build_private_key(source, name, kind, value, configuration)
        )


def _build_shared_secret(
    source: RawSource, name: str, table: dict[str, Any], kind: str = "an ike"
) -> SharedSecret:
    ids: list[str] = []
    secret: bytes | None = None
    for key, value in table.items():
        path = ("secrets", name, key)
        if key.startswith("id"):
            try:
                # One identity per value: a DN holds commas, so strings are never split.
                values = value if isinstance(value, list) else [value]
                ids.extend(as_text(item) for item in values)
            except ValueProblem as problem:
                raise source.error(path, problem.reason) from None
        elif key == "secret":
            source.note_secret(path)
            try:
                secret = decode_secret(as_text(value))
            except ValueProblem as problem:
                raise source.error(path, problem.reason, problem.hint) from None
        else:
            raise source.error(
                path, f"unknown key {key!r} in {kind} secret", "known keys: secret, id<suffix>"
            )
    if not secret:
        raise source.error(
            ("secrets", name), "the secret has no (or an empty) secret value", "add secret = ..."
        )
    return SharedSecret(name=name, ids=ids, secret=secret, source=source.path)


def _build_private_key(
    source: RawSource, name: str, kind: str, table: dict[str, Any], configuration: Configuration
) -> PrivateKey:
    file_text: str | None = None
    passphrase: bytes | None = None
    for key, value in table.items():
        path = ("secrets", name, key)
        if key == "file":
            file_text = as_text(value)
        elif key == "secret":
            source.note_secret(path)
            passphrase = as_text(value).encode()
        else:
            raise source.error(path, f"unknown key {key!r} in a private key secret",
                               "known keys: file, secret")  # fmt: skip
    if not file_text:
        raise source.error(("secrets", name), "no file given", "add file = <key file>")
    key_file = source.resolve(file_text, SWANCTL_FOLDERS.get(kind))
    where = ("secrets", name, "secret" if passphrase is not None else "file")
    try:
        if kind == "pkcs12":
            key_object = add_pkcs12(configuration, key_file, passphrase)
        else:
            key_object = load_private_key(key_file, passphrase)
    except ConfigError as error:
        raise source.error(where, error.reason, error.hint) from None
    return PrivateKey(name=name, file=key_file, key=key_object, source=source.path)


def add_pkcs12(configuration: Configuration, path: Path, passphrase: bytes | None) -> Any:
    """A PKCS#12 container's key; its CA certificates become trust anchors and the others
    certificates to choose ours from, as swanctl loads them."""
    key, certificates = load_pkcs12(path, passphrase)
    for name, is_ca in certificates:
        target = configuration.authorities if is_ca else configuration.certificates
        if name not in target:
            target.append(name)
    return key


def named_key_files(source: RawSource) -> set[Path]:
    """The files the ``secrets.rsa|ecdsa|pkcs8|private<suffix>`` entries name (resolved):
    they are loaded there, with their passphrase, so the folder scan skips them."""
    named: set[Path] = set()
    table = source.data.get("secrets")
    if not isinstance(table, dict):
        return named
    for name, value in table.items():
        kind = _split_suffix(name, (*_PRIVATE_KEY_TYPES, "pkcs12"))
        if kind is None or not isinstance(value, dict) or not isinstance(value.get("file"), str):
            continue
        named.add(source.resolve(value["file"].strip(), SWANCTL_FOLDERS.get(kind)).resolve())
    return named


def _build_authorities(source: RawSource, table: Any, configuration: Configuration) -> None:
    """swanctl.conf's ``authorities``: a CA certificate is a trust anchor, as it is for
    strongSwan; its revocation sources are read and refused until they are enforced."""
    table = _expect_table(source, table, ("authorities",), "authorities")
    for name, value in table.items():
        path = ("authorities", name)
        with source.collecting():
            value = _expect_table(source, value, path, "one certification authority")
            authority = AuthoritySettings(name=name, source=source.path)
            settings = _RawAuthority()
            _apply_keys(
                source,
                value,
                path,
                _AUTHORITY_KEYS,
                settings,
                unsupported=_UNSUPPORTED_AUTHORITY_KEYS,
                section_name="an authority",
            )
            cacert = settings.cacert or settings.file
            if cacert is None:
                raise source.error(path, "the authority has no cacert", "add cacert = <file>")
            authority.cacert = source.resolve(cacert, SWANCTL_FOLDERS["cacerts"])
            authority.crl_uris = settings.crl_uris
            authority.ocsp_uris = settings.ocsp_uris
            # Hash and URL (RFC 7296 sec. 3.6): where the certificates this CA issued to
            # us are published (aioipsec/config/engine.py).
            authority.cert_uri_base = settings.cert_uri_base
            configuration.authority_sections[name] = authority
            if authority.cacert not in configuration.authorities:
                configuration.authorities.append(authority.cacert)


@dataclass
class _RawAuthority:
    cacert: str | None = None
    file: str | None = None
    crl_uris: list[str] = field(default_factory=list)
    ocsp_uris: list[str] = field(default_factory=list)
    cert_uri_base: str | None = None


def _build_daemon(source: RawSource, table: Any) -> DaemonSettings:
    table = _expect_table(source, table, ("daemon",), "daemon settings")
    settings = DaemonSettings()
    _apply_keys(source, table, ("daemon",), _DAEMON_KEYS, settings, section_name="[daemon]")
    if settings.worker_steering == "direction" and settings.workers > 2:
        raise source.error(
            ("daemon", "workers"),
            f"workers = {settings.workers} with worker_steering = direction: the direction "
            "split has one encrypt worker (workers = 2)",
            'set worker_steering = "sa" for more workers (docs/configuration.md)',
        )
    return settings


def _build_cluster(source: RawSource, table: Any) -> ClusterSettings:
    table = _expect_table(source, table, ("cluster",), "cluster settings")
    settings = ClusterSettings()
    _apply_keys(source, table, ("cluster",), _CLUSTER_KEYS, settings, section_name="[cluster]")
    try:
        settings.check()
    except ClusterSettingsError as error:
        raise source.error(("cluster", error.key), str(error), "see docs/cluster.md") from None
    return settings


def _build_radius(source: RawSource, table: Any) -> RadiusSettings:
    table = _expect_table(source, table, ("radius",), "RADIUS settings")
    settings = RadiusSettings()
    _apply_keys(source, table, ("radius",), _RADIUS_KEYS, settings, section_name="[radius]")
    try:
        settings.check()
    except RadiusSettingsError as error:
        hint = "see docs/remote-access.md, section RADIUS"
        raise source.error(("radius", error.key), str(error), hint) from None
    return settings


def _build_dhcp(source: RawSource, table: Any) -> DhcpSettings:
    table = _expect_table(source, table, ("dhcp",), "DHCP settings")
    settings = DhcpSettings()
    _apply_keys(source, table, ("dhcp",), _DHCP_KEYS, settings, section_name="[dhcp]")
    try:
        settings.check()
    except ValueError as error:
        hint = "see docs/remote-access.md, section Pools from DHCP and RADIUS"
        raise source.error(("dhcp",), str(error), hint) from None
    return settings


def build_configuration(
    source: RawSource, configuration: Configuration | None = None, *, finish: bool = True
) -> Configuration:
    """Validate one raw source into ``configuration`` (a new one when None).

    Every problem is collected; with ``finish`` (the default) they are raised at the end,
    all at once (:class:`ConfigErrors` when there are several). Without it the caller
    adds its own and calls :func:`raise_collected` on ``source.problems``.
    """
    configuration = configuration or Configuration()
    configuration.sources.append(source.path)
    allowed = (
        ("daemon", "cluster", "radius", "dhcp", "connections", "secrets", "pools", *TOKEN_SECTIONS)
        if source.kind == "toml"
        else ("connections", "secrets", "authorities", "pools")
    )
    for key in source.data:
        if key in allowed:
            continue
        if source.kind == "swanctl" and key in source.templates:
            # strongSwan ignores a top-level section other than its four, except as a
            # base for others (`name : base-conn { }`): its settings live on in those.
            continue
        hint = f"top-level sections are {', '.join(allowed)}"
        if key == "daemon":
            hint = "put the [daemon] table in the TOML file given with -c"
        elif source.kind == "swanctl":
            hint += " (or a template other sections are based on)"
        source.problems.append(
            source.error((key,), f"unknown or unsupported section {key!r}", hint)
        )
    if "daemon" in source.data:
        with source.collecting():
            configuration.daemon = _build_daemon(source, source.data["daemon"])
    if "cluster" in source.data and source.kind == "toml":
        with source.collecting():
            configuration.cluster = _build_cluster(source, source.data["cluster"])
    if "radius" in source.data and source.kind == "toml":
        with source.collecting():
            configuration.radius = _build_radius(source, source.data["radius"])
    if "dhcp" in source.data and source.kind == "toml":
        with source.collecting():
            configuration.dhcp = _build_dhcp(source, source.data["dhcp"])
    if "secrets" in source.data:
        with source.collecting():
            _build_secrets(source, source.data["secrets"], configuration)
    if source.data.get("pools"):
        with source.collecting():
            _build_pools(source, source.data["pools"], configuration)
    if source.kind == "toml" and any(key in source.data for key in TOKEN_SECTIONS):
        with source.collecting():
            build_token_sections(source, configuration)
    if "authorities" in source.data and source.kind == "swanctl":
        with source.collecting():
            _build_authorities(source, source.data["authorities"], configuration)
    connections: Any = source.data.get("connections", {})
    with source.collecting():
        connections = _expect_table(source, connections, ("connections",), "connections")
    if not isinstance(connections, dict):
        connections = {}
    for name, table in connections.items():
        with source.collecting():
            if name in configuration.connections:
                other = configuration.connections[name].source
                raise source.error(
                    ("connections", name),
                    f"connection {name!r} is also defined in {other}",
                    "give one of them another name",
                )
            before = len(source.problems)
            connection = _build_connection(source, name, table)
            # A connection with a refused key is not checked further (its credentials
            # would be checked against defaults standing in for the refused values).
            if len(source.problems) == before:
                configuration.connections[name] = connection
    configuration.warnings.extend(source.warnings)
    if finish:
        raise_collected(source.problems)
    return configuration


def _build_pools(source: RawSource, table: Any, configuration: Configuration) -> None:
    """Top-level ``pools`` (swanctl.conf's section; the same table in TOML)."""
    table = _expect_table(source, table, ("pools",), "address pools")
    for name, value in table.items():
        with source.collecting():  # every pool's problem is reported, not only the first
            _build_pool(source, name, value, configuration)


def _build_pool(source: RawSource, name: str, value: Any, configuration: Configuration) -> None:
    path = ("pools", name)
    value = _expect_table(source, value, path, "one pool")
    if name in configuration.pools:
        raise source.error(
            path,
            f"pool {name!r} is also defined in {configuration.pools[name].source}",
            "give one of them another name",
        )
    try:
        pool = parse_pool(name, value, source=source.path)
    except PoolProblem as problem:
        key_path = (*path, problem.key) if problem.key else path
        raise source.error(key_path, problem.reason, problem.hint) from None
    for other in configuration.pools.values():
        if other.version == pool.version and not (
            int(pool.last) < int(other.first) or int(other.last) < int(pool.first)
        ):
            raise source.error(
                (*path, "addrs"),
                f"pool {name!r} ({pool.addrs_text}) overlaps pool {other.name!r} "
                f"({other.addrs_text})",
                "pools must not overlap (as in strongSwan): give each its own addresses",
            )
    configuration.pools[name] = pool
    source.warnings.extend(pool.warnings)


def check_remote_access(configuration: Configuration) -> None:
    """Checks across files (a TOML connection may name a pool of swanctl.conf): every pool a
    connection names exists; a client authenticating with EAP-MSCHAPv2 has its password;
    a gateway relaying EAP to RADIUS has a [radius] server (a warning, as strongSwan loads
    such a connection and fails each authentication)."""
    for connection in configuration.connections.values():
        if connection.remote.auth == "eap-radius" and configuration.radius is None:
            configuration.warnings.append(
                f"connections.{connection.name}.remote.auth: eap-radius, but no RADIUS "
                "server is configured: its peers cannot authenticate until a [radius] "
                "table (servers, secret_file) is in the daemon configuration"
            )
        if "radius" in connection.pools and connection.remote.auth != "eap-radius":
            configuration.warnings.append(
                f"connections.{connection.name}.pools: radius gives the address of a RADIUS "
                f"Access-Accept, but remote auth is {connection.remote.auth or 'unset'}, not "
                "eap-radius: its peers get no address from it"
            )
        for name in connection.pools:
            if name in EXTERNAL_POOLS:
                continue
            if name not in configuration.pools:
                known = ", ".join(sorted(configuration.pools)) or "none defined"
                raise ConfigError(
                    f"connection {connection.name!r} uses pool {name!r}, which is not defined",
                    file=connection.source,
                    key=f"connections.{connection.name}.pools",
                    hint=f"add pools {{ {name} {{ addrs = ... }} }} (pools: {known})",
                )
        local = connection.local
        # An EAP-only gateway (RFC 5998: local and remote auth = eap-..., no remote_addrs to
        # dial) authenticates itself by the method it runs as server: no secret of its own.
        eap_only_gateway = (
            local.auth.startswith("eap")
            and connection.remote.auth.startswith("eap")
            and all(address == "%any" for address in connection.remote_addrs)
        )
        # (With eap-radius the RADIUS server picks the method; the client checks it.)
        if (
            eap_only_gateway
            and connection.remote.auth != "eap-radius"
            and not MUTUAL_KEY_GENERATING.intersection(method_types(connection.remote.auth))
        ):
            raise ConfigError(
                f"connection {connection.name!r}: local auth = {local.auth} makes this gateway "
                "authenticate itself by EAP only (RFC 5998), which needs a mutual, "
                "key-generating method (EAP-TLS, EAP-TTLS), and remote auth = "
                f"{connection.remote.auth} offers none",
                file=connection.source,
                key=f"connections.{connection.name}.local",
                hint="use local auth = pubkey with the gateway's certificate (a certificate "
                "AUTH), or remote auth = eap-tls / eap-ttls for EAP-only",
            )
        if local.auth in ("eap-mschapv2", "eap-md5") and not eap_only_gateway:
            eap_id = local.eap_id or local.id or ""
            if configuration.eap_lookup(eap_id) is None:
                raise ConfigError(
                    f"connection {connection.name!r} authenticates with {local.auth.upper()} as "
                    f"{eap_id!r}, but no eap secret is for that identity",
                    file=connection.source,
                    key=f"connections.{connection.name}.local",
                    hint=f"add secrets {{ eap-{connection.name} {{ id = {eap_id or '<eap_id>'} "
                    "secret = ... }} }}",
                )
