"""The Dovecot SASL back-end against a real Dovecot auth server (dovecot_peer.py).

Also the back-end's pure helpers (tab-escaping, the AUTH line, MECH flags), which need
no Dovecot and run as plain unit tests.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from dovecot_peer import DovecotPeer
from hypothesis import given
from hypothesis import strategies as st

from ironpost.sasl.backend import Challenge, ClientMeta, Failure, Outcome, Success
from ironpost.sasl.dovecot import (
    FALLBACK_MECHANISMS,
    MAX_LINE,
    DovecotBackend,
    auth_line,
    parse_params,
    tab_escape,
    tab_unescape,
    usable_mechanism,
)

USERS = {"alice": "secret", "bob": "hunter2 with spaces"}
CLIENT = ClientMeta("127.0.0.9", "127.0.0.1", 587, 40000, tls=True)
T = TypeVar("T")


def plain(user: str, password: str) -> bytes:
    return f"\0{user}\0{password}".encode()


def run(body: Callable[[DovecotBackend], Awaitable[T]], path: str, warnings: list[str]) -> T:
    """Run ``body`` with a started back-end on a fresh event loop; close it afterwards."""

    async def main() -> T:
        backend = DovecotBackend(path, timeout=5.0, log_warning=warnings.append)
        await backend.start()
        try:
            return await body(backend)
        finally:
            await backend.close()

    return asyncio.run(main())


async def plain_login(backend: DovecotBackend, user: str, password: str) -> Outcome:
    return await backend.begin("PLAIN", CLIENT).step(plain(user, password))


def no_secrets(warnings: list[str], peer: DovecotPeer | None = None) -> None:
    secrets = [*USERS.values(), "wrong-password"]
    encoded = [base64.b64encode(plain(u, p)).decode() for u, p in USERS.items()]
    for text in warnings:
        assert not any(s in text for s in secrets + encoded), text


# -- against a real Dovecot --------------------------------------------------------------


def test_mechanisms_are_what_dovecot_announces(dovecot) -> None:  # type: ignore[no-untyped-def]
    peer = dovecot.start(USERS, mechanisms="login plain anonymous cram-md5 external")
    warnings: list[str] = []

    async def body(backend: DovecotBackend) -> tuple[str, ...]:
        return backend.mechanisms()

    # In auth_mechanisms order; ANONYMOUS and EXTERNAL are not offered.
    assert run(body, peer.auth_socket, warnings) == ("LOGIN", "PLAIN", "CRAM-MD5")
    assert warnings == []


def test_plain_with_initial_response(dovecot) -> None:  # type: ignore[no-untyped-def]
    peer = dovecot.start(USERS)
    warnings: list[str] = []

    async def body(backend: DovecotBackend) -> list[Outcome]:
        return [
            await plain_login(backend, "alice", "secret"),
            await plain_login(backend, "bob", "hunter2 with spaces"),
        ]

    assert run(body, peer.auth_socket, warnings) == [Success("alice"), Success("bob")]
    assert warnings == []


def test_plain_without_initial_response(dovecot) -> None:  # type: ignore[no-untyped-def]
    peer = dovecot.start(USERS)

    async def body(backend: DovecotBackend) -> list[Outcome]:
        exchange = backend.begin("PLAIN", CLIENT)
        return [await exchange.step(None), await exchange.step(plain("alice", "secret"))]

    assert run(body, peer.auth_socket, []) == [Challenge(b""), Success("alice")]


def test_login_takes_two_steps(dovecot) -> None:  # type: ignore[no-untyped-def]
    peer = dovecot.start(USERS)

    async def body(backend: DovecotBackend) -> list[Outcome]:
        exchange = backend.begin("login", CLIENT)  # the server may pass any case
        return [
            await exchange.step(None),
            await exchange.step(b"alice"),
            await exchange.step(b"secret"),
        ]

    assert run(body, peer.auth_socket, []) == [
        Challenge(b"Username:"),
        Challenge(b"Password:"),
        Success("alice"),
    ]


def test_login_with_the_user_name_as_initial_response(dovecot) -> None:  # type: ignore[no-untyped-def]
    peer = dovecot.start(USERS)

    async def body(backend: DovecotBackend) -> list[Outcome]:
        exchange = backend.begin("LOGIN", CLIENT)
        return [await exchange.step(b"bob"), await exchange.step(b"hunter2 with spaces")]

    assert run(body, peer.auth_socket, []) == [Challenge(b"Password:"), Success("bob")]


def test_wrong_password_and_unknown_user_fail_alike(dovecot) -> None:  # type: ignore[no-untyped-def]
    peer = dovecot.start(USERS)
    warnings: list[str] = []

    async def body(backend: DovecotBackend) -> list[Outcome]:
        login = backend.begin("LOGIN", CLIENT)
        await login.step(None)
        await login.step(b"alice")
        return [
            await plain_login(backend, "alice", "wrong-password"),
            await plain_login(backend, "nobody", "wrong-password"),
            await login.step(b"wrong-password"),
        ]

    wrong, unknown, wrong_login = run(body, peer.auth_socket, warnings)
    assert wrong == Failure("alice")
    assert unknown == Failure("nobody")
    assert wrong_login == Failure("alice")
    assert "Password mismatch" in peer.log and "unknown user" in peer.log
    no_secrets(warnings)


def test_dovecot_tempfail_is_temporary(dovecot) -> None:  # type: ignore[no-untyped-def]
    peer = dovecot.start(USERS, tempfail=True)

    async def body(backend: DovecotBackend) -> Outcome:
        return await plain_login(backend, "alice", "secret")

    outcome = run(body, peer.auth_socket, [])
    assert isinstance(outcome, Failure)
    assert outcome.temporary and outcome.username == "alice"


def test_over_inet(dovecot) -> None:  # type: ignore[no-untyped-def]
    peer = dovecot.start(USERS)

    async def body(backend: DovecotBackend) -> Outcome:
        return await plain_login(backend, "alice", "secret")

    assert run(body, peer.auth_inet, []) == Success("alice")


def test_dovecot_stopped_mid_exchange_then_restarted(dovecot) -> None:  # type: ignore[no-untyped-def]
    peer = dovecot.start(USERS)
    warnings: list[str] = []

    async def body(backend: DovecotBackend) -> list[Outcome]:
        loop = asyncio.get_running_loop()
        exchange = backend.begin("LOGIN", CLIENT)
        first = await exchange.step(None)
        await loop.run_in_executor(None, peer.stop)
        in_flight = await exchange.step(b"alice")
        while_down = await plain_login(backend, "alice", "secret")
        mechanisms_while_down = backend.mechanisms()  # the last list Dovecot gave
        await loop.run_in_executor(None, peer.start)
        after = await plain_login(backend, "alice", "secret")
        assert mechanisms_while_down == ("PLAIN", "LOGIN")
        return [first, in_flight, while_down, after]

    first, in_flight, while_down, after = run(body, peer.auth_socket, warnings)
    assert first == Challenge(b"Username:")
    assert isinstance(in_flight, Failure) and in_flight.temporary
    assert in_flight.username == "alice"
    assert isinstance(while_down, Failure) and while_down.temporary
    assert after == Success("alice")
    assert any("connection lost" in w for w in warnings)
    assert any("connected again" in w for w in warnings)
    no_secrets(warnings)


def test_dovecot_down_at_start_then_up(dovecot) -> None:  # type: ignore[no-untyped-def]
    peer = DovecotPeer(USERS, mechanisms="login plain")  # not started yet
    dovecot.started.append(peer)
    warnings: list[str] = []

    async def body(backend: DovecotBackend) -> list[object]:
        loop = asyncio.get_running_loop()
        before = backend.mechanisms()
        down = await plain_login(backend, "alice", "secret")
        await loop.run_in_executor(None, peer.start)
        up = await plain_login(backend, "alice", "secret")
        return [before, down, up, backend.mechanisms()]

    before, down, up, after = run(body, peer.auth_socket, warnings)
    assert before == FALLBACK_MECHANISMS
    assert isinstance(down, Failure) and down.temporary
    assert up == Success("alice")
    assert after == ("LOGIN", "PLAIN")  # now Dovecot's list, in its order
    assert any("unreachable at start" in w for w in warnings)


def test_mechanisms_retries_in_the_background(dovecot) -> None:  # type: ignore[no-untyped-def]
    peer = DovecotPeer(USERS, mechanisms="login plain")
    dovecot.started.append(peer)

    async def body(backend: DovecotBackend) -> tuple[str, ...]:
        await asyncio.get_running_loop().run_in_executor(None, peer.start)
        backend._retry_at = 0.0  # as if RETRY_INTERVAL had passed
        assert backend.mechanisms() == FALLBACK_MECHANISMS  # schedules a connection
        for _ in range(100):
            if backend.mechanisms() != FALLBACK_MECHANISMS:
                break
            await asyncio.sleep(0.05)
        return backend.mechanisms()

    assert run(body, peer.auth_socket, []) == ("LOGIN", "PLAIN")


def test_concurrent_exchanges_share_one_connection(dovecot) -> None:  # type: ignore[no-untyped-def]
    peer = dovecot.start(USERS)

    async def body(backend: DovecotBackend) -> tuple[list[Outcome], float, bool]:
        conn = backend._conn
        started = time.monotonic()
        outcomes = await asyncio.gather(
            *(
                plain_login(backend, "alice", "secret" if i % 2 else "wrong-password")
                for i in range(20)
            )
        )
        return list(outcomes), time.monotonic() - started, backend._conn is conn

    outcomes, elapsed, same = run(body, peer.auth_socket, [])
    assert outcomes == [Success("alice") if i % 2 else Failure("alice") for i in range(20)]
    assert same
    # Dovecot holds every FAIL ~0.5 s; one at a time, ten of them would take 5 s.
    assert elapsed < 3.0


def test_two_backends_in_one_process(dovecot) -> None:  # type: ignore[no-untyped-def]
    """Dovecot refuses a second live connection with the same CPID."""
    peer = dovecot.start(USERS)

    async def main() -> list[Outcome]:
        one = DovecotBackend(peer.auth_socket)
        two = DovecotBackend(peer.auth_inet)
        await one.start()
        await two.start()
        try:
            return [
                await plain_login(one, "alice", "secret"),
                await plain_login(two, "bob", "hunter2 with spaces"),
            ]
        finally:
            await one.close()
            await two.close()

    assert asyncio.run(main()) == [Success("alice"), Success("bob")]


def test_cancel_and_unoffered_mechanism_keep_the_connection(dovecot) -> None:  # type: ignore[no-untyped-def]
    peer = dovecot.start(USERS)

    async def body(backend: DovecotBackend) -> list[Outcome]:
        conn = backend._conn
        exchange = backend.begin("LOGIN", CLIENT)
        await exchange.step(None)
        exchange.cancel()
        after_cancel = await exchange.step(b"alice")
        unoffered = await backend.begin("CRAM-MD5", CLIENT).step(None)
        ok = await plain_login(backend, "alice", "secret")
        assert backend._conn is conn
        return [after_cancel, unoffered, ok]

    after_cancel, unoffered, ok = run(body, peer.auth_socket, [])
    assert isinstance(after_cancel, Failure) and not after_cancel.temporary
    assert isinstance(unoffered, Failure) and not unoffered.temporary
    assert ok == Success("alice")
    assert "unsupported authentication mechanism" not in peer.log


def test_escaped_user_name_comes_back_unescaped(dovecot) -> None:  # type: ignore[no-untyped-def]
    peer = dovecot.start(USERS)

    async def body(backend: DovecotBackend) -> Outcome:
        exchange = backend.begin("PLAIN", CLIENT)
        await exchange.step(None)
        return await exchange.step(plain("al\tice", "secret"))

    # Dovecot refuses the TAB in a user name and echoes the name tab-escaped.
    assert run(body, peer.auth_socket, []) == Failure("al\tice")


def test_oversized_response_is_refused_locally(dovecot) -> None:  # type: ignore[no-untyped-def]
    peer = dovecot.start(USERS)

    async def body(backend: DovecotBackend) -> list[Outcome]:
        big = await plain_login(backend, "alice", "x" * MAX_LINE)
        return [big, await plain_login(backend, "alice", "secret")]

    big, ok = run(body, peer.auth_socket, [])
    assert isinstance(big, Failure) and not big.temporary
    assert big.reason == "response too long"
    assert ok == Success("alice")


# -- pure helpers ------------------------------------------------------------------------


@given(st.text())
def test_tab_escape_round_trips(value: str) -> None:
    escaped = tab_escape(value)
    assert not any(c in escaped for c in "\t\n\r\x00")
    assert tab_unescape(escaped) == value


def test_tab_escape_uses_dovecots_letters() -> None:
    assert tab_escape("a\tb\nc\rd\x01e\x00") == "a\x01tb\x01nc\x01rd\x011e\x010"
    assert tab_unescape("x\x01q") == "xq"  # an unknown escape yields the character


def test_auth_line() -> None:
    line = auth_line(7, "PLAIN", "smtp", CLIENT, b"\0u\0p")
    assert line.split("\t") == [
        "AUTH",
        "7",
        "PLAIN",
        "service=smtp",
        "nologin",
        "no-penalty",
        "lip=127.0.0.1",
        "rip=127.0.0.9",
        "lport=587",
        "rport=40000",
        "secured",
        "resp=AHUAcA==",
    ]
    bare = auth_line(8, "LOGIN", "smtp", ClientMeta("a\tb"), None)
    assert bare.split("\t")[6:] == ["rip=a\x01tb"]  # no TLS, no ports, no resp=
    assert auth_line(9, "PLAIN", "smtp", ClientMeta(""), b"").endswith("\tresp=")


def test_mech_flags_and_params() -> None:
    assert usable_mechanism(["plain", "plaintext"]) == "PLAIN"
    assert usable_mechanism(["ANONYMOUS", "anonymous"]) is None
    assert usable_mechanism(["X-SECRET", "private"]) is None
    assert usable_mechanism([""]) is None
    assert parse_params(["user=a\x01tb", "temp", "reason=x=y"]) == {
        "user": "a\tb",
        "temp": "",
        "reason": "x=y",
    }
