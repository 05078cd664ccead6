"""Header-section helpers of the end of DATA, and the Received header's privacy option."""

from __future__ import annotations

from ironpost.server.headers import (
    from_addresses,
    header_section,
    header_values,
    missing_headers,
)
from ironpost.server.received import received_header
from ironpost.server.transaction import Transaction

HEAD = (
    b'From: "Alice A." <alice@example.test>,\r\n bob@example.test\r\n'
    b"Subject: hi\r\nX-From: not@this.test\r\n"
)


def test_header_values_unfold_and_match_whole_names() -> None:
    assert header_values(HEAD, b"from") == ['"Alice A." <alice@example.test>, bob@example.test']
    assert from_addresses(HEAD) == ["alice@example.test", "bob@example.test"]


def test_header_section_stops_at_the_blank_line() -> None:
    assert header_section(HEAD + b"\r\nFrom: body@x.test\r\n") == HEAD
    assert header_section(b"\r\nbody only\r\n") == b""


def test_missing_headers_are_added_once() -> None:
    added = missing_headers(HEAD, hostname="mail.example.test", queue_id="4AbC", now=0.0)
    assert added.startswith(b"Date: ")
    assert b"Message-Id: <19700101000000.4AbC@mail.example.test>\r\n" in added
    full = HEAD + added
    assert missing_headers(full, hostname="h", queue_id="q", now=0.0) == b""


def test_transaction_head_without_joining_the_body() -> None:
    tx = Transaction("a@x.test", None, None, False, None, None)
    tx.add_chunk(b"Subject: a\r\nFr")
    tx.add_chunk(b"om: a@x.test\r\n\r\nbody")
    tx.add_chunk(b"x" * 100)
    assert tx.head() == b"Subject: a\r\nFrom: a@x.test\r\n"


def test_received_header_can_hide_an_authenticated_client() -> None:
    args = dict(
        helo="laptop.home", client_name="unknown", client_address="192.0.2.7", tls=None,
        hostname="mail.example.test", protocol="ESMTPSA", queue_id="Q1", recipient=None,
        now=0.0,
    )  # fmt: skip
    shown = received_header(**args, authenticated="alice")  # type: ignore[arg-type]
    assert b"192.0.2.7" in shown and b"(Authenticated sender: alice)" in shown
    hidden = received_header(**args, hide_client=True)  # type: ignore[arg-type]
    assert b"192.0.2.7" not in hidden and b"laptop" not in hidden
    assert hidden.startswith(b"Received: by mail.example.test (ironpost) with ESMTPSA id Q1")
