"""PLAIN, LOGIN and SCRAM-SHA-256 server state machines, driven with raw bytes."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ironpost.sasl.backend import Challenge, Failure, Success
from ironpost.sasl.hashes import ScramCredentials, derive_scram
from ironpost.sasl.mechanisms import (
    CheckPassword,
    LoginServer,
    NeedCredentials,
    PlainServer,
    ScramServer,
)

# -- PLAIN ------------------------------------------------------------------------------


def test_plain_with_initial_response() -> None:
    out = PlainServer().step(b"\0alice@example.org\0s3cret")
    assert out == CheckPassword("alice@example.org", "s3cret", "alice@example.org")
    assert "s3cret" not in repr(out)


def test_plain_without_initial_response_asks_with_an_empty_challenge() -> None:
    mech = PlainServer()
    assert mech.step(None) == Challenge(b"")
    assert mech.step(b"\0bob\0pw") == CheckPassword("bob", "pw", "bob")
    assert isinstance(mech.step(b"\0bob\0pw"), Failure)  # finished


def test_plain_empty_initial_response_is_an_empty_message() -> None:
    out = PlainServer().step(b"")
    assert isinstance(out, Failure)


def test_plain_authzid_equal_to_authcid_is_accepted() -> None:
    assert PlainServer().step(b"bob\0bob\0pw") == CheckPassword("bob", "pw", "bob")


def test_plain_authzid_different_from_authcid_is_refused() -> None:
    out = PlainServer().step(b"admin\0bob\0pw")
    assert isinstance(out, Failure)
    assert out.username == "bob" and "pw" not in out.reason


def test_plain_same_identity_decides_equality() -> None:
    mech = PlainServer(same_identity=lambda a, b: a.lower() == b.lower())
    assert mech.step(b"BOB\0bob\0pw") == CheckPassword("bob", "pw", "BOB")


@pytest.mark.parametrize(
    "message",
    [
        b"bob\0pw",  # one NUL
        b"\0bob\0pw\0",  # three NULs
        b"\0\0pw",  # empty authcid
        b"\0bob\0",  # empty password
        b"bobpw",
        b"\0b\xffob\0pw",  # not UTF-8
        b"\0" + b"u" * 2000 + b"\0pw",
    ],
)
def test_plain_malformed(message: bytes) -> None:
    out = PlainServer().step(message)
    assert isinstance(out, Failure)
    assert not out.temporary


@given(st.binary(max_size=64))
def test_plain_never_raises_and_splits_exactly(message: bytes) -> None:
    out = PlainServer().step(message)
    assert isinstance(out, CheckPassword | Failure)
    if isinstance(out, CheckPassword):
        authzid, authcid, password = (p.decode() for p in message.split(b"\0"))
        assert (out.authcid, out.password) == (authcid, password)
        assert out.authzid == (authzid or authcid)


# -- LOGIN ------------------------------------------------------------------------------


def test_login_flow() -> None:
    mech = LoginServer()
    assert mech.step(None) == Challenge(b"Username:")
    assert mech.step(b"alice") == Challenge(b"Password:")
    out = mech.step(b"pw")
    assert out == CheckPassword("alice", "pw", "alice")
    assert isinstance(mech.step(b"again"), Failure)


def test_login_initial_response_is_the_user_name() -> None:
    mech = LoginServer()
    assert mech.step(b"alice") == Challenge(b"Password:")
    assert mech.step(b"pw") == CheckPassword("alice", "pw", "alice")


@pytest.mark.parametrize(("user", "password"), [(b"", b"pw"), (b"a\0b", b"pw"), (b"\xff", b"pw")])
def test_login_bad_user_name(user: bytes, password: bytes) -> None:
    mech = LoginServer()
    mech.step(None)
    assert isinstance(mech.step(user), Failure)


def test_login_empty_password_fails_with_the_user() -> None:
    mech = LoginServer()
    mech.step(b"alice")
    out = mech.step(b"")
    assert isinstance(out, Failure) and out.username == "alice"


@given(st.lists(st.one_of(st.none(), st.binary(max_size=40)), max_size=5))
def test_login_never_raises(steps: list[bytes | None]) -> None:
    mech = LoginServer()
    for s in steps:
        assert isinstance(mech.step(s), Challenge | Failure | CheckPassword)


# -- SCRAM-SHA-256 ----------------------------------------------------------------------

# RFC 7677, section 3.
RFC_CLIENT_FIRST = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
RFC_SERVER_FIRST = (
    b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
)
RFC_CLIENT_FINAL = (
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
RFC_SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
RFC_CREDS = derive_scram("pencil", base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ=="), 4096)


def rfc_server() -> ScramServer:
    return ScramServer(nonce=lambda: RFC_SERVER_NONCE)


def test_scram_rfc7677_vector() -> None:
    mech = rfc_server()
    assert mech.step(RFC_CLIENT_FIRST) == NeedCredentials("user")
    assert mech.credentials(RFC_CREDS) == Challenge(RFC_SERVER_FIRST)
    assert mech.step(RFC_CLIENT_FINAL) == Success("user", final=RFC_SERVER_FINAL)


def test_scram_without_initial_response() -> None:
    mech = rfc_server()
    assert mech.step(None) == Challenge(b"")
    assert mech.step(RFC_CLIENT_FIRST) == NeedCredentials("user")


def test_scram_tampered_proof_fails() -> None:
    mech = rfc_server()
    mech.step(RFC_CLIENT_FIRST)
    mech.credentials(RFC_CREDS)
    proof = bytearray(base64.b64decode(RFC_CLIENT_FINAL.rsplit(b"p=", 1)[1]))
    proof[0] ^= 1
    final = RFC_CLIENT_FINAL.rsplit(b"p=", 1)[0] + b"p=" + base64.b64encode(bytes(proof))
    out = mech.step(final)
    assert isinstance(out, Failure) and out.username == "user" and not out.temporary


def test_scram_wrong_password_fails() -> None:
    mech = rfc_server()
    mech.step(RFC_CLIENT_FIRST)
    mech.credentials(derive_scram("pencils", base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ=="), 4096))
    assert isinstance(mech.step(RFC_CLIENT_FINAL), Failure)


def test_scram_nonce_mismatch_fails() -> None:
    mech = ScramServer()  # a random server nonce: the RFC's client-final cannot match it
    mech.step(RFC_CLIENT_FIRST)
    mech.credentials(RFC_CREDS)
    out = mech.step(RFC_CLIENT_FINAL)
    assert isinstance(out, Failure) and "nonce" in out.reason


@pytest.mark.parametrize(
    ("first", "why"),
    [
        (b"p=tls-unique,,n=user,r=abc", "channel binding"),
        (b"x,,n=user,r=abc", "gs2"),
        (b"n,,m=ext,n=user,r=abc", "client-first"),
        (b"n,,n=us=er,r=abc", "user name"),
        (b"n,,n=,r=abc", "user name"),
        (b"n,,n=user,r=", "nonce"),
        (b"n,a=admin,n=user,r=abc", "authorization"),
        (b"n,,n=user", "client-first"),
        (b"\xff", "UTF-8"),
    ],
)
def test_scram_bad_client_first(first: bytes, why: str) -> None:
    out = ScramServer().step(first)
    assert isinstance(out, Failure)
    assert why in out.reason


def test_scram_extensions_after_the_nonce_are_allowed() -> None:
    assert ScramServer().step(b"n,,n=user,r=abc,x=ext") == NeedCredentials("user")


def test_scram_escaped_user_name() -> None:
    assert ScramServer().step(b"n,,n=a=2Cb=3Dc,r=xyz") == NeedCredentials("a,b=c")


def scram_client(
    mech: ScramServer, user: str, password: str, creds: ScramCredentials, gs2: str = "n,,"
) -> tuple[object, bytes]:
    """A SCRAM-SHA-256 client (RFC 5802 section 3) against ``mech``; returns the outcome
    and the ServerSignature the client expects."""
    bare = f"n={user},r=clientnonce123"
    assert mech.step(f"{gs2}{bare}".encode()) == NeedCredentials(user)
    challenge = mech.credentials(creds)
    assert isinstance(challenge, Challenge)
    server_first = challenge.data.decode()
    attrs = dict(a.split("=", 1) for a in server_first.split(","))
    assert attrs["r"].startswith("clientnonce123") and len(attrs["r"]) > 20
    salted = hashlib.pbkdf2_hmac(
        "sha256", password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"])
    )
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    without_proof = f"c={base64.b64encode(gs2.encode()).decode()},r={attrs['r']}"
    auth_message = f"{bare},{server_first},{without_proof}".encode()
    signature = hmac.digest(stored_key, auth_message, "sha256")
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    out = mech.step(f"{without_proof},p={base64.b64encode(proof).decode()}".encode())
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    return out, b"v=" + base64.b64encode(hmac.digest(server_key, auth_message, "sha256"))


@pytest.mark.parametrize("gs2", ["n,,", "y,,", "n,a=alice,"])
def test_scram_full_exchange_with_a_client(gs2: str) -> None:
    creds = derive_scram("correct horse", b"salt-of-sixteen!", 4096)
    out, expected_final = scram_client(ScramServer(), "alice", "correct horse", creds, gs2)
    assert out == Success("alice", final=expected_final)


def test_scram_client_with_wrong_password_fails() -> None:
    creds = derive_scram("correct horse", b"salt-of-sixteen!", 4096)
    out, _ = scram_client(ScramServer(), "alice", "wrong horse", creds)
    assert isinstance(out, Failure) and out.username == "alice"


def test_scram_channel_binding_flag_must_match_in_final() -> None:
    mech = rfc_server()
    mech.step(b"y,,n=user,r=rOprNGfwEbeRWgbNEkqO")
    mech.credentials(RFC_CREDS)
    out = mech.step(RFC_CLIENT_FINAL)  # c=biws is "n,,", not "y,,"
    assert isinstance(out, Failure) and "channel-binding" in out.reason


def test_scram_steps_after_the_end_fail() -> None:
    mech = rfc_server()
    mech.step(RFC_CLIENT_FIRST)
    mech.credentials(RFC_CREDS)
    mech.step(RFC_CLIENT_FINAL)
    assert isinstance(mech.step(RFC_CLIENT_FINAL), Failure)


@given(st.binary(max_size=80), st.binary(max_size=120))
def test_scram_never_raises(first: bytes, final: bytes) -> None:
    mech = ScramServer()
    out = mech.step(first)
    if isinstance(out, NeedCredentials):
        assert isinstance(mech.credentials(RFC_CREDS), Challenge)
        assert isinstance(mech.step(final), Failure)
