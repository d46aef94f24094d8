"""Configuration: TOML (``-c aioipsec.toml``) and strongSwan's swanctl.conf, one model.

Both inputs use **swanctl.conf's vocabulary** (``connections``, ``children``, ``local``,
``remote``, ``secrets``), so a strongSwan user recognises every key. A TOML file adds a
``[daemon]`` table (control socket, ports, TUN name, logging). The loaders validate
everything up front and raise :class:`ConfigError` naming the file, the key path
(``connections.site.children.net.esp_proposals``), the line and what to do about it.
A key we do not know, or a strongSwan key we do not implement, is an error: nothing is
silently ignored.

Public API::

    configuration = load_configuration(toml_path=None, swanctl_path=None)
    engine_configs = to_engine_configs(configuration)        # list[ikev2.config.IkeConfig]
    configuration.psk_lookup(local_id, remote_id) -> bytes | None
    DaemonOptions(...)                                      # what `aioipsec daemon` passes on

Secrets (PSKs, private keys and their passphrases) live only in :class:`SharedSecret`
and :class:`PrivateKey` objects whose ``repr`` hides them; they are never logged and
never appear in :func:`connection_listing` (what the control socket's ``conns`` returns).

Modules (a module imports only modules above it in this list, never this ``__init__``,
which re-exports the public names)::

    model        the dataclasses, ConfigError, identity matching
    values       value parsers and the key tables of each section
    credentials  certificate and private key files, their checks
    build        the walker: raw nested dicts into the model
    swanctl      strongSwan's settings syntax (swanctl.conf) into raw dicts, then build
    load         the TOML file, load_configuration, DaemonOptions
    engine       the model into ikev2.config.IkeConfig (typed)
    listing      the VICI-style ``conns`` listing
"""

from aioipsec.config.build import RawSource, build_configuration
from aioipsec.config.credentials import (
    SWANCTL_FOLDERS,
    load_certificate,
    load_private_key,
    strongswan_dn,
)
from aioipsec.config.engine import to_engine_configs
from aioipsec.config.listing import connection_listing
from aioipsec.config.load import DaemonOptions, load_configuration, load_toml
from aioipsec.config.model import (
    DEFAULT_CONTROL_SOCKET,
    DEFAULT_VICI_SOCKET,
    LOG_FORMATS,
    LOG_LEVELS,
    AuthSettings,
    ChildSettings,
    ConfigError,
    Configuration,
    ConnectionSettings,
    DaemonSettings,
    PrivateKey,
    SharedSecret,
    identity_matches,
    normalise_identity,
    vici_socket_path,
)
from aioipsec.config.swanctl import load_swanctl, parse_settings_file, parse_settings_text

__all__ = [
    "DEFAULT_CONTROL_SOCKET",
    "DEFAULT_VICI_SOCKET",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "SWANCTL_FOLDERS",
    "AuthSettings",
    "ChildSettings",
    "ConfigError",
    "Configuration",
    "ConnectionSettings",
    "DaemonOptions",
    "DaemonSettings",
    "PrivateKey",
    "RawSource",
    "SharedSecret",
    "build_configuration",
    "connection_listing",
    "identity_matches",
    "load_certificate",
    "load_configuration",
    "load_private_key",
    "load_swanctl",
    "load_toml",
    "normalise_identity",
    "parse_settings_file",
    "parse_settings_text",
    "strongswan_dn",
    "to_engine_configs",
    "vici_socket_path",
]
