"""The Dovecot SASL back-end: ``smtpd_sasl_type = dovecot`` over ``smtpd_sasl_path``.

Owns the client side of Dovecot's authentication protocol (auth-client protocol 1.x,
as Postfix's xsasl_dovecot speaks it): the VERSION/CPID handshake, the MECH list the
server announces, and AUTH/CONT/OK/FAIL exchanges multiplexed by request id over one
persistent connection (a unix socket, or ``inet:host:port``).

Invariants:

* one connection per back-end, opened lazily and again after a loss; a reader task
  hands each reply to the future of the request it names;
* a request in flight when the connection dies, or not answered within ``timeout``,
  ends in ``Failure(temporary=True)`` (the client gets 454, never 535);
* only mechanisms Dovecot announced are ever sent to it (it drops the connection on an
  unknown one); ``private`` and ``anonymous`` ones, and EXTERNAL, are never advertised;
* values are tab-escaped as Dovecot requires (``\\x01`` is the escape character);
* credentials (``resp=`` and ``CONT`` data) are never logged or kept in a Failure;
* a line from Dovecot longer than :data:`MAX_LINE` drops the connection; a line of ours
  longer than that is refused locally.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import os
import time
from collections.abc import Callable

from ironpost.sasl.backend import Challenge, ClientMeta, Failure, Outcome, Success

#: Dovecot's AUTH_CLIENT_MAX_LINE_LENGTH (2.3); GSSAPI tokens are the largest lines.
MAX_LINE = 16384
#: Offered while Dovecot has never answered: what a stock Dovecot offers.
FALLBACK_MECHANISMS = ("PLAIN", "LOGIN")
#: How long mechanisms() waits between background attempts to reach a silent Dovecot.
RETRY_INTERVAL = 5.0
#: PIDs are below 2**22 on Linux; a second connection from this process adds multiples.
_PID_SPACE = 1 << 22
_MAX_ID = (1 << 32) - 1

_ESCAPES = {"\x00": "\x010", "\x01": "\x011", "\t": "\x01t", "\r": "\x01r", "\n": "\x01n"}
_UNESCAPES = {"0": "\x00", "1": "\x01", "t": "\t", "r": "\r", "n": "\n"}
_NEEDS_ESCAPE = str.maketrans(_ESCAPES)

# Dovecot treats a CPID equal to that of a live connection as a client bug and drops the
# new connection; several back-ends (listeners) in one process each need their own.
_cpids_in_use: set[int] = set()


def tab_escape(value: str) -> str:
    """Dovecot's str_tabescape(): NUL, ``\\x01``, TAB, CR and LF become ``\\x01`` + a letter."""
    return value.translate(_NEEDS_ESCAPE)


def tab_unescape(value: str) -> str:
    """The inverse of :func:`tab_escape`; an unknown escape yields the character itself."""
    if "\x01" not in value:
        return value
    out: list[str] = []
    parts = value.split("\x01")
    out.append(parts[0])
    for part in parts[1:]:
        if part:
            out.append(_UNESCAPES.get(part[0], part[0]))
            out.append(part[1:])
    return "".join(out)


def parse_params(fields: list[str]) -> dict[str, str]:
    """Optional parameters: ``name=value`` pairs and bare booleans (value ``""``)."""
    params: dict[str, str] = {}
    for field in fields:
        name, _, value = field.partition("=")
        params[name] = tab_unescape(value)
    return params


def usable_mechanism(fields: list[str]) -> str | None:
    """From a ``MECH`` line's fields (after the verb): the name to advertise, or None."""
    if not fields or not fields[0]:
        return None
    name = fields[0].upper()
    flags = {f.lower() for f in fields[1:]}
    if "private" in flags or "anonymous" in flags:
        return None
    if name == "EXTERNAL":
        return None  # it needs the client certificate, which we do not pass to Dovecot
    return name


def auth_line(
    request_id: int,
    mechanism: str,
    service: str,
    client: ClientMeta,
    initial: bytes | None,
) -> str:
    """The ``AUTH`` command, without its LF. ``initial`` None sends no ``resp=``."""
    params = [
        "AUTH",
        str(request_id),
        tab_escape(mechanism),
        "service=" + tab_escape(service),
        "nologin",  # we only verify; Dovecot must not prepare a login for a mail process
        # ironpost counts failures and delays replies itself (per IP and per user);
        # Dovecot's own penalty would stack on top and could outlast our timeout.
        "no-penalty",
    ]
    if client.local_address:
        params.append("lip=" + tab_escape(client.local_address))
    if client.address:
        params.append("rip=" + tab_escape(client.address))
    if client.local_port:
        params.append(f"lport={client.local_port}")
    if client.port:
        params.append(f"rport={client.port}")
    if client.tls:
        params.append("secured")  # as Postfix: only a TLS session counts as secured
    if initial is not None:
        params.append("resp=" + base64.b64encode(initial).decode("ascii"))
    return "\t".join(params)


def cont_line(request_id: int, response: bytes) -> str:
    return f"CONT\t{request_id}\t{base64.b64encode(response).decode('ascii')}"


def _printable(text: str, limit: int = 200) -> str:
    """Dovecot's reason text, safe for one log line."""
    return "".join(c if c.isprintable() else "?" for c in text[:limit])


class _Lost(Exception):
    """The connection to Dovecot failed or closed."""


class _Connection:
    """One handshaken connection: the announced mechanisms and the requests in flight."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        cpid: int,
        mechanisms: tuple[str, ...],
        announced: frozenset[str],
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.cpid = cpid
        self.mechanisms = mechanisms  # to advertise
        self.announced = announced  # every name Dovecot accepts, private ones included
        self.pending: dict[int, asyncio.Future[list[str] | None]] = {}
        self.closed = False
        self.task: asyncio.Task[None] | None = None

    def send(self, line: str) -> None:
        if self.closed:
            raise _Lost("connection closed")
        self.writer.write(line.encode("utf-8") + b"\n")

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        _cpids_in_use.discard(self.cpid)
        for future in self.pending.values():
            if not future.done():
                future.set_result(None)
        self.pending.clear()
        self.writer.close()


class DovecotBackend:
    """:class:`~ironpost.sasl.backend.SaslBackend` that asks a Dovecot auth server."""

    name = "dovecot"

    def __init__(
        self,
        path: str,
        *,
        service: str = "smtp",
        timeout: float = 10.0,
        log_warning: Callable[[str], None] | None = None,
    ) -> None:
        self.path = path
        self.service = service
        self.timeout = timeout
        self._warn = log_warning or (lambda _text: None)
        self._conn: _Connection | None = None
        self._connecting: asyncio.Lock | None = None
        self._mechanisms: tuple[str, ...] | None = None
        self._next_id = 0
        self._down = False  # a warning was logged; the next one waits for a recovery
        self._retry_at = 0.0
        self._refresh: asyncio.Task[object] | None = None

    # -- SaslBackend ------------------------------------------------------------------

    async def start(self) -> None:
        """Connect once so that EHLO offers what Dovecot offers. Never raises."""
        if await self._connection() is None:
            self._warn(
                f"dovecot auth {self.path}: unreachable at start; offering "
                f"{' '.join(FALLBACK_MECHANISMS)} until it answers"
            )

    def mechanisms(self) -> tuple[str, ...]:
        if self._mechanisms is None:
            self._schedule_retry()
            return FALLBACK_MECHANISMS
        return self._mechanisms

    def begin(self, mechanism: str, client: ClientMeta) -> DovecotExchange:
        return DovecotExchange(self, mechanism.upper(), client)

    async def close(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
            with contextlib.suppress(BaseException):
                await self._refresh
            self._refresh = None
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            if conn.task is not None:
                conn.task.cancel()
                with contextlib.suppress(BaseException):
                    await conn.task
            with contextlib.suppress(OSError):
                await conn.writer.wait_closed()

    # -- the connection ---------------------------------------------------------------

    def _schedule_retry(self) -> None:
        """From mechanisms() (sync, on EHLO): try Dovecot again in the background."""
        if (self._refresh is not None and not self._refresh.done()) or (
            time.monotonic() < self._retry_at
        ):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._retry_at = time.monotonic() + RETRY_INTERVAL
        self._refresh = loop.create_task(self._connection())

    def request_id(self) -> int:
        self._next_id = self._next_id + 1 if self._next_id < _MAX_ID else 1
        return self._next_id

    async def _connection(self) -> _Connection | None:
        """The live connection, opened (and handshaken) if need be; None if Dovecot is down."""
        conn = self._conn
        if conn is not None and not conn.closed:
            return conn
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            conn = self._conn
            if conn is not None and not conn.closed:
                return conn
            try:
                conn = await asyncio.wait_for(self._open(), self.timeout)
            except (OSError, _Lost, TimeoutError, ValueError) as exc:
                self._retry_at = time.monotonic() + RETRY_INTERVAL
                if not self._down:
                    self._down = True
                    why = str(exc) or type(exc).__name__
                    self._warn(f"dovecot auth {self.path}: cannot connect: {why}")
                return None
            if self._down:
                self._down = False
                self._warn(f"dovecot auth {self.path}: connected again")
            self._conn = conn
            self._mechanisms = conn.mechanisms
            conn.task = asyncio.get_running_loop().create_task(self._read_replies(conn))
            return conn

    async def _open(self) -> _Connection:
        reader, writer = await self._dial()
        cpid = os.getpid()
        while cpid in _cpids_in_use:
            cpid += _PID_SPACE
        _cpids_in_use.add(cpid)
        try:
            # The client half of the handshake goes out at once, as Dovecot's own does.
            writer.write(f"VERSION\t1\t2\nCPID\t{cpid}\n".encode())
            mechanisms: list[str] = []
            announced: set[str] = set()
            version_seen = False
            while True:
                fields = await _read_fields(reader)
                verb = fields[0]
                if verb == "VERSION":
                    if len(fields) < 2 or fields[1] != "1":
                        version = _printable("\t".join(fields[1:]))
                        raise _Lost(f"unsupported protocol version {version!r}")
                    version_seen = True
                elif verb == "MECH" and len(fields) > 1:
                    announced.add(fields[1].upper())
                    usable = usable_mechanism(fields[1:])
                    if usable is not None and usable not in mechanisms:
                        mechanisms.append(usable)
                elif verb == "DONE":
                    break
            if not version_seen:
                raise _Lost("no VERSION in handshake")
        except BaseException:
            _cpids_in_use.discard(cpid)
            writer.close()
            raise
        return _Connection(reader, writer, cpid, tuple(mechanisms), frozenset(announced))

    async def _dial(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        # The limit also bounds readuntil(): a longer line raises instead of buffering.
        if self.path.startswith("inet:"):
            host, _, port = self.path[5:].rpartition(":")
            host = host.strip("[]")
            if not host or not port.isdigit():
                raise ValueError(f"bad inet address {self.path!r}")
            return await asyncio.open_connection(host, int(port), limit=MAX_LINE)
        path = self.path[5:] if self.path.startswith("unix:") else self.path
        return await asyncio.open_unix_connection(path, limit=MAX_LINE)

    async def _read_replies(self, conn: _Connection) -> None:
        """The reader task: hands OK/CONT/FAIL to the request named by its id."""
        why = "closed by Dovecot"
        try:
            while True:
                fields = await _read_fields(conn.reader)
                if fields[0] not in ("OK", "CONT", "FAIL") or len(fields) < 2:
                    continue  # unknown verbs are to be ignored (protocol rule)
                try:
                    request_id = int(fields[1])
                except ValueError:
                    continue
                future = conn.pending.pop(request_id, None)
                if future is not None and not future.done():
                    future.set_result(fields)
        except asyncio.CancelledError:
            why = "closed"
            raise
        except (OSError, _Lost, ValueError) as exc:
            why = str(exc) or type(exc).__name__
        finally:
            in_flight = len(conn.pending)
            conn.close()
            if self._conn is conn:
                self._conn = None
            if why != "closed":
                self._down = True
                lost = f"; {in_flight} request(s) in flight failed" if in_flight else ""
                self._warn(f"dovecot auth {self.path}: connection lost: {why}{lost}")

    async def exchange(self, conn: _Connection, request_id: int, line: str) -> list[str] | None:
        """Send one AUTH/CONT line and wait for its reply; None if lost or timed out."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[str] | None] = loop.create_future()
        conn.pending[request_id] = future
        try:
            conn.send(line)
            await conn.writer.drain()
            return await asyncio.wait_for(future, self.timeout)
        except (OSError, _Lost):
            return None
        except TimeoutError:
            self._warn(f"dovecot auth {self.path}: no answer in {self.timeout:g}s")
            with contextlib.suppress(OSError, _Lost):
                conn.send(f"CANCEL\t{request_id}")
            return None
        finally:
            conn.pending.pop(request_id, None)


async def _read_fields(reader: asyncio.StreamReader) -> list[str]:
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        raise _Lost("closed by Dovecot") from exc
    except asyncio.LimitOverrunError as exc:
        raise _Lost(f"line longer than {MAX_LINE} bytes") from exc
    return line[:-1].decode("utf-8", "replace").split("\t")


class DovecotExchange:
    """One AUTH conversation relayed to Dovecot (one request id)."""

    __slots__ = ("_backend", "_claimed", "_client", "_conn", "_done", "_id", "mechanism")

    def __init__(self, backend: DovecotBackend, mechanism: str, client: ClientMeta) -> None:
        self._backend = backend
        self.mechanism = mechanism
        self._client = client
        self._conn: _Connection | None = None
        self._id = 0
        self._done = False
        self._claimed: str | None = None

    async def step(self, response: bytes | None) -> Outcome:
        if self._done:
            return Failure(self._claimed, reason="exchange already finished")
        self._note_claim(response)
        backend = self._backend
        if self._conn is None:
            conn = await backend._connection()
            if conn is None:
                return self._finish(Failure(self._claimed, True, "Dovecot unreachable"))
            if self.mechanism not in conn.announced:
                # Dovecot disconnects a client that names a mechanism it lacks.
                return self._finish(Failure(self._claimed, reason="mechanism not offered"))
            self._conn = conn
            self._id = backend.request_id()
            line = auth_line(self._id, self.mechanism, backend.service, self._client, response)
        else:
            conn = self._conn
            line = cont_line(self._id, response or b"")
        if len(line) >= MAX_LINE:
            self.cancel()
            return Failure(self._claimed, reason="response too long")
        fields = await backend.exchange(conn, self._id, line)
        if fields is None:
            return self._finish(Failure(self._claimed, True, "Dovecot did not answer"))
        return self._outcome(fields)

    def cancel(self) -> None:
        if self._done:
            return
        self._done = True
        conn = self._conn
        if conn is not None and not conn.closed:
            future = conn.pending.pop(self._id, None)
            if future is not None and not future.done():
                future.set_result(None)
            with contextlib.suppress(OSError, _Lost):
                conn.send(f"CANCEL\t{self._id}")

    # -- internals --------------------------------------------------------------------

    def _finish(self, outcome: Failure | Success) -> Failure | Success:
        self._done = True
        return outcome

    def _note_claim(self, response: bytes | None) -> None:
        """Remember the identity the client claims, for a FAIL that names nobody.

        PLAIN: the authcid of ``authzid NUL authcid NUL passwd``. LOGIN: the first
        response is the user name (the next one, the password, is never looked at)."""
        if self._claimed is not None or response is None:
            return
        if self.mechanism == "PLAIN":
            parts = response.split(b"\x00")
            if len(parts) == 3:
                self._claimed = parts[1][:256].decode("utf-8", "replace")
        elif self.mechanism == "LOGIN":
            self._claimed = response[:256].decode("utf-8", "replace")

    def _outcome(self, fields: list[str]) -> Outcome:
        verb = fields[0]
        if verb == "CONT":
            try:
                data = base64.b64decode(fields[2] if len(fields) > 2 else "", validate=True)
            except (binascii.Error, ValueError):
                self.cancel()
                return Failure(self._claimed, True, "Dovecot sent bad base64")
            return Challenge(data)
        params = parse_params(fields[2:])
        user = params.get("user") or self._claimed
        if verb == "OK":
            if not user:
                return self._finish(Failure(None, True, "Dovecot named no user"))
            return self._finish(Success(user))
        temporary = "temp" in params or params.get("code") == "temp_fail"
        reason = params.get("reason")
        text = f"dovecot: {_printable(reason)}" if reason else "authentication failure"
        return self._finish(Failure(user, temporary, text))
