"""Server side of the SASL mechanisms PLAIN, LOGIN and SCRAM-SHA-256, sans I/O.

Owns the wire format of each mechanism's messages (raw bytes; base64 is the server's
business) and the SCRAM state. A mechanism never looks credentials up itself: each
``step`` returns a :class:`~ironpost.sasl.backend.Challenge` or
:class:`~ironpost.sasl.backend.Failure`, or a request for the back-end:

* :class:`CheckPassword` (PLAIN, LOGIN): verify this password, then succeed as
  ``authzid`` or fail as ``authcid``;
* :class:`NeedCredentials` (SCRAM): fetch this user's SCRAM credentials (real or, for an
  unknown user, a stable fake) and pass them to :meth:`ScramServer.credentials`, which
  returns the server-first challenge.

Invariants: no exception escapes ``step`` for any client input; a Failure's reason never
quotes client data; a password lives only in :class:`CheckPassword` (hidden from repr);
after a Success or a Failure every further step fails.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from ironpost.sasl.backend import Challenge, Failure, Success
from ironpost.sasl.hashes import ScramCredentials

MAX_FIELD = 1024  # bytes per identity or password: RFC 4616 asks for 255 at least


@dataclass(frozen=True, slots=True)
class CheckPassword:
    """Verify ``password`` for ``authcid``; on success the identity is ``authzid``."""

    authcid: str
    password: str = field(repr=False)
    authzid: str


@dataclass(frozen=True, slots=True)
class NeedCredentials:
    """Fetch SCRAM credentials for ``username`` and call ``ScramServer.credentials``."""

    username: str


Step = Challenge | Failure | Success | CheckPassword | NeedCredentials


def _same(a: str, b: str) -> bool:
    return a == b


class _Done:
    def __init__(self) -> None:
        self.done = False

    def finished(self) -> Failure:
        return Failure(reason="exchange already finished")


class PlainServer(_Done):
    """RFC 4616: ``[authzid] NUL authcid NUL passwd``, UTF-8. An authzid other than the
    authcid is refused (``same_identity`` decides what "other" means)."""

    def __init__(self, *, same_identity: Callable[[str, str], bool] = _same) -> None:
        super().__init__()
        self._same = same_identity
        self._asked = False

    def step(self, response: bytes | None) -> Step:
        if self.done:
            return self.finished()
        if response is None and not self._asked:
            self._asked = True
            return Challenge(b"")
        self.done = True
        parts = (response or b"").split(b"\0")
        if len(parts) != 3:
            return Failure(reason="malformed PLAIN response: expected exactly two NULs")
        if any(len(p) > MAX_FIELD for p in parts):
            return Failure(reason="PLAIN field too long")
        try:
            authzid, authcid, password = (p.decode("utf-8") for p in parts)
        except UnicodeDecodeError:
            return Failure(reason="PLAIN response is not UTF-8")
        if not authcid or not password:
            return Failure(authcid or None, reason="empty PLAIN identity or password")
        if authzid and not self._same(authzid, authcid):
            return Failure(authcid, reason="authorization identity differs from login")
        return CheckPassword(authcid, password, authzid or authcid)


class LoginServer(_Done):
    """The LOGIN mechanism (draft-murchison-sasl-login): "Username:", then "Password:".
    An initial response is taken as the user name, as clients send it."""

    def __init__(self) -> None:
        super().__init__()
        self._state = "start"
        self._user = ""

    def step(self, response: bytes | None) -> Step:
        if self.done:
            return self.finished()
        if self._state == "start" and response is None:
            self._state = "user"
            return Challenge(b"Username:")
        if self._state in ("start", "user"):
            return self._take_user(response or b"")
        self.done = True
        password_bytes = response or b""
        if len(password_bytes) > MAX_FIELD:
            return Failure(self._user, reason="LOGIN password too long")
        try:
            password = password_bytes.decode("utf-8")
        except UnicodeDecodeError:
            return Failure(self._user, reason="LOGIN password is not UTF-8")
        if not password:
            return Failure(self._user, reason="empty LOGIN password")
        return CheckPassword(self._user, password, self._user)

    def _take_user(self, response: bytes) -> Step:
        if len(response) > MAX_FIELD or b"\0" in response:
            self.done = True
            return Failure(reason="malformed LOGIN user name")
        try:
            self._user = response.decode("utf-8")
        except UnicodeDecodeError:
            self.done = True
            return Failure(reason="LOGIN user name is not UTF-8")
        if not self._user:
            self.done = True
            return Failure(reason="empty LOGIN user name")
        self._state = "password"
        return Challenge(b"Password:")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _nonce() -> str:
    return secrets.token_urlsafe(24)  # base64url: printable, never ','


def _decode_saslname(text: str) -> str | None:
    # RFC 5802: ',' travels as '=2C' and '=' as '=3D'; any other '=' is malformed.
    out = text.replace("=2C", ",").replace("=3D", "=")
    if "=" in text.replace("=2C", "").replace("=3D", ""):
        return None
    return out


class ScramServer(_Done):
    """SCRAM-SHA-256 (RFC 5802, RFC 7677) without channel binding.

    The client's gs2 header must be ``n,,`` or ``y,,`` (``y``: the client could bind but
    thinks we cannot, which is true); ``p=`` fails. An authzid (``n,a=…,``) is accepted
    only when ``same_identity`` says it is the login itself.
    """

    def __init__(
        self,
        *,
        nonce: Callable[[], str] = _nonce,
        same_identity: Callable[[str, str], bool] = _same,
    ) -> None:
        super().__init__()
        self._make_nonce = nonce
        self._same = same_identity
        self._state = "first"
        self.username: str | None = None
        self._gs2 = b""
        self._client_first_bare = ""
        self._nonce = ""
        self._server_first = ""
        self._creds: ScramCredentials | None = None

    def _fail(self, reason: str) -> Failure:
        self.done = True
        self._creds = None
        return Failure(self.username, reason=reason)

    def step(self, response: bytes | None) -> Step:
        if self.done:
            return self.finished()
        if self._state == "first":
            if response is None:
                self._state = "first-asked"
                return Challenge(b"")
            return self._client_first(response)
        if self._state == "first-asked":
            return self._client_first(response or b"")
        if self._state == "final":
            return self._client_final(response or b"")
        return self._fail("SCRAM step out of order")

    def _client_first(self, data: bytes) -> Step:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return self._fail("SCRAM client-first is not UTF-8")
        parts = text.split(",", 2)
        if len(parts) != 3:
            return self._fail("malformed SCRAM client-first")
        cbind, authzid_attr, bare = parts
        if cbind.startswith("p="):
            return self._fail("SCRAM channel binding not supported")
        if cbind not in ("n", "y"):
            return self._fail("malformed SCRAM gs2 header")
        attrs = bare.split(",")
        if len(attrs) < 2 or not attrs[0].startswith("n=") or not attrs[1].startswith("r="):
            return self._fail("malformed SCRAM client-first")  # includes m= extensions
        username = _decode_saslname(attrs[0][2:])
        if not username:
            return self._fail("malformed SCRAM user name")
        self.username = username
        if authzid_attr:
            authzid = _decode_saslname(authzid_attr[2:]) if authzid_attr[:2] == "a=" else None
            if authzid is None:
                return self._fail("malformed SCRAM gs2 header")
            if not self._same(authzid, username):
                return self._fail("authorization identity differs from login")
        client_nonce = attrs[1][2:]
        if not client_nonce or not all("!" <= c <= "~" and c != "," for c in client_nonce):
            return self._fail("malformed SCRAM nonce")
        self._gs2 = f"{cbind},{authzid_attr},".encode()
        self._client_first_bare = bare
        self._nonce = client_nonce + self._make_nonce()
        self._state = "credentials"
        return NeedCredentials(username)

    def credentials(self, creds: ScramCredentials) -> Step:
        """The back-end's answer to :class:`NeedCredentials`: returns server-first."""
        if self._state != "credentials" or self.done:
            return self._fail("SCRAM step out of order")
        self._creds = creds
        self._server_first = f"r={self._nonce},s={_b64(creds.salt)},i={creds.iterations}"
        self._state = "final"
        return Challenge(self._server_first.encode())

    def _client_final(self, data: bytes) -> Step:
        creds = self._creds
        assert creds is not None  # set before the "final" state
        self.done = True
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError:
            return self._fail("SCRAM client-final is not ASCII")
        without_proof, sep, proof_b64 = text.rpartition(",p=")
        attrs = without_proof.split(",")
        if not sep or len(attrs) < 2 or not attrs[0].startswith("c=") or attrs[1][:2] != "r=":
            return self._fail("malformed SCRAM client-final")
        if attrs[0][2:] != _b64(self._gs2):
            return self._fail("SCRAM channel-binding data does not match")
        if not hmac.compare_digest(attrs[1][2:].encode(), self._nonce.encode()):
            return self._fail("SCRAM nonce mismatch")
        try:
            proof = base64.b64decode(proof_b64, validate=True)
        except (binascii.Error, ValueError):
            return self._fail("malformed SCRAM proof")
        if len(proof) != 32:
            return self._fail("malformed SCRAM proof")
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        signature = hmac.digest(creds.stored_key, auth_message, "sha256")
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        if not hmac.compare_digest(hashlib.sha256(client_key).digest(), creds.stored_key):
            return self._fail("authentication failure")
        server_signature = hmac.digest(creds.server_key, auth_message, "sha256")
        username = self.username or ""
        self._creds = None
        return Success(username, final=b"v=" + _b64(server_signature).encode())
