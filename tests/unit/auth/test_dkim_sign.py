"""DKIM signing: canonicalization against dkimpy's, header choice, roundtrips with dkimpy."""

from __future__ import annotations

from pathlib import Path

import dkim
import pytest
from dkim.canonicalization import Relaxed
from hypothesis import given
from hypothesis import strategies as st

from ironpost.auth.dkim_keys import SigningKey, generate_key, key_from_file, txt_record
from ironpost.auth.dkim_sign import (
    DkimSigner,
    from_domain_of,
    relaxed_body,
    relaxed_header,
    split_message,
)
from ironpost.config import load_texts

MSG = (
    b"Received: from x by y; Mon, 23 Nov 2026 10:00:00 +0000\r\n"
    b'From: "Alice, A." <alice@Example.ORG>\r\n'
    b"To: bob@example.net\r\n"
    b"Subject:   spaced   out \r\n\tand folded\r\n"
    b"X-Unsigned: 1\r\n"
    b"\r\n"
    b"Hello  \t Bob. \r\n\r\n\r\n"
)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SigningKey]:
    d = tmp_path_factory.mktemp("keys")
    return {
        "rsa": generate_key(d, "example.org", "r"),
        "ed": generate_key(d, "example.org", "e", ed25519=True),
    }


def signer(*keys: SigningKey, **kw: object) -> DkimSigner:
    loaded = [key_from_file(k.domain, k.selector, k.private_path) for k in keys]
    return DkimSigner({"example.org": loaded}, **kw)  # type: ignore[arg-type]


def dnsfunc(*keys: SigningKey):  # type: ignore[no-untyped-def]
    records = {f"{k.dns_name}.".encode(): txt_record(k).encode() for k in keys}
    return lambda name, timeout=5: records.get(name)


def tags(header: bytes) -> dict[bytes, bytes]:
    value = header.split(b":", 1)[1]
    return dkim.util.parse_tag_value(value)  # type: ignore[no-any-return]


def test_dkimpy_verifies_rsa_and_ed25519(keys: dict[str, SigningKey]) -> None:
    out = signer(keys["rsa"], keys["ed"], clock=lambda: 1_700_000_000).sign(MSG)
    fields = out.split(b"\r\nDKIM-Signature:")
    assert len(fields) == 2 and out.endswith(b"\r\n")
    d = dkim.DKIM(out + MSG)
    lookup = dnsfunc(keys["rsa"], keys["ed"])
    assert d.verify(0, dnsfunc=lookup) and d.verify(1, dnsfunc=lookup)
    first = tags(out.split(b"\r\nDKIM-Signature:")[0])
    assert first[b"c"] == b"relaxed/relaxed" and first[b"a"] == b"rsa-sha256"
    assert first[b"d"] == b"example.org" and first[b"t"] == b"1700000000"
    # Present signable fields once each, From once more; Received and X- never.
    assert first[b"h"].replace(b" ", b"").replace(b"\r\n\t", b"") == b"from:to:subject:from"
    # No line of the header is longer than 78 octets.
    assert max(len(line) for line in out.split(b"\r\n")) <= 78


def test_sign_is_empty_without_a_key(keys: dict[str, SigningKey]) -> None:
    s = signer(keys["rsa"])
    assert s.sign(MSG.replace(b"Example.ORG", b"example.com")) == b""
    assert s.sign(b"To: x@example.org\r\n\r\nbody\r\n") == b""
    assert DkimSigner({}).sign(MSG) == b""
    assert s.domains() == frozenset({"example.org"})


def test_from_domain_overrides_the_header(keys: dict[str, SigningKey]) -> None:
    s = signer(keys["rsa"])
    other = MSG.replace(b"Example.ORG", b"example.com")
    out = s.sign(other, from_domain="Example.org")
    assert dkim.DKIM(out + other).verify(0, dnsfunc=dnsfunc(keys["rsa"]))


def test_from_settings(tmp_path: Path) -> None:
    generate_key(tmp_path / "dkim" / "example.org", "example.org", "s1", bits=1024)
    main = (
        "myhostname = mx.example.org\n"
        "dkim_signing_table = inline:{ example.org=s1 }\n"
        "dkim_signature_headers = from, subject\n"
        "dkim_oversign_headers = from, subject\n"
    )
    loaded = load_texts(main, None, main_file="main.cf", master_file="m", config_dir=tmp_path)
    s = DkimSigner.from_settings(loaded.settings, tmp_path)
    out = s.sign(MSG)
    h = tags(out)[b"h"].replace(b" ", b"").replace(b"\r\n\t", b"")
    assert h == b"from:subject:from:subject"


def test_empty_body_and_no_trailing_newline(keys: dict[str, SigningKey]) -> None:
    lookup = dnsfunc(keys["rsa"])
    for msg in (b"From: a@example.org\r\n\r\n", b"From: a@example.org\r\n\r\nno newline  "):
        out = signer(keys["rsa"]).sign(msg)
        assert dkim.DKIM(out + msg).verify(0, dnsfunc=lookup), msg


_BODY = st.lists(
    st.sampled_from([b"a", b"b", b" ", b"\t", b"\r\n", b"\r\n", b"x y", b"  \r\n"]), max_size=30
).map(b"".join)


@given(_BODY)
def test_relaxed_body_matches_dkimpy(body: bytes) -> None:
    assert relaxed_body(body) == Relaxed.canonicalize_body(body)


@given(
    st.sampled_from([b"Subject", b"FROM", b"x-Y"]),
    st.lists(st.sampled_from([b"a", b" ", b"\t", b"\r\n ", b"\r\n\t", b"b:c"]), max_size=12).map(
        b"".join
    ),
)
def test_relaxed_header_matches_dkimpy(name: bytes, value: bytes) -> None:
    [(n, v)] = Relaxed.canonicalize_headers([(name, value)])
    assert relaxed_header(name, value) == n + b":" + v.removesuffix(b"\r\n")


@given(st.binary(max_size=300))
def test_split_and_sign_never_raise(content: bytes) -> None:
    headers, _ = split_message(content)
    from_domain_of(headers)


def test_from_domain_of() -> None:
    def dom(value: bytes) -> str | None:
        return from_domain_of(split_message(b"From: " + value + b"\r\n\r\n")[0])

    assert dom(b"alice@Example.Org") == "example.org"
    assert dom(b'"x@evil.test" <a@good.test>') == "good.test"
    assert dom(b"Group:;") is None
    assert dom(b"a@b\xc3\xa9.test") is None
