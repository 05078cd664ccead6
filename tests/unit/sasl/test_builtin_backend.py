"""The built-in back-end over a real passwd file: PLAIN, LOGIN, SCRAM, timing, logs."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ironpost.sasl.backend import Challenge, ClientMeta, Failure, Outcome, SaslBackend, Success
from ironpost.sasl.builtin import BuiltinBackend
from ironpost.sasl.hashes import hash_password, scram_credentials
from ironpost.sasl.passwd import PasswdFile

SHA512 = (
    "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcb"
    "YEdFCoEOfaS35inz1"
)  # "Hello world!"
ALICE_PW = "alice-Secret-1"
CLIENT = ClientMeta("192.0.2.1", tls=True)
PASSWORDS = (ALICE_PW, "Hello world!", "wrong-Guess-9", "md5-Secret-2")

_ALICE_LINE = (
    f"alice@example.org:{hash_password(ALICE_PW)}::::::scram={scram_credentials(ALICE_PW)}\n"
)


@pytest.fixture
def logged() -> Iterator[list[str]]:
    lines: list[str] = []
    yield lines
    # Whatever a test did, no password and no hash reached the log.
    for line in lines:
        for secret in (*PASSWORDS, "$argon2id$", "$6$", "SCRAM-SHA-256}"):
            assert secret not in line


def make_backend(path: Path, text: str, logged: list[str]) -> BuiltinBackend:
    path.write_text(text)
    return BuiltinBackend(PasswdFile(path), log_warning=logged.append)


@pytest.fixture
def backend(tmp_path: Path, logged: list[str]) -> BuiltinBackend:
    return make_backend(
        tmp_path / "passwd",
        _ALICE_LINE
        + f"bob:{{SHA512-CRYPT}}{SHA512}:1000:1000::/home/bob\n"
        + "carol:{MD5}$1$abc$md5-Secret-2\n",
        logged,
    )


async def converse(backend: SaslBackend, mech: str, *lines: bytes | None) -> list[Outcome]:
    exchange = backend.begin(mech, CLIENT)
    return [await exchange.step(line) for line in lines]


def run(coro: object) -> list[Outcome]:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_is_a_sasl_backend(backend: BuiltinBackend) -> None:
    b: SaslBackend = backend
    assert b.name == "ironpost"


def test_plain_success_with_argon2id(backend: BuiltinBackend) -> None:
    [out] = run(converse(backend, "PLAIN", f"\0alice@EXAMPLE.org\0{ALICE_PW}".encode()))
    assert out == Success("alice@example.org")


def test_plain_success_with_sha512_crypt_and_no_initial_response(backend: BuiltinBackend) -> None:
    outs = run(converse(backend, "PLAIN", None, b"\0bob\0Hello world!"))
    assert outs == [Challenge(b""), Success("bob")]


def test_plain_wrong_password_and_unknown_user_look_alike(backend: BuiltinBackend) -> None:
    [wrong] = run(converse(backend, "PLAIN", b"\0alice@example.org\0wrong-Guess-9"))
    [unknown] = run(converse(backend, "PLAIN", b"\0mallory\0wrong-Guess-9"))
    assert wrong == Failure("alice@example.org")
    assert unknown == Failure("mallory")
    assert wrong.reason == unknown.reason and not wrong.temporary


def test_unknown_user_costs_an_argon2id_verify(backend: BuiltinBackend) -> None:
    run(converse(backend, "PLAIN", b"\0mallory\0x"))  # warm-up: the dummy hash is made once

    async def timed(user: str) -> float:
        t0 = time.perf_counter()
        await converse(backend, "PLAIN", f"\0{user}\0wrong-Guess-9".encode())
        return time.perf_counter() - t0

    known = asyncio.run(timed("alice@example.org"))
    unknown = asyncio.run(timed("mallory"))
    assert unknown > known / 3


def test_unsupported_scheme_is_logged_without_the_hash(
    backend: BuiltinBackend, logged: list[str]
) -> None:
    [out] = run(converse(backend, "PLAIN", b"\0carol\0md5-Secret-2"))
    assert out == Failure("carol")
    assert len(logged) == 1
    assert "unsupported password scheme MD5" in logged[0] and "carol" in logged[0]


def test_login_flow(backend: BuiltinBackend) -> None:
    outs = run(converse(backend, "LOGIN", None, b"alice@example.org", ALICE_PW.encode()))
    assert outs == [Challenge(b"Username:"), Challenge(b"Password:"), Success("alice@example.org")]
    outs = run(converse(backend, "login", b"bob", b"nope"))
    assert outs == [Challenge(b"Password:"), Failure("bob")]


def test_unknown_mechanism_fails(backend: BuiltinBackend) -> None:
    [out] = run(converse(backend, "CRAM-MD5", b""))
    assert isinstance(out, Failure)


def test_cancel_ends_the_exchange(backend: BuiltinBackend) -> None:
    async def go() -> Outcome:
        exchange = backend.begin("LOGIN", CLIENT)
        await exchange.step(None)
        exchange.cancel()
        return await exchange.step(b"alice@example.org")

    assert isinstance(asyncio.run(go()), Failure)


def test_verification_does_not_block_the_event_loop(backend: BuiltinBackend) -> None:
    async def go() -> int:
        ticks = 0
        done = False

        async def ticker() -> None:
            nonlocal ticks
            while not done:
                ticks += 1
                await asyncio.sleep(0.005)

        task = asyncio.create_task(ticker())
        await converse(backend, "PLAIN", f"\0alice@example.org\0{ALICE_PW}".encode())
        done = True
        await task
        return ticks

    assert asyncio.run(go()) >= 3  # an argon2id verify takes tens of ms


def test_unreadable_file_is_a_temporary_failure(tmp_path: Path, logged: list[str]) -> None:
    path = tmp_path / "passwd"
    path.mkdir()
    backend = BuiltinBackend(PasswdFile(path), log_warning=logged.append)
    [out] = run(converse(backend, "PLAIN", b"\0alice\0wrong-Guess-9"))
    assert out == Failure("alice", temporary=True, reason="passwd file unavailable")
    assert backend.mechanisms() == ("PLAIN", "LOGIN")
    assert logged and "cannot read" in logged[0]


# -- mechanisms offered -----------------------------------------------------------------


def test_scram_is_offered_first_only_when_every_user_has_it(
    tmp_path: Path, logged: list[str]
) -> None:
    path = tmp_path / "passwd"
    assert make_backend(path, "", logged).mechanisms() == ("PLAIN", "LOGIN")
    assert make_backend(path, _ALICE_LINE, logged).mechanisms() == (
        "SCRAM-SHA-256",
        "PLAIN",
        "LOGIN",
    )
    backend = make_backend(path, _ALICE_LINE + "bob:{PLAIN}x\n", logged)
    assert backend.mechanisms() == ("PLAIN", "LOGIN")
    missing = BuiltinBackend(PasswdFile(tmp_path / "none"))
    assert missing.mechanisms() == ("PLAIN", "LOGIN")


# -- SCRAM ------------------------------------------------------------------------------


async def scram_login(backend: SaslBackend, user: str, password: str) -> tuple[Outcome, bytes]:
    """A SCRAM-SHA-256 client: returns the outcome and the server signature it expects."""
    exchange = backend.begin("SCRAM-SHA-256", CLIENT)
    bare = f"n={user},r=fyko+d2lbbFgONRv9qkxdawL"
    challenge = await exchange.step(f"n,,{bare}".encode())
    assert isinstance(challenge, Challenge)
    server_first = challenge.data.decode()
    attrs = dict(a.split("=", 1) for a in server_first.split(","))
    salted = hashlib.pbkdf2_hmac(
        "sha256", password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"])
    )
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    without_proof = f"c=biws,r={attrs['r']}"
    auth_message = f"{bare},{server_first},{without_proof}".encode()
    signature = hmac.digest(hashlib.sha256(client_key).digest(), auth_message, "sha256")
    proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, signature, strict=True)))
    out = await exchange.step(f"{without_proof},p={proof.decode()}".encode())
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    return out, b"v=" + base64.b64encode(hmac.digest(server_key, auth_message, "sha256"))


def test_scram_success(backend: BuiltinBackend) -> None:
    out, expected = asyncio.run(scram_login(backend, "alice@example.org", ALICE_PW))
    assert out == Success("alice@example.org", final=expected)


def test_scram_wrong_password(backend: BuiltinBackend) -> None:
    out, _ = asyncio.run(scram_login(backend, "alice@example.org", "wrong-Guess-9"))
    assert out == Failure("alice@example.org", reason="authentication failure")


def test_scram_unknown_user_gets_a_stable_fake_salt(backend: BuiltinBackend) -> None:
    async def first(user: str) -> bytes:
        out = await backend.begin("SCRAM-SHA-256", CLIENT).step(f"n,,n={user},r=abc".encode())
        assert isinstance(out, Challenge)
        return out.data.split(b",")[1]

    async def go() -> tuple[bytes, ...]:
        return (await first("mallory"), await first("mallory"), await first("eve"))

    mallory1, mallory2, eve = asyncio.run(go())
    assert mallory1 == mallory2 != eve
    assert len(base64.b64decode(mallory1[2:])) == 16  # looks like a real salt
    out, _ = asyncio.run(scram_login(backend, "mallory", "wrong-Guess-9"))
    assert out == Failure("mallory", reason="authentication failure")
    # bob has no SCRAM credentials: his correct password still fails, at the proof.
    out, _ = asyncio.run(scram_login(backend, "bob", "Hello world!"))
    assert out == Failure("bob", reason="authentication failure")


def test_close_is_harmless(backend: BuiltinBackend) -> None:
    asyncio.run(backend.close())
