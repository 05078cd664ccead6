"""Name validation and nameserver parsing (pure; property tests with hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ironpost.dns import normalize_name, parse_nameserver

LABEL = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_",
    min_size=1,
    max_size=63,
)


@given(st.text(max_size=300))
def test_normalize_never_raises_and_returns_a_valid_query_name(name: str) -> None:
    out = normalize_name(name)
    if out is None:
        return
    assert out.isascii() and out == out.lower() and not out.endswith(".")
    assert 0 < len(out) <= 253
    assert all(0 < len(label) <= 63 for label in out.split("."))
    assert not any(c <= " " or c == "\x7f" for c in out)


@given(st.lists(LABEL, min_size=1, max_size=4), st.booleans())
def test_valid_ascii_names_are_kept_lowercased(labels: list[str], final_dot: bool) -> None:
    name = ".".join(labels)
    assert normalize_name(name + ("." if final_dot else "")) == name.lower()


@given(st.text(max_size=300))
def test_normalize_is_idempotent(name: str) -> None:
    out = normalize_name(name)
    if out is not None:
        assert normalize_name(out) == out


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Example.COM.", "example.com"),
        ("_dmarc.example.com", "_dmarc.example.com"),
        ("sel._domainkey.example.com", "sel._domainkey.example.com"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("a" * 63 + ".example", "a" * 63 + ".example"),
        ("a" * 64 + ".example", None),
        (".".join(["a" * 62] * 4) + ".abcd", None),  # 256 characters
        (".".join(["a" * 62] * 4), ".".join(["a" * 62] * 4)),  # 251
        ("", None),
        (".", None),
        ("..", None),
        ("a..b", None),
        (".a", None),
        ("a b", None),
        ("a\r\n.example", None),
        ("a\x7f.example", None),
    ],
)
def test_normalize_cases(name: str, expected: str | None) -> None:
    assert normalize_name(name) == expected


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("192.0.2.1", ("192.0.2.1", 53)),
        ("192.0.2.1:5353", ("192.0.2.1", 5353)),
        (" 127.0.0.1:53 ", ("127.0.0.1", 53)),
        ("::1", ("::1", 53)),
        ("2001:db8::1", ("2001:db8::1", 53)),
        ("[2001:DB8::1]", ("2001:db8::1", 53)),
        ("[::1]:5300", ("::1", 5300)),
    ],
)
def test_parse_nameserver(entry: str, expected: tuple[str, int]) -> None:
    assert parse_nameserver(entry) == expected


@pytest.mark.parametrize(
    "entry",
    ["", "dns.example", "192.0.2.1:0", "192.0.2.1:65536", "192.0.2.1:x", "[::1", "[::1]x",
     "[::1]:", "300.1.1.1", "[dns.example]:53"],
)  # fmt: skip
def test_parse_nameserver_rejects(entry: str) -> None:
    with pytest.raises(ValueError):
        parse_nameserver(entry)


@given(st.text(max_size=60))
def test_parse_nameserver_raises_only_value_error(entry: str) -> None:
    try:
        host, port = parse_nameserver(entry)
    except ValueError:
        return
    assert 0 < port < 65536 and host
