"""Exceptions of the protocol package.

Two families, kept apart as in h11: a :class:`RemoteProtocolError` means the peer sent
something we refuse, and always carries the :class:`~ironpost.protocol.replies.Reply` to
send; a :class:`LocalProtocolError` means the application misused this API (a bug in our
own code, never caused by network input).
"""

from __future__ import annotations

from ironpost.protocol.replies import Reply


class RemoteProtocolError(Exception):
    """The peer's input is invalid; ``reply`` is the precise SMTP answer."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


class AddressError(RemoteProtocolError):
    """A mailbox path (``MAIL FROM``/``RCPT TO`` argument) failed the grammar."""


class ParamError(RemoteProtocolError):
    """An ESMTP parameter is unknown or has a bad value."""


class LocalProtocolError(Exception):
    """The application called the state machine at the wrong time."""
