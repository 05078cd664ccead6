"""Password hashes: SHA-crypt vectors, bcrypt, argon2, SCRAM credentials, SASLprep."""

from __future__ import annotations

import base64
import time

import bcrypt
import pytest
from argon2 import PasswordHasher, Type
from hypothesis import given, settings
from hypothesis import strategies as st

from ironpost.sasl.hashes import (
    dummy_verify,
    hash_password,
    is_supported,
    parse_scram,
    saslprep,
    scheme_name,
    scram_credentials,
    sha_crypt,
    verify,
)

LONG = "a very much longer text to encrypt.  This one even stretches over morethan one line."
SHORT_SALT = "we have a short salt string but not a short password"

# Ulrich Drepper, "Unix crypt using SHA-256 and SHA-512": the test vectors of the spec.
SHA256_VECTORS = [
    ("$5$saltstring", "Hello world!", "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5"),
    (
        "$5$rounds=10000$saltstringsaltstring",
        "Hello world!",
        "$5$rounds=10000$saltstringsaltst$3xv.VbSHBb41AL9AvLeujZkZRBAwqFMz2.opqey6IcA",
    ),
    (
        "$5$rounds=5000$toolongsaltstring",
        "This is just a test",
        "$5$rounds=5000$toolongsaltstrin$Un/5jzAHMgOGZ5.mWJpuVolil07guHPvOW8mGRcvxa5",
    ),
    (
        "$5$rounds=1400$anotherlongsaltstring",
        LONG,
        "$5$rounds=1400$anotherlongsalts$Rx.j8H.h8HjEDGomFU8bDkXm3XIUnzyxf12oP84Bnq1",
    ),
    (
        "$5$rounds=77777$short",
        SHORT_SALT,
        "$5$rounds=77777$short$JiO1O3ZpDAxGJeaDIuqCoEFysAe1mZNJRs3pw0KQRd/",
    ),
    (
        "$5$rounds=123456$asaltof16chars..",
        "a short string",
        "$5$rounds=123456$asaltof16chars..$gP3VQ/6X7UUEW3HkBn2w1/Ptq2jxPyzV/cZKmF/wJvD",
    ),
    (
        "$5$rounds=10$roundstoolow",
        "the minimum number is still observed",
        "$5$rounds=1000$roundstoolow$yfvwcWrQ8l/K0DAWyuPMDNHpIVlTQebY9l/gL972bIC",
    ),
]
SHA512_VECTORS = [
    (
        "$6$saltstring",
        "Hello world!",
        "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcb"
        "YEdFCoEOfaS35inz1",
    ),
    (
        "$6$rounds=10000$saltstringsaltstring",
        "Hello world!",
        "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0"
        "Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v.",
    ),
    (
        "$6$rounds=5000$toolongsaltstring",
        "This is just a test",
        "$6$rounds=5000$toolongsaltstrin$lQ8jolhgVRVhY4b5pZKaysCLi0QBxGoNeKQzQ3glMhwllF7oGDZx"
        "Uhx1yxdYcz/e1JSbq3y6JMxxl8audkUEm0",
    ),
    (
        "$6$rounds=1400$anotherlongsaltstring",
        LONG,
        "$6$rounds=1400$anotherlongsalts$POfYwTEok97VWcjxIiSOjiykti.o/pQs.wPvMxQ6Fm7I6IoYN3Cm"
        "Ls66x9t0oSwbtEW7o7UmJEiDwGqd8p4ur1",
    ),
    (
        "$6$rounds=77777$short",
        SHORT_SALT,
        "$6$rounds=77777$short$WuQyW2YR.hBNpjjRhpYD/ifIw05xdfeEyQoMxIXbkvr0gge1a1x3yRULJ5CCa"
        "UeOxFmtlcGZelFl5CxtgfiAc0",
    ),
    (
        "$6$rounds=123456$asaltof16chars..",
        "a short string",
        "$6$rounds=123456$asaltof16chars..$BtCwjqMJGx5hrJhZywWvt0RLE8uZ4oPwcelCjmw2kSYu.Ec6yc"
        "ULevoBK25fs2xXgMNrCzIMVcgEJAstJeonj1",
    ),
    (
        "$6$rounds=10$roundstoolow",
        "the minimum number is still observed",
        "$6$rounds=1000$roundstoolow$kUMsbe306n21p9R.FRkW3IGn.S9NPN0x50YhH1xhLsPuWGsUSklZt58j"
        "aTfF4ZEQpyUNGc0dqbpBYYBaHHrsX.",
    ),
]


@pytest.mark.parametrize(("setting", "password", "expected"), SHA256_VECTORS + SHA512_VECTORS)
def test_sha_crypt_spec_vectors(setting: str, password: str, expected: str) -> None:
    assert sha_crypt(password, setting) == expected
    if "rounds=77777" in expected or "rounds=123456" in expected:
        return  # slow in pure Python; the vector itself is the proof
    scheme = "{SHA256-CRYPT}" if expected.startswith("$5$") else "{SHA512-CRYPT}"
    assert verify(scheme + expected, password)
    assert not verify(scheme + expected, password + "x")


@pytest.mark.parametrize("prefix", ["", "{CRYPT}", "{crypt}", "{SHA256-CRYPT}"])
def test_sha_crypt_forms_dovecot_accepts(prefix: str) -> None:
    stored = SHA256_VECTORS[0][2]
    assert verify(prefix + stored, "Hello world!")
    assert not verify(prefix + stored, "Hello world")


def test_sha_crypt_rejects_other_prefixes() -> None:
    with pytest.raises(ValueError):
        sha_crypt("pw", "$1$abc")


def test_dovecot_sha512_crypt_is_read() -> None:
    stored = "{SHA512-CRYPT}" + SHA512_VECTORS[0][2]
    assert scheme_name(stored) == "SHA512-CRYPT" and is_supported(stored)
    assert verify(stored, "Hello world!")
    assert not verify(stored, "hello world!")


def test_mismatched_scheme_and_payload_is_malformed_not_verified() -> None:
    stored = "{SHA256-CRYPT}" + SHA512_VECTORS[0][2]
    assert not is_supported(stored)
    assert not verify(stored, "Hello world!")


@pytest.mark.parametrize("prefix", ["", "{BLF-CRYPT}", "{BCRYPT}"])
@pytest.mark.parametrize("variant", ["$2b$", "$2y$", "$2a$"])
def test_bcrypt(prefix: str, variant: str) -> None:
    made = bcrypt.hashpw(b"correct horse", bcrypt.gensalt(rounds=4)).decode()
    stored = prefix + variant + made[4:]
    assert verify(stored, "correct horse")
    assert not verify(stored, "correct horsE")


def test_bcrypt_long_password_is_cut_at_72_bytes_as_when_hashed() -> None:
    password = "p" * 80
    stored = bcrypt.hashpw(password.encode()[:72], bcrypt.gensalt(rounds=4)).decode()
    assert verify("{BLF-CRYPT}" + stored, password)


def test_argon2id_roundtrip() -> None:
    stored = hash_password("pencil")
    assert stored.startswith("{ARGON2ID}$argon2id$")
    assert scheme_name(stored) == "ARGON2ID"
    assert verify(stored, "pencil")
    assert verify(stored.removeprefix("{ARGON2ID}"), "pencil")  # bare, as Dovecot allows
    assert not verify(stored, "pencil ")
    assert hash_password("pencil") != stored  # salted


def test_argon2i_is_read() -> None:
    stored = PasswordHasher(type=Type.I, time_cost=1, memory_cost=1024).hash("pw")
    assert verify("{ARGON2I}" + stored, "pw")
    assert not verify("{ARGON2I}" + stored, "pW")


def test_plain_is_read() -> None:
    assert verify("{PLAIN}s3cret", "s3cret")
    assert verify("{plain}s3cret", "s3cret")  # Dovecot's scheme names are case-insensitive
    assert verify("{CLEAR}s3cret", "s3cret")
    assert not verify("{PLAIN}s3cret", "s3cre")


def test_unknown_schemes_fail_and_never_leak() -> None:
    assert not verify("{MD5}$1$abc$def", "pw")
    assert not is_supported("{MD5}$1$abc$def")
    assert scheme_name("{MD5}$1$abc$def") == "MD5"
    # A bare string may be a password someone pasted in: the label never echoes it.
    assert scheme_name("hunter2") == "unknown"
    assert not verify("hunter2", "hunter2")
    assert scheme_name("{CRYPT}$1$md5crypt$x") == "CRYPT"
    assert "x" not in scheme_name("{SHA512-CRYPT}xyz")


@settings(max_examples=200, deadline=None)
@given(
    prefix=st.sampled_from(
        ["", "{ARGON2ID}", "{SHA512-CRYPT}", "{BLF-CRYPT}", "{SCRAM-SHA-256}", "{CRYPT}", "{"]
    ),
    body=st.text(max_size=80),
    password=st.text(max_size=20),
)
def test_verify_never_raises(prefix: str, body: str, password: str) -> None:
    assert verify(prefix + body, password) in (True, False)
    assert isinstance(scheme_name(prefix + body), str)


def test_scram_credentials_roundtrip_and_verify() -> None:
    text = scram_credentials("pencil", 4096, salt=b"0123456789abcdef")
    assert text.startswith("{SCRAM-SHA-256}4096,")
    creds = parse_scram(text)
    assert creds.iterations == 4096 and creds.salt == b"0123456789abcdef"
    assert len(creds.stored_key) == 32 and len(creds.server_key) == 32
    assert parse_scram(text.removeprefix("{SCRAM-SHA-256}")) == creds
    assert creds.format() == text
    assert "pencil" not in repr(creds) and base64.b64encode(creds.salt).decode() not in repr(creds)
    assert verify(text, "pencil")  # Dovecot's {SCRAM-SHA-256} as a password field
    assert not verify(text, "pencil!")
    assert scram_credentials("pencil") != scram_credentials("pencil")  # random salt


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "4096,c2FsdA==,xx",
        "abc,c2FsdA==,AAAA,AAAA",
        "0,c2FsdA==," + "A" * 43 + "=," + "A" * 43 + "=",
        "4096,!!!," + "A" * 43 + "=," + "A" * 43 + "=",
        "4096,c2FsdA==,AAAA,AAAA",
    ],
)
def test_parse_scram_rejects_without_quoting(bad: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_scram(bad)
    for part in bad.split(","):
        if len(part) > 3:
            assert part not in str(info.value)


def test_saslprep_rfc4013_examples() -> None:
    assert saslprep("I\u00adX") == "IX"  # soft hyphen mapped to nothing
    assert saslprep("user") == "user"
    assert saslprep("USER") == "USER"
    assert saslprep("\u00aa") == "a"  # NFKC
    assert saslprep("\u2168") == "IX"
    assert saslprep("a\u00a0b") == "a b"  # non-ASCII space mapped to space
    for bad in ("\u0007", "\u0627\u0031"):  # control character; bidi rule
        with pytest.raises(ValueError):
            saslprep(bad)


def test_dummy_verify_costs_about_an_argon2id_verify() -> None:
    stored = hash_password("pw")
    dummy_verify("warm-up")  # makes its own hash once
    t0 = time.perf_counter()
    verify(stored, "wrong")
    real = time.perf_counter() - t0
    t0 = time.perf_counter()
    dummy_verify("wrong")
    dummy = time.perf_counter() - t0
    assert dummy > real / 3
