"""The built-in SASL back-end (``smtpd_sasl_type = ironpost``): a passwd file.

Owns the glue between the sans-I/O mechanisms and the credentials: it answers their
:class:`~ironpost.sasl.mechanisms.CheckPassword` and
:class:`~ironpost.sasl.mechanisms.NeedCredentials` requests from a
:class:`~ironpost.sasl.passwd.PasswdFile`.

Invariants:

* password verification (argon2id: tens of ms of CPU) and file reads run in a small
  dedicated thread pool, never on the event loop; the pool's size also bounds the CPU
  and memory a flood of AUTH attempts can take;
* an unknown user costs one argon2id verify (:func:`~ironpost.sasl.hashes.dummy_verify`),
  as a known one with an argon2id hash does, and fails with the same reason. (A user
  whose hash is an older, cheaper scheme answers faster: rehash with ``ironpost passwd
  set`` to close that gap.);
* SCRAM for an unknown user, or one without SCRAM credentials, runs on fake credentials
  whose salt is an HMAC of a per-process secret and the name: stable across attempts and
  indistinguishable from a real salt, so the exchange only fails at the proof;
* a passwd file that exists but cannot be read gives ``Failure(temporary=True)``;
* a successful login is reported under the file's spelling of the name (domain part in
  lower case; see :func:`~ironpost.sasl.passwd.canonical_user`);
* warnings never carry a password or a hash, only user names and scheme names.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from ironpost.sasl import hashes
from ironpost.sasl.backend import ClientMeta, Failure, Outcome, Success
from ironpost.sasl.mechanisms import (
    CheckPassword,
    LoginServer,
    NeedCredentials,
    PlainServer,
    ScramServer,
)
from ironpost.sasl.passwd import PasswdError, PasswdFile, canonical_user

_T = TypeVar("_T")
_PROCESS_SECRET = os.urandom(32)  # for fake SCRAM salts; per process, never stored
SCRAM = "SCRAM-SHA-256"
BASE_MECHANISMS = ("PLAIN", "LOGIN")


def _same_identity(a: str, b: str) -> bool:
    return canonical_user(a) == canonical_user(b)


def _ignore(message: str) -> None:
    pass


class BuiltinBackend:
    """A :class:`~ironpost.sasl.backend.SaslBackend` over a passwd file."""

    name = "ironpost"

    def __init__(
        self,
        passwd: PasswdFile,
        *,
        log_warning: Callable[[str], None] | None = None,
        workers: int = 2,
    ) -> None:
        self.passwd = passwd
        self.warn = log_warning or _ignore
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ironpost-sasl")

    def mechanisms(self) -> tuple[str, ...]:
        try:
            scram = self.passwd.all_scram()
        except PasswdError:
            scram = False
        return (SCRAM, *BASE_MECHANISMS) if scram else BASE_MECHANISMS

    def begin(self, mechanism: str, client: ClientMeta) -> _Exchange:
        name = mechanism.upper()
        mech: PlainServer | LoginServer | ScramServer | None
        if name == "PLAIN":
            mech = PlainServer(same_identity=_same_identity)
        elif name == "LOGIN":
            mech = LoginServer()
        elif name == SCRAM:
            # Offered or not in EHLO: the file may have changed since, and a user
            # without credentials simply fails at the proof.
            mech = ScramServer(same_identity=_same_identity)
        else:
            mech = None
        return _Exchange(self, mech)

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- the work done in the pool ------------------------------------------------------

    async def run(self, func: Callable[..., _T], *args: object) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, func, *args)

    def check_password(self, user: str, password: str) -> bool:
        """Blocking: whether ``password`` is ``user``'s. Raises PasswdError."""
        entry = self.passwd.lookup(user)
        if entry is None:
            hashes.dummy_verify(password)
            return False
        if not hashes.is_supported(entry.password):
            self.warn(
                f"{self.passwd.path}:{entry.line}: user {entry.user}: unsupported password "
                f"scheme {hashes.scheme_name(entry.password)}"
            )
            hashes.dummy_verify(password)
            return False
        return hashes.verify(entry.password, password)

    def scram_for(self, user: str) -> hashes.ScramCredentials:
        """Blocking: ``user``'s SCRAM credentials, or stable fake ones. Raises PasswdError."""
        entry = self.passwd.lookup(user)
        if entry is not None and entry.scram is not None:
            try:
                return hashes.parse_scram(entry.scram)
            except ValueError:
                pass  # already reported when the file was read
        key = canonical_user(user).encode("utf-8", "surrogatepass")

        def derive(label: bytes) -> bytes:
            return hmac.digest(_PROCESS_SECRET, label + b"\0" + key, hashlib.sha256)

        return hashes.ScramCredentials(
            hashes.SCRAM_DEFAULT_ITERATIONS,
            derive(b"salt")[:16],
            derive(b"stored"),
            derive(b"server"),
        )


class _Exchange:
    """One AUTH conversation of the built-in back-end (a SaslExchange)."""

    def __init__(
        self, backend: BuiltinBackend, mech: PlainServer | LoginServer | ScramServer | None
    ) -> None:
        self._backend = backend
        self._mech = mech

    async def step(self, response: bytes | None) -> Outcome:
        mech = self._mech
        if mech is None:
            return Failure(reason="unsupported mechanism or exchange cancelled")
        out = mech.step(response)
        if isinstance(out, CheckPassword):
            return await self._check(out)
        if isinstance(out, NeedCredentials):
            assert isinstance(mech, ScramServer)  # the only mechanism that asks
            try:
                creds = await self._backend.run(self._backend.scram_for, out.username)
            except PasswdError as exc:
                self._backend.warn(str(exc))
                return Failure(out.username, temporary=True, reason="passwd file unavailable")
            if self._mech is None:
                return Failure(out.username, reason="exchange cancelled")
            out = mech.credentials(creds)
        if isinstance(out, Success):
            return Success(canonical_user(out.username), out.final)
        assert not isinstance(out, CheckPassword | NeedCredentials)
        return out

    async def _check(self, request: CheckPassword) -> Outcome:
        backend = self._backend
        try:
            ok = await backend.run(backend.check_password, request.authcid, request.password)
        except PasswdError as exc:
            backend.warn(str(exc))
            return Failure(request.authcid, temporary=True, reason="passwd file unavailable")
        if self._mech is None:
            return Failure(request.authcid, reason="exchange cancelled")
        if not ok:
            return Failure(request.authcid)
        return Success(canonical_user(request.authzid))

    def cancel(self) -> None:
        self._mech = None  # drops the SCRAM state; a pending verify's result is ignored
