"""The walker: one raw source (TOML or swanctl.conf, as nested dicts) into the model.

Every key is checked against the key tables of :mod:`aioipsec.config.values`; an unknown
or unsupported key is a :class:`ConfigError` naming its file, line and key path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aioipsec.config.credentials import SWANCTL_FOLDERS, load_private_key
from aioipsec.config.model import (
    AuthSettings,
    ChildSettings,
    ConfigError,
    Configuration,
    ConnectionSettings,
    DaemonSettings,
    PrivateKey,
    SharedSecret,
)
from aioipsec.config.values import (
    _AUTH_KEYS,
    _CHILD_KEYS,
    _CONNECTION_KEYS,
    _DAEMON_KEYS,
    _FIXED_CHILD_KEYS,
    _FIXED_CONNECTION_KEYS,
    _PRIVATE_KEY_TYPES,
    _UNSUPPORTED_AUTH_KEYS,
    _UNSUPPORTED_CHILD_KEYS,
    _UNSUPPORTED_CONNECTION_KEYS,
    _UNSUPPORTED_SECRET_TYPES,
    ValueProblem,
    as_text,
    check_proposal_syntax,
    decode_secret,
    parse_auth,
    parse_bool,
)

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


def _apply_keys(
    source: RawSource,
    table: Mapping[str, Any],
    key_path: tuple[str, ...],
    parsers: Mapping[str, Callable[[Any], Any]],
    target: Any,
    *,
    fixed: Mapping[str, str] | None = None,
    unsupported: Iterable[str] = (),
    skip: Iterable[str] = (),
    section_name: str,
) -> None:
    unsupported = set(unsupported)
    skip = set(skip)
    for key, value in table.items():
        path = (*key_path, key)
        if key in skip:
            continue
        if fixed and key in fixed:
            try:
                ok = parse_bool(value) == parse_bool(fixed[key])
            except ValueProblem:
                ok = False
            if not ok:
                raise source.error(
                    path,
                    f"aioipsec supports only {key} = {fixed[key]}",
                    f"remove the key or set it to {fixed[key]}",
                )
            continue
        if key in unsupported:
            raise source.error(
                path,
                f"strongSwan's {key!r} is not supported by aioipsec",
                "remove it; see docs/configuration.md for the keys aioipsec implements",
            )
        parser = parsers.get(key)
        if parser is None:
            known = ", ".join(sorted(parsers))
            raise source.error(
                path, f"unknown key {key!r} in {section_name}", f"known keys: {known}"
            )
        if isinstance(value, dict):
            raise source.error(path, "expected a value, found a section")
        if value is None:
            # swanctl.conf's `key =` with nothing after it: the key stays at its default.
            continue
        try:
            parsed = parser(value)
        except ValueProblem as problem:
            raise source.error(path, problem.reason, problem.hint) from None
        setattr(target, key, parsed)


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
        skip={k for k, v in table.items() if isinstance(v, dict)},
        section_name="a connection",
    )
    if "proposals" in table:
        source.check_proposals((*key_path, "proposals"), connection.proposals, "ike")
    if connection.version == 1:
        raise source.error(
            (*key_path, "version"), "IKEv1 is not supported", "use version = 2 (or 0: any)"
        )
    connection.version = 2
    for key, value in table.items():
        if not isinstance(value, dict):
            continue
        path = (*key_path, key)
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
            if "auth" in value:
                auth.rsa_pss = parse_auth(value["auth"])[1]
            if key == "local" and auth.cacerts:
                raise source.error(
                    (*path, "cacerts"),
                    "cacerts belongs in the remote section",
                    "move it to remote: the CA certificates that vouch for the peer",
                )
            auth.certs = [source.resolve(c, SWANCTL_FOLDERS["certs"]) for c in auth.certs]
            auth.cacerts = [source.resolve(c, SWANCTL_FOLDERS["cacerts"]) for c in auth.cacerts]
            setattr(connection, key, auth)
        elif key.startswith(("local", "remote")):
            raise source.error(
                path,
                "more than one authentication round is not supported",
                "use a single 'local' and 'remote' section",
            )
        elif key == "children":
            for child_name, child_table in value.items():
                connection.children[child_name] = _build_child(
                    source, (*path, child_name), child_name, child_table
                )
        else:
            raise source.error(
                path,
                f"unknown section {key!r} in a connection",
                "a connection has the sections local, remote and children",
            )
    _check_connection(source, connection, key_path, table)
    return connection


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
        section_name="a child SA",
    )
    for key in ("esp_proposals", "ah_proposals"):
        if key in table and table[key] is not None:
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
    if not connection.children:
        raise source.error(
            key_path,
            "the connection has no children",
            "add a children section with at least one child SA (local_ts/remote_ts)",
        )
    for side in ("local", "remote"):
        if side not in table:
            raise source.error(
                key_path,
                f"the connection has no {side} section",
                f"add {side} with auth = psk or pubkey and an id",
            )
    if connection.local.auth == "pubkey" and not connection.local.certs:
        raise source.error(
            (*key_path, "local"),
            "auth = pubkey needs our certificate",
            "add certs = <file> (PEM or DER), or use auth = psk",
        )


def _build_secrets(source: RawSource, table: Any, configuration: Configuration) -> None:
    table = _expect_table(source, table, ("secrets",), "secrets")
    for name, value in table.items():
        path = ("secrets", name)
        value = _expect_table(source, value, path, "one secret")
        kind = _split_suffix(name, ("ike", *_PRIVATE_KEY_TYPES, *_UNSUPPORTED_SECRET_TYPES))
        if kind is None:
            raise source.error(
                path,
                f"unknown secret type {name!r}",
                "name it ike<suffix> (a PSK) or private<suffix> (a private key file)",
            )
        if kind in _UNSUPPORTED_SECRET_TYPES:
            raise source.error(path, f"{kind} secrets are not supported by aioipsec")
        if kind == "ike":
            configuration.shared_secrets.append(_build_shared_secret(source, name, value))
        else:
            configuration.private_keys.append(_build_private_key(source, name, kind, value))


def _build_shared_secret(source: RawSource, name: str, table: dict[str, Any]) -> SharedSecret:
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
            try:
                secret = decode_secret(as_text(value))
            except ValueProblem as problem:
                raise source.error(path, problem.reason, problem.hint) from None
        else:
            raise source.error(
                path, f"unknown key {key!r} in an ike secret", "known keys: secret, id<suffix>"
            )
    if not secret:
        raise source.error(
            ("secrets", name), "the secret has no (or an empty) secret value", "add secret = ..."
        )
    return SharedSecret(name=name, ids=ids, secret=secret, source=source.path)


def _build_private_key(
    source: RawSource, name: str, kind: str, table: dict[str, Any]
) -> PrivateKey:
    file_text: str | None = None
    passphrase: bytes | None = None
    for key, value in table.items():
        path = ("secrets", name, key)
        if key == "file":
            file_text = as_text(value)
        elif key == "secret":
            passphrase = as_text(value).encode()
        else:
            raise source.error(path, f"unknown key {key!r} in a private key secret",
                               "known keys: file, secret")  # fmt: skip
    if not file_text:
        raise source.error(("secrets", name), "no file given", "add file = <key file>")
    key_file = source.resolve(file_text, SWANCTL_FOLDERS.get(kind))
    try:
        key_object = load_private_key(key_file, passphrase)
    except ConfigError as error:
        raise source.error(("secrets", name, "file"), error.reason, error.hint) from None
    return PrivateKey(name=name, file=key_file, key=key_object, source=source.path)


def _build_daemon(source: RawSource, table: Any) -> DaemonSettings:
    table = _expect_table(source, table, ("daemon",), "daemon settings")
    settings = DaemonSettings()
    _apply_keys(source, table, ("daemon",), _DAEMON_KEYS, settings, section_name="[daemon]")
    return settings


def build_configuration(
    source: RawSource, configuration: Configuration | None = None
) -> Configuration:
    """Validate one raw source into ``configuration`` (a new one when None)."""
    configuration = configuration or Configuration()
    configuration.sources.append(source.path)
    allowed = ("daemon", "connections", "secrets") if source.kind == "toml" else (
        "connections", "secrets")  # fmt: skip
    for key, value in source.data.items():
        if key not in allowed:
            if source.kind == "swanctl" and key in ("pools", "authorities") and not value:
                continue
            hint = f"top-level sections are {', '.join(allowed)}"
            if key == "daemon":
                hint = "put the [daemon] table in the TOML file given with -c"
            raise source.error((key,), f"unknown or unsupported section {key!r}", hint)
    if "daemon" in source.data:
        configuration.daemon = _build_daemon(source, source.data["daemon"])
    if "secrets" in source.data:
        _build_secrets(source, source.data["secrets"], configuration)
    connections = source.data.get("connections", {})
    connections = _expect_table(source, connections, ("connections",), "connections")
    for name, table in connections.items():
        if name in configuration.connections:
            other = configuration.connections[name].source
            raise source.error(
                ("connections", name),
                f"connection {name!r} is also defined in {other}",
                "give one of them another name",
            )
        configuration.connections[name] = _build_connection(source, name, table)
    configuration.warnings.extend(source.warnings)
    return configuration
