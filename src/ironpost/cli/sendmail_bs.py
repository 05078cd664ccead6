"""``sendmail -bs``: SMTP on stdin/stdout, each message queued at its end of DATA.

Owns the local SMTP conversation of Postfix's ``sendmail -bs``, driven by the same
sans-I/O server (:mod:`ironpost.protocol.server`) the network listeners use. The local
user is trusted (no restrictions, no AUTH, no TLS); injection goes through the same
:class:`~ironpost.cli.sendmail.Injector` as ``sendmail`` proper.
"""

from __future__ import annotations

import os
import time
from typing import BinaryIO

from ironpost.cli.sendmail import (
    EX_DATAERR,
    EX_OK,
    Injector,
    SendmailError,
    prepare_message,
)
from ironpost.delivery.bounce import to_crlf
from ironpost.queue import new_queue_id


class _SmtpTransaction:
    def __init__(self, sender: str, ret: str | None, envid: str | None, body: str | None):
        self.sender, self.ret, self.envid, self.body_type = sender, ret, envid, body
        self.recipients: list[tuple[str, tuple[str, ...] | None, str | None]] = []
        self.chunks: list[bytes] = []


def smtp_session(injector: Injector, stdin: BinaryIO, stdout: BinaryIO) -> int:
    """``-bs``: SMTP on stdin/stdout through the sans-I/O server, each message queued at
    its end of DATA. The local user is trusted (no policy restrictions, no AUTH, no TLS),
    as Postfix's ``sendmail -bs``; bare LF line ends are accepted."""
    from ironpost.protocol import events as ev
    from ironpost.protocol import replies as R
    from ironpost.protocol.replies import Reply
    from ironpost.protocol.server import ServerConnection
    from ironpost.protocol.session import ServerOptions

    limit = injector.settings.integer("message_size_limit")
    conn = ServerConnection(
        ServerOptions(max_message_size=limit, forbid_bare_newline=False, chunking=True)
    )
    host = injector.hostname
    out = [conn.send_greeting(Reply(220, None, f"{host} ESMTP ironpost"))]
    tx: _SmtpTransaction | None = None

    def answer(event: ev.Event) -> Reply:
        nonlocal tx
        if isinstance(event, ev.Helo):
            tx = None
            if event.extended:
                return Reply(250, None, (host, *conn.ehlo_keywords()))
            return Reply(250, None, host)
        if isinstance(event, ev.Mail):
            try:
                sender = injector.sender(event.path.address) if not event.path.null else ""
            except SendmailError:
                return R.BAD_ADDRESS_SYNTAX
            p = event.params
            tx = _SmtpTransaction(sender, p.ret, p.envid, p.body)
            return R.SENDER_OK
        if isinstance(event, ev.Rcpt):
            if tx is None:
                return R.NEED_MAIL
            try:
                address = injector.qualify(event.path.address)
            except SendmailError:
                return R.BAD_ADDRESS_SYNTAX
            tx.recipients.append((address, event.params.notify, event.params.orcpt))
            return R.RECIPIENT_OK
        if isinstance(event, ev.Data):
            return R.START_DATA if tx is not None and tx.recipients else R.NEED_RCPT
        if isinstance(event, ev.BdatChunk):
            return Reply(250, "2.0.0", f"{event.size} bytes ok")
        if isinstance(event, ev.MessageEnd):
            current, tx = tx, None
            if event.error is not None:
                return event.error
            if current is None or not current.recipients:
                return R.NEED_RCPT
            return queue_it(current)
        if isinstance(event, ev.Quit):
            return R.BYE
        if isinstance(event, ev.ProtocolError):
            return event.reply
        if isinstance(event, ev.Rset):
            tx = None
            return R.RESET_OK
        if isinstance(event, ev.Noop):
            return R.NOOP_OK
        if isinstance(event, ev.Help):
            return R.HELP
        if isinstance(event, ev.Vrfy | ev.Expn):
            return R.VRFY_DISABLED
        if isinstance(event, ev.StartTls):
            return R.TLS_UNAVAILABLE
        return R.AUTH_NOT_ENABLED  # Auth, AuthResponse: the local user needs none

    def queue_it(current: _SmtpTransaction) -> Reply:
        now = time.time()
        queue_id = new_queue_id()
        content, _ = prepare_message(
            to_crlf(b"".join(current.chunks)),
            sender=current.sender,
            full_name=None,
            hostname=host,
            queue_id=queue_id,
            uid=injector.uid,
            now=now,
        )
        try:
            specs = injector.specs(current.recipients)
            injector.submit(
                sender=current.sender,
                specs=specs,
                content=content,
                queue_id=queue_id,
                now=now,
                ret=current.ret,
                envid=current.envid,
                body_type=current.body_type,
                protocol="ESMTP",
            )
        except SendmailError as exc:
            if exc.status == EX_DATAERR:
                return R.MESSAGE_TOO_BIG
            return R.LOCAL_ERROR
        return Reply(250, "2.0.0", f"Ok: queued as {queue_id}")

    while True:
        event = conn.next_event()
        if event is ev.NEED_DATA:
            if out:
                stdout.write(b"".join(out))
                stdout.flush()
                out.clear()
            data = os.read(stdin.fileno(), 65536) if hasattr(stdin, "fileno") else b""
            conn.receive_data(data)
            continue
        if event is ev.CLOSED or isinstance(event, ev.ConnectionClosed):
            break
        if isinstance(event, ev.MessageData):
            if tx is not None:
                tx.chunks.append(event.chunk)
            continue
        assert isinstance(event, ev.Event)
        out.append(conn.send(answer(event)))
    if out:
        stdout.write(b"".join(out))
        stdout.flush()
    return EX_OK
