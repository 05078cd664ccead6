"""``sendmail``/``mailq`` compatibility: what applications call to hand ironpost a message.

Owns the Postfix sendmail(1) command line, the preparation of a locally submitted message
(Postfix's pickup + cleanup: CRLF line ends, Bcc removal, the missing Message-ID, Date and
From headers, a Received header) and its injection straight into the queue store, so mail
is queued whether or not the server runs; a running server is woken up through its trigger
socket (:mod:`ironpost.queue.trigger`), a stopped one delivers it once started.

Invariants:
- a message is acknowledged (exit 0) only after the queue store committed it;
- every failure exits with a sysexits code and one ``sendmail: fatal: …`` line on stderr,
  never a traceback: 64 usage, 65 bad data (address syntax, size), 66 no input,
  70 internal error, 75 queue unavailable (try again), 78 configuration error;
- recipient and sender addresses pass :func:`ironpost.protocol.grammar.parse_path`, with
  bare local parts qualified with ``@$myorigin`` (``append_at_myorigin``).
"""

from __future__ import annotations

import asyncio
import email.utils
import getopt
import os
import pwd
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from ironpost.cli.common import default_config_dir, print_diagnostics
from ironpost.config import ConfigError, Settings, load
from ironpost.delivery.bounce import to_crlf
from ironpost.protocol.errors import AddressError
from ironpost.protocol.grammar import parse_path
from ironpost.queue import ClientInfo, Envelope, QueueWriteError, RecipientSpec, new_queue_id
from ironpost.queue.trigger import FLUSH, WAKE, notify

EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66
EX_SOFTWARE = 70
EX_TEMPFAIL = 75
EX_CONFIG = 78

# Postfix sendmail's getopt string. Options not listed in _honoured are accepted and
# ignored, as Postfix ignores them (see docs/bounces.md).
_GETOPT = "46B:C:F:GIL:N:O:R:UV:X:b:ce:f:h:imno:p:r:tvx"
_BODY_TYPES = {"7BIT": "7BIT", "8BITMIME": "8BITMIME"}
_NOTIFY = ("SUCCESS", "FAILURE", "DELAY")
_LOCAL_CLIENT = ClientInfo(
    address="127.0.0.1", name="localhost", helo="localhost", protocol="LOCAL"
)


class SendmailError(Exception):
    """Ends the command with ``status`` and ``sendmail: fatal: message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Invocation:
    """The parsed command line."""

    mode: str = "deliver"  # deliver (-bm), smtp (-bs), list (-bp), flush (-q)
    config_dir: str | None = None
    sender: str | None = None  # None: the invoking user
    full_name: str | None = None
    extract: bool = False  # -t
    ignore_dots: bool = False  # -i / -oi
    notify: tuple[str, ...] | None = None  # -N
    ret: str | None = None  # -R
    envid: str | None = None  # -V
    body_type: str | None = None  # -B
    recipients: list[str] = field(default_factory=list)


def parse_invocation(argv: Sequence[str], *, program: str = "sendmail") -> Invocation:
    """Parse sendmail's options (raises :class:`SendmailError` with EX_USAGE)."""
    inv = Invocation(mode="list" if program == "mailq" else "deliver")
    words = list(argv)
    if any(w.startswith("-q") for w in words):
        # -q (flush) and -qINTERVAL take an optional argument, which getopt cannot say.
        inv.mode = "flush"
        words = [w for w in words if not w.startswith("-q")]
    try:
        opts, args = getopt.gnu_getopt(words, _GETOPT)
    except getopt.GetoptError as exc:
        raise SendmailError(EX_USAGE, f"usage: {exc}") from None
    for opt, value in opts:
        flag = opt[1]
        if flag == "b":
            modes = {"m": "deliver", "s": "smtp", "p": "list"}
            if value not in modes:
                raise SendmailError(EX_USAGE, f"unsupported: -b{value}")
            inv.mode = modes[value]
        elif flag == "C":
            inv.config_dir = value
        elif flag in "fr":
            inv.sender = value
        elif flag == "F":
            inv.full_name = value
        elif flag == "t":
            inv.extract = True
        elif flag == "i" or (flag == "o" and value == "i"):
            inv.ignore_dots = True
        elif flag == "I":
            raise SendmailError(EX_USAGE, "unsupported: -I (newaliases)")
        elif flag == "N":
            inv.notify = _parse_notify(value)
        elif flag == "R":
            if value.upper() not in ("FULL", "HDRS"):
                raise SendmailError(EX_USAGE, f"-R: expected full or hdrs, not {value!r}")
            inv.ret = value.upper()
        elif flag == "V":
            if not value or len(value) > 100 or not all(" " < c <= "~" for c in value):
                raise SendmailError(EX_USAGE, "-V: bad envelope id")
            inv.envid = value
        elif flag == "B":
            body = _BODY_TYPES.get(value.upper())
            if body is None:
                raise SendmailError(EX_USAGE, f"-B: expected 7bit or 8bitmime, not {value!r}")
            inv.body_type = body
        # Everything else (-4 -6 -G -U -c -m -n -v -x -e -h -L -O -p -X, -o other than
        # -oi: -odi, -odb, -oem, -oA…) is accepted and ignored, as in Postfix.
    inv.recipients = args
    return inv


def _parse_notify(value: str) -> tuple[str, ...]:
    items = tuple(dict.fromkeys(v.strip().upper() for v in value.split(",")))
    if items != ("NEVER",) and not all(i in _NOTIFY for i in items):
        raise SendmailError(EX_USAGE, f"-N: bad notification list {value!r}")
    return items


# -- message preparation (pure) ---------------------------------------------------------

_END_DOT = re.compile(rb"^\.\r?(?:\n|\Z)", re.MULTILINE)
_FIELD = re.compile(rb"[!-9;-~]+:")


def read_message(data: bytes, *, ignore_dots: bool) -> bytes:
    """What stdin holds as a message: up to a lone ``.`` line unless ``-i``, an mbox
    ``From `` first line dropped (Postfix does), line ends made CRLF."""
    if not ignore_dots:
        m = _END_DOT.search(data)
        if m is not None:
            data = data[: m.start()]
    if data.startswith(b"From "):
        nl = data.find(b"\n")
        data = b"" if nl < 0 else data[nl + 1 :]
    return to_crlf(data)


def split_header(content: bytes) -> tuple[list[bytes], bytes]:
    """The header fields (each with its continuation lines and CRLF) and the rest.

    The header ends at the blank line or at the first line that is not a field: in that
    case the body did not start with a blank line and one is inserted, so that a header
    we add can never swallow the first body line.
    """
    fields: list[bytes] = []
    pos = 0
    size = len(content)
    while pos < size:
        end = content.find(b"\r\n", pos)
        end = size if end < 0 else end + 2
        line = content[pos:end]
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        elif _FIELD.match(line):
            fields.append(line if line.endswith(b"\r\n") else line + b"\r\n")
        else:
            break
        pos = end
    body = content[pos:]
    if body and not body.startswith(b"\r\n"):
        body = b"\r\n" + body
    return fields, body


def field_name(f: bytes) -> str:
    return f[: f.index(b":")].decode("ascii", "replace").strip().lower()


def field_value(f: bytes) -> str:
    raw = f[f.index(b":") + 1 :].replace(b"\r\n", b"")
    return raw.decode("utf-8", "replace").strip()


def header_recipients(fields: Sequence[bytes]) -> list[str]:
    """``-t``: the addresses in To/Cc/Bcc, or in the Resent- ones when there are any."""
    names = {field_name(f) for f in fields}
    resent = any(n.startswith("resent-") for n in names)
    wanted = ("resent-to", "resent-cc", "resent-bcc") if resent else ("to", "cc", "bcc")
    values = [field_value(f) for f in fields if field_name(f) in wanted]
    return [addr for _, addr in email.utils.getaddresses(values) if addr]


def _clean(text: str) -> str:
    return re.sub(r"[\x00-\x1f\x7f]", " ", text).strip()


def pickup_received(*, hostname: str, uid: int, queue_id: str, now: float) -> bytes:
    """Postfix pickup's Received header: ``by host (ironpost, from userid N) id Q; date``."""
    date = email.utils.formatdate(now, localtime=True)
    return (
        f"Received: by {hostname} (ironpost, from userid {uid})\r\n\tid {queue_id}; {date}\r\n"
    ).encode()


def prepare_message(
    content: bytes,
    *,
    sender: str,
    full_name: str | None,
    hostname: str,
    queue_id: str,
    uid: int,
    now: float,
) -> tuple[bytes, list[str]]:
    """The message as queued, and the recipients its header names (for ``-t``).

    Bcc and Resent-Bcc are removed (Postfix removes them from all local submissions);
    Message-ID, Date and From are appended to the header when missing.
    """
    fields, body = split_header(content)
    recipients = header_recipients(fields)
    kept = [f for f in fields if field_name(f) not in ("bcc", "resent-bcc")]
    present = {field_name(f) for f in kept}
    added: list[str] = []
    if "message-id" not in present:
        stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(now))
        added.append(f"Message-ID: <{stamp}.{queue_id}@{hostname}>")
    if "date" not in present:
        added.append(f"Date: {email.utils.formatdate(now, localtime=True)}")
    if "from" not in present:
        address = sender or f"MAILER-DAEMON@{hostname}"
        name = _clean(full_name or "")
        added.append(f"From: {email.utils.formataddr((name, address)) if name else address}")
    head = pickup_received(hostname=hostname, uid=uid, queue_id=queue_id, now=now)
    extra = "".join(f"{a}\r\n" for a in added).encode("utf-8")
    return head + b"".join(kept) + extra + body, recipients


def qualify(address: str, *, myorigin: str, append: bool) -> str:
    """A checked ``local@domain``; bare local parts get ``@$myorigin`` (EX_DATAERR else)."""
    address = address.strip()
    if address.startswith("<") and address.endswith(">"):
        address = address[1:-1]
    if "@" not in address and append and address:
        address = f"{address}@{myorigin}"
    try:
        return parse_path(address, smtputf8=True).address
    except AddressError:
        raise SendmailError(EX_DATAERR, f"bad address syntax: {_clean(address)!r}") from None


def envelope_sender(given: str | None, *, user: str, myorigin: str, append: bool) -> str:
    if given is None:
        return qualify(user, myorigin=myorigin, append=True)
    if given.strip() in ("", "<>"):
        return ""
    parsed = email.utils.getaddresses([given])
    address = parsed[0][1] if parsed and parsed[0][1] else given
    return qualify(address, myorigin=myorigin, append=append)


def command_line_recipients(args: Sequence[str]) -> list[str]:
    """Each argument may be an address list (``a@x, b@y``), as Postfix parses it."""
    out: list[str] = []
    for arg in args:
        found = [addr for _, addr in email.utils.getaddresses([arg]) if addr]
        if not found and arg.strip(" ,"):
            raise SendmailError(EX_DATAERR, f"bad address syntax: {_clean(arg)!r}")
        out += found
    return out


# -- the side effects ---------------------------------------------------------------------


def load_settings(config_dir: str | None) -> Settings:
    directory = config_dir or default_config_dir()
    try:
        loaded = load(Path(directory) if directory else None)
    except ConfigError as exc:
        print_diagnostics(exc.diagnostics)
        raise SendmailError(EX_CONFIG, "configuration error") from None
    print_diagnostics(loaded.diagnostics)
    return loaded.settings


def _login_name(uid: int) -> str:
    # The password database, not $USER: the sender must not be forged through the env.
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid{uid}"


class Injector:
    """Queues locally submitted messages (one store, opened on first use)."""

    def __init__(self, settings: Settings, *, uid: int | None = None) -> None:
        self.settings = settings
        self.uid = os.getuid() if uid is None else uid
        self.hostname = settings.text("myhostname")
        self.myorigin = settings.text("myorigin")
        self.append = settings.boolean("append_at_myorigin")
        self._router: Any = None

    def qualify(self, address: str) -> str:
        return qualify(address, myorigin=self.myorigin, append=self.append)

    def sender(self, given: str | None) -> str:
        return envelope_sender(
            given, user=_login_name(self.uid), myorigin=self.myorigin, append=self.append
        )

    def expand(self, address: str) -> list[str]:
        """Virtual alias expansion, as the server's cleanup does it at RCPT."""
        from ironpost.routing.router import ExpansionLimitError, Router, RoutingConfig

        if self._router is None:
            self._router = Router(RoutingConfig.from_settings(self.settings))
        try:
            expanded: list[str] = self._router.expand(address)
        except ExpansionLimitError:
            raise SendmailError(EX_TEMPFAIL, "alias expansion failed") from None
        return expanded or [address]

    def specs(
        self, recipients: Sequence[tuple[str, tuple[str, ...] | None, str | None]]
    ) -> tuple[RecipientSpec, ...]:
        """(address, notify, orcpt) -> recipient specs, expanded and de-duplicated."""
        seen: set[str] = set()
        out: list[RecipientSpec] = []
        for address, wanted, orcpt in recipients:
            for final in self.expand(address):
                if final.lower() not in seen:
                    seen.add(final.lower())
                    out.append(RecipientSpec(final, address, wanted, orcpt))
        return tuple(out)

    def submit(
        self,
        *,
        sender: str,
        specs: tuple[RecipientSpec, ...],
        content: bytes,
        queue_id: str,
        now: float,
        ret: str | None = None,
        envid: str | None = None,
        body_type: str | None = None,
        protocol: str = "LOCAL",
    ) -> str:
        limit = self.settings.integer("message_size_limit")
        if limit and len(content) > limit:
            raise SendmailError(EX_DATAERR, "message file too big")
        content = self.dkim_sign(content)
        utf8 = not sender.isascii() or any(not s.address.isascii() for s in specs)
        envelope = Envelope(
            sender=sender,
            recipients=specs,
            size=len(content),
            body_type=body_type,
            smtputf8=utf8,
            ret=ret,
            envid=envid,
            client=ClientInfo(_LOCAL_CLIENT.address, "localhost", "localhost", protocol),
            arrival=now,
        )
        from ironpost.queue.engines import open_store

        try:
            store = open_store(self.settings, delivers=False)
        except Exception as exc:  # permissions, a damaged database: mail is not lost
            raise SendmailError(EX_TEMPFAIL, f"cannot open the queue: {exc}") from None
        try:
            asyncio.run(store.submit(envelope, content, queue_id=queue_id))
        except QueueWriteError as exc:
            raise SendmailError(EX_TEMPFAIL, f"queue write error: {exc}") from None
        finally:
            store.close()
        self._log(queue_id, sender, len(specs))
        # Deliver now rather than at the server's next poll (a no-op when it is stopped).
        notify(self.settings.text("queue_directory"), WAKE)
        return queue_id

    def dkim_sign(self, content: bytes) -> bytes:
        """Sign as the server signs its own users' mail (dkim_signing_table). A key this
        user may not read (they are 0600) leaves the message unsigned, with a warning:
        the mail is still accepted."""
        from ironpost.auth.dkim_keys import DkimKeyError
        from ironpost.auth.dkim_sign import DkimSigner

        if not self.settings.words("dkim_signing_table"):
            return content
        try:
            signer = DkimSigner.from_settings(self.settings, self.settings.base)
            return signer.sign(content) + content
        except (DkimKeyError, OSError) as exc:
            print(f"sendmail: warning: not DKIM-signed: {exc}", file=sys.stderr)
            return content

    def _log(self, queue_id: str, sender: str, count: int) -> None:
        path = self.settings.text("maillog_file")
        if not path or path in ("-", "/dev/stderr", "/dev/stdout"):
            return  # the caller's terminal or pipe is no log
        from ironpost.maillog import MailLog

        try:  # the server's privacy settings apply to this line too
            log = MailLog.from_settings(self.settings, hostname=self.hostname)
        except OSError:
            return
        log.emit("pickup", f"{queue_id}: uid={self.uid} from=<{sender}>")
        log.close()


def deliver(inv: Invocation, injector: Injector, stdin: BinaryIO) -> str:
    """``-bm`` (the default): read the message, queue it, return its queue id."""
    sender = injector.sender(inv.sender)
    given = [injector.qualify(a) for a in command_line_recipients(inv.recipients)]
    if not given and not inv.extract:
        raise SendmailError(
            EX_USAGE, "Recipient addresses must be specified on the command line or via -t"
        )
    try:
        raw = stdin.read()
    except OSError as exc:
        raise SendmailError(EX_NOINPUT, f"cannot read the message: {exc}") from None
    now = time.time()
    queue_id = new_queue_id()
    content, in_header = prepare_message(
        read_message(raw, ignore_dots=inv.ignore_dots),
        sender=sender,
        full_name=inv.full_name,
        hostname=injector.hostname,
        queue_id=queue_id,
        uid=injector.uid,
        now=now,
    )
    if inv.extract:
        given += [injector.qualify(a) for a in in_header]
    if not given:
        raise SendmailError(EX_USAGE, "No recipient addresses found in message header")
    specs = injector.specs([(a, inv.notify, None) for a in given])
    return injector.submit(
        sender=sender,
        specs=specs,
        content=content,
        queue_id=queue_id,
        now=now,
        ret=inv.ret,
        envid=inv.envid,
        body_type=inv.body_type,
    )


def list_queue(settings: Settings) -> int:
    from ironpost.cli.queue import cmd_list, format_mailq
    from ironpost.queue.engines import open_store, queue_exists

    if not queue_exists(settings):
        sys.stdout.write(format_mailq([]))  # no queue yet: do not create one to say so
        return EX_OK
    try:
        store = open_store(settings, delivers=False)
    except Exception as exc:
        raise SendmailError(EX_TEMPFAIL, f"cannot open the queue: {exc}") from None
    try:
        return cmd_list(store, as_json=False, out=sys.stdout)
    finally:
        store.close()


def sendmail_main(argv: Sequence[str] | None = None, *, program: str | None = None) -> int:
    """The ``sendmail`` console script (and ``ironpost sendmail``)."""
    if argv is None:
        argv = sys.argv[1:]
        program = program or os.path.basename(sys.argv[0])
    program = program or "sendmail"
    try:
        inv = parse_invocation(argv, program=program)
        injector = Injector(load_settings(inv.config_dir))
        if inv.mode == "flush":  # Postfix: postqueue -f
            notify(injector.settings.text("queue_directory"), FLUSH)
            return EX_OK
        if inv.mode == "list":
            return list_queue(injector.settings)
        if inv.mode == "smtp":
            from ironpost.cli.sendmail_bs import smtp_session

            return smtp_session(injector, sys.stdin.buffer, sys.stdout.buffer)
        deliver(inv, injector, sys.stdin.buffer)
        return EX_OK
    except SendmailError as exc:
        print(f"{program}: fatal: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        return EX_TEMPFAIL
    except Exception as exc:  # a bug: say so in one line, never a traceback to the app
        print(f"{program}: fatal: internal error: {exc!r}", file=sys.stderr)
        return EX_SOFTWARE


def mailq_main(argv: Sequence[str] | None = None) -> int:
    """The ``mailq`` console script: ``sendmail -bp``."""
    return sendmail_main(list(sys.argv[1:] if argv is None else argv), program="mailq")


def add_parser(subparsers: Any) -> None:
    """``ironpost sendmail …`` is dispatched by :func:`ironpost.cli.main.main` before
    argparse (sendmail's options are getopt-style); this entry only shows it in help."""
    p = subparsers.add_parser(
        "sendmail", help="sendmail(1)-compatible message submission", add_help=False
    )
    p.add_argument("args", nargs="*")
    p.set_defaults(func=lambda args: sendmail_main(args.args))
