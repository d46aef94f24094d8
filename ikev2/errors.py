"""The one typed error of the IKEv2 core.

Every parser and every exchange handler either accepts its input or raises
:class:`ProtocolError`, which carries the notify RFC 7296 says to answer with
(h11's rule: any other exception escaping is a bug). ``notify`` is ``None`` when the
right reaction is a silent drop (e.g. an ICV failure, RFC 7296 sec. 2.21.1 / 3.14).
"""

from __future__ import annotations

from ikev2.enums import NotifyType


class ProtocolError(Exception):
    """A protocol violation with the defined reaction attached.

    ``notify``: the error notify to send back (``None``: drop silently).
    ``notify_data``: its notification data (e.g. the accepted group for INVALID_KE_PAYLOAD).
    ``reason``: a sentence for people, never containing key material.
    """

    def __init__(
        self,
        reason: str,
        notify: NotifyType | None = NotifyType.INVALID_SYNTAX,
        notify_data: bytes = b"",
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.notify = notify
        self.notify_data = notify_data

    def __repr__(self) -> str:
        name = self.notify.name if self.notify is not None else "drop"
        return f"ProtocolError({name}: {self.reason})"


class IntegrityError(ProtocolError):
    """The ICV of an SK/SKF payload did not verify: drop silently, count it."""

    def __init__(self, reason: str = "integrity check failed") -> None:
        super().__init__(reason, notify=None)
