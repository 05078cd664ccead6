"""Client SMTP AUTH for the smtp and lmtp delivery agents (Postfix's ``smtp_sasl_*``).

Owns :class:`SaslOptions` (the parameters), the credential lookup for a server
(:func:`lookup_keys`, :func:`find_credentials`), the decision taken after EHLO
(:func:`decide`: skip AUTH, defer, or use a mechanism), the texts of a failed exchange
(:func:`failure`) and the client mechanisms PLAIN (RFC 4616), LOGIN and SCRAM-SHA-256
(RFC 5802, RFC 7677). The exchange itself is ``protocol.client``'s; this module is pure.

Invariants:

* a password is never in a repr, a log line, an exception or a :class:`SaslError`;
* the password maps are searched as Postfix does without
  ``smtp_sender_dependent_authentication``: the server's host name, then the next hop as
  written (``[host]:port``, ``[host]``, ``domain``), then the next-hop domain; each key in
  every map before the next key;
* no credentials, or no AUTH in the server's EHLO: the mail goes without AUTH, as Postfix;
  credentials but no mechanism allowed by ``smtp_sasl_mechanism_filter`` and the security
  options (``smtp_sasl_tls_security_options`` on a TLS session): deferred 4.7.0, never
  sent unauthenticated to a server we hold credentials for;
* ``noplaintext`` (the default) keeps PLAIN and LOGIN off a session without TLS; on a TLS
  session ``smtp_sasl_tls_security_options`` apply, minus ``noplaintext`` (as Cyrus SASL
  drops it when an external security layer is present, so that Postfix's defaults work).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ironpost.protocol.client_sasl import SaslError, SaslMechanism
from ironpost.protocol.replies import Reply

if TYPE_CHECKING:
    from ironpost.config.settings import Settings
    from ironpost.config.tables import LookupTable

#: Postfix's security option words (Cyrus SASL's properties).
SECURITY_OPTIONS = frozenset(
    {"noplaintext", "noactive", "nodictionary", "noanonymous", "mutual_auth", "forward_secrecy"}
)
DEFAULT_SECURITY_OPTIONS = frozenset({"noplaintext", "noanonymous"})

#: AUTH replies without an enhanced code get the security class (X.7.0), as a 535 means.
_AUTH_DSN = "{}.7.0"


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    password: str = field(repr=False)

    @classmethod
    def parse(cls, value: str) -> Credentials:
        """``username:password`` (split at the first colon; no colon: empty password)."""
        username, _, password = value.partition(":")
        return cls(username, password)


@dataclass(frozen=True, slots=True)
class SaslOptions:
    """The ``smtp_sasl_*`` (or ``lmtp_sasl_*``) parameters, parsed."""

    enable: bool = False
    password_maps: tuple[LookupTable, ...] = ()
    security_options: frozenset[str] = DEFAULT_SECURITY_OPTIONS
    tls_security_options: frozenset[str] = DEFAULT_SECURITY_OPTIONS
    mechanism_filter: tuple[str, ...] = ()
    soft_bounce: bool = True

    @classmethod
    def from_settings(cls, s: Settings, prefix: str = "smtp") -> SaslOptions:
        """Raises ValueError naming the parameter for an unknown option or filter word."""
        p = f"{prefix}_sasl_"
        return cls(
            enable=s.boolean(p + "auth_enable"),
            password_maps=s.tables(p + "password_maps"),
            security_options=parse_security_options(
                p + "security_options", s.words(p + "security_options")
            ),
            tls_security_options=parse_security_options(
                p + "tls_security_options", s.words(p + "tls_security_options")
            ),
            mechanism_filter=parse_mechanism_filter(
                p + "mechanism_filter", s.words(p + "mechanism_filter")
            ),
            soft_bounce=s.boolean(p + "auth_soft_bounce"),
        )


def parse_security_options(param: str, words: Iterable[str]) -> frozenset[str]:
    found = frozenset(w.lower() for w in words)
    unknown = sorted(found - SECURITY_OPTIONS)
    if unknown:
        raise ValueError(f"{param}: unknown option {unknown[0]!r}")
    return found


def parse_mechanism_filter(param: str, words: Iterable[str]) -> tuple[str, ...]:
    """Mechanism names, ``!name`` to exclude. Postfix's ``/file`` and ``type:table`` forms
    are refused rather than silently matching nothing."""
    out = []
    for word in words:
        name = word.removeprefix("!")
        if not name or "/" in name or ":" in name:
            raise ValueError(f"{param}: {word!r}: only mechanism names and !names are supported")
        out.append(("!" if word.startswith("!") else "") + name.upper())
    return tuple(out)


def filter_mechanisms(offered: Iterable[str], pattern: tuple[str, ...]) -> tuple[str, ...]:
    """The offered mechanisms that ``pattern`` matches (first match wins; empty: all)."""
    if not pattern:
        return tuple(offered)
    kept = []
    for mech in offered:
        for word in pattern:
            if word.removeprefix("!") == mech:
                if not word.startswith("!"):
                    kept.append(mech)
                break
    return tuple(kept)


# --- credentials ------------------------------------------------------------------


def lookup_keys(host: str, nexthop: str, domain: str) -> tuple[str, ...]:
    """The password-map keys for a server, in Postfix's order, without repeats.

    ``host``: the server's name (MX host, or the relayhost's host); ``nexthop``: the next
    hop as written (``[smtp.example]:587``); ``domain``: the next-hop domain.
    """
    keys: list[str] = []
    for key in (host, nexthop, domain):
        key = key.strip()
        if key and key not in keys:
            keys.append(key)
    return tuple(keys)


def find_credentials(maps: tuple[LookupTable, ...], keys: Iterable[str]) -> Credentials | None:
    for key in keys:
        for table in maps:
            value = table.lookup(key)
            if value is not None:
                return Credentials.parse(value)
    return None


# --- the decision after EHLO --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Skip:
    """Send the mail without AUTH. ``warning``: a line to log first, if any."""

    warning: str | None = None


@dataclass(frozen=True, slots=True)
class Defer:
    """Do not send: the recipients get ``dsn`` and ``text`` (the next MX may be tried)."""

    text: str
    dsn: str = "4.7.0"
    warning: str | None = None


@dataclass(frozen=True, slots=True)
class Use:
    mechanism: SaslMechanism
    warning: str | None = None


AuthDecision = Skip | Defer | Use


def decide(
    options: SaslOptions,
    offered: tuple[str, ...],
    *,
    tls: bool,
    keys: Iterable[str],
    peer: str,
    relay: str,
) -> AuthDecision:
    """What to do after the (last) EHLO: Postfix's smtp_sasl_helo_auth and _helo_login.

    ``peer`` is ``host[addr]`` and ``relay`` ``host[addr]:port``, as in Postfix's texts.
    """
    if not options.enable or not offered:
        return Skip()
    usable = filter_mechanisms(offered, options.mechanism_filter)
    warning = None
    if not usable:
        warning = f"warning: {relay} offered no supported AUTH mechanisms: '{' '.join(offered)}'"
    creds = find_credentials(options.password_maps, keys)
    if creds is None:
        return Skip(warning)  # strangers: Postfix talks to the server without AUTH
    if not usable:
        return Defer(
            f"SASL authentication failed: server {peer} offered no compatible "
            "authentication mechanisms for this type of connection security",
            warning=warning,
        )
    required = options.security_options
    if tls:
        # As Cyrus SASL (which Postfix uses): a TLS layer makes PLAIN and LOGIN safe to
        # send, so noplaintext no longer excludes them; the other words still apply.
        required = options.tls_security_options - {"noplaintext"}
    for name, (factory, properties) in MECHANISMS.items():
        if name in usable and required <= properties:
            return Use(factory(creds), warning)
    return Defer(
        f"SASL authentication failed; cannot authenticate to server {peer}: no mechanism available"
    )


def failure(
    reply: Reply, auth_error: str | None, *, peer: str, soft_bounce: bool
) -> tuple[str, str, bool]:
    """(dsn, text, bounce) for an AUTH exchange that did not end in 2xx."""
    if auth_error is not None:
        text = f"SASL authentication failed; cannot authenticate to server {peer}: {auth_error}"
        return "4.7.0", text, False
    dsn = reply.enhanced or _AUTH_DSN.format(min(max(reply.code // 100, 4), 5))
    permanent = reply.code >= 500
    if permanent and soft_bounce:
        dsn = "4" + dsn[1:]
    said = " ".join(line for line in reply.lines if line)
    prefix = f"{reply.enhanced} " if reply.enhanced else ""
    text = f"SASL authentication failed; server {peer} said: {reply.code} {prefix}{said}"
    return dsn, text.rstrip(), permanent and not soft_bounce


# --- mechanisms ---------------------------------------------------------------------


class Plain:
    """RFC 4616, with the initial response and an empty authorization identity."""

    name = "PLAIN"

    def __init__(self, creds: Credentials) -> None:
        self._creds = creds

    def __repr__(self) -> str:
        return "Plain()"

    def initial(self) -> bytes | None:
        c = self._creds
        return b"\0" + c.username.encode() + b"\0" + c.password.encode()

    def step(self, challenge: bytes) -> bytes:
        if challenge:
            raise SaslError("unexpected PLAIN challenge")
        return self.initial() or b""  # a server that ignored the initial response


class Login:
    """The LOGIN mechanism: the user name, then the password, whatever the prompts say."""

    name = "LOGIN"

    def __init__(self, creds: Credentials) -> None:
        self._creds = creds
        self._steps = 0

    def __repr__(self) -> str:
        return "Login()"

    def initial(self) -> bytes | None:
        return None

    def step(self, challenge: bytes) -> bytes:
        self._steps += 1
        if self._steps == 1:
            return self._creds.username.encode()
        if self._steps == 2:
            return self._creds.password.encode()
        raise SaslError("unexpected LOGIN challenge")


#: A server cannot make us spend more than this in PBKDF2 (it blocks the event loop).
SCRAM_MAX_ITERATIONS = 65536


class ScramSha256:
    """RFC 5802/7677 without channel binding (``n,,``). The server signature is checked
    when the server sends it. Passwords are used as UTF-8 without SASLprep."""

    name = "SCRAM-SHA-256"

    def __init__(self, creds: Credentials, nonce: str | None = None) -> None:
        self._creds = creds
        self._nonce = nonce or secrets.token_urlsafe(18)
        user = creds.username.replace("=", "=3D").replace(",", "=2C")
        self._first_bare = f"n={user},r={self._nonce}"
        self._server_signature: bytes | None = None
        self._done = False

    def __repr__(self) -> str:
        return "ScramSha256()"

    def initial(self) -> bytes | None:
        return ("n,," + self._first_bare).encode()

    def step(self, challenge: bytes) -> bytes:
        if self._done:
            raise SaslError("unexpected SCRAM challenge")
        try:
            text = challenge.decode("utf-8")
        except UnicodeDecodeError:
            raise SaslError("malformed SCRAM challenge") from None
        attrs = dict(a.partition("=")[::2] for a in text.split(","))
        if "m" in attrs:
            raise SaslError("unsupported SCRAM extension")
        if self._server_signature is None:
            return self._client_final(text, attrs)
        self._done = True
        if "e" in attrs:
            raise SaslError(f"server error {attrs['e'][:64]!r}")
        try:
            signature = base64.b64decode(attrs.get("v", ""), validate=True)
        except ValueError:
            raise SaslError("malformed SCRAM server signature") from None
        if not hmac.compare_digest(signature, self._server_signature):
            raise SaslError("SCRAM server signature mismatch")
        return b""

    def _client_final(self, server_first: str, attrs: dict[str, str]) -> bytes:
        nonce, salt_b64, count = attrs.get("r", ""), attrs.get("s", ""), attrs.get("i", "")
        if not nonce.startswith(self._nonce) or len(nonce) == len(self._nonce):
            raise SaslError("bad SCRAM nonce")
        if not count.isdigit() or not 1 <= int(count) <= SCRAM_MAX_ITERATIONS:
            raise SaslError("bad SCRAM iteration count")
        try:
            salt = base64.b64decode(salt_b64, validate=True)
        except ValueError:
            raise SaslError("malformed SCRAM salt") from None
        salted = hashlib.pbkdf2_hmac("sha256", self._creds.password.encode(), salt, int(count))
        client_key = _hmac(salted, b"Client Key")
        without_proof = f"c=biws,r={nonce}"
        auth_message = f"{self._first_bare},{server_first},{without_proof}".encode()
        signature = _hmac(hashlib.sha256(client_key).digest(), auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        self._server_signature = _hmac(_hmac(salted, b"Server Key"), auth_message)
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


#: Our mechanisms, best first, with the security properties each one satisfies. SCRAM
#: claims no mutual_auth: a server may end with 235 without sending its signature.
MECHANISMS: dict[str, tuple[Callable[[Credentials], SaslMechanism], frozenset[str]]] = {
    "SCRAM-SHA-256": (ScramSha256, frozenset({"noanonymous", "noplaintext"})),
    "PLAIN": (Plain, frozenset({"noanonymous"})),
    "LOGIN": (Login, frozenset({"noanonymous"})),
}
