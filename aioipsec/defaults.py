"""Defaults that both the configuration and the command line need, in a module that
imports nothing: ``aioipsec sas`` reads them without loading :mod:`aioipsec.config`
(certificates, tokens, the engine's configuration: ~60 ms of imports; issue 17 asks
for a control command in <= 40 ms). :mod:`aioipsec.config` re-exports them."""

DEFAULT_CONTROL_SOCKET = "/run/aioipsec.sock"
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("console", "json")
