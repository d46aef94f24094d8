"""The errors of the IKEv2 core, split as in h11: what the peer got wrong apart from what
the caller got wrong.

* :class:`ProtocolError` (alias :class:`RemoteProtocolError`): the peer's message
  violates the protocol. Every parser and every exchange handler either accepts its input
  or raises it, carrying the notify RFC 7296 says to answer with (h11's rule: any other
  exception escaping is a bug). ``notify`` is ``None`` when the right reaction is a silent
  drop (e.g. an ICV failure, RFC 7296 sec. 2.21.1 / 3.14).
* :class:`UsageError` (alias :class:`LocalProtocolError`): the application asked for
  something the engine cannot do now (e.g. rekey an IKE SA that is not established). No
  message is sent; the caller should wait for the event it needs and retry.
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


# h11's name for the same thing.
RemoteProtocolError = ProtocolError


class UsageError(Exception):
    """A local caller asked for something the IKE SA cannot do in its state (nothing is
    sent to the peer). ``reason`` says what and why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# h11's name for the same thing.
LocalProtocolError = UsageError
