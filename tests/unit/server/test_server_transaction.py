"""Transaction's body buffer: joined once with what goes in front, dropped as it is
joined, and the header section read without copying the body."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from ironpost.server.headers import header_section
from ironpost.server.transaction import Transaction


def _tx(*chunks: bytes) -> Transaction:
    tx = Transaction("a@x.test", None, None, False, None, None)
    for chunk in chunks:
        tx.add_chunk(chunk)
    return tx


def test_take_content_prefixes_joins_once_and_drops_the_chunks() -> None:
    tx = _tx(b"Subject: x\r\n", b"\r\nbody\r\n")
    content = tx.take_content(b"Received: y\r\n", b"Date: z\r\n")
    assert content == b"Received: y\r\nDate: z\r\nSubject: x\r\n\r\nbody\r\n"
    # The transaction no longer holds the body: the queued bytes are its only copy.
    assert tx.chunks == [] and tx.size == len(b"Subject: x\r\n\r\nbody\r\n")


def test_take_content_of_one_chunk_is_that_chunk() -> None:
    chunk = b"Subject: x\r\n\r\n" + b"y" * 100_000
    tx = _tx(chunk)
    assert tx.take_content() is chunk
    assert tx.chunks == []


def test_content_keeps_the_chunks() -> None:
    tx = _tx(b"a\r\n", b"b\r\n")
    assert tx.content(b"R\r\n") == b"R\r\na\r\nb\r\n"
    assert tx.content() == b"a\r\nb\r\n" and tx.chunks == [b"a\r\n", b"b\r\n"]


def test_head_from_the_first_chunk_copies_only_the_header_section() -> None:
    tx = _tx(b"Subject: a\r\nFrom: b@x.test\r\n\r\n" + b"z" * 200_000)
    assert tx.head() == b"Subject: a\r\nFrom: b@x.test\r\n"
    assert _tx(b"\r\nbody only\r\n").head() == b""
    assert _tx().head() == b""


def test_head_is_bounded_by_limit() -> None:
    tx = _tx(b"X-Long: " + b"v" * 5000 + b"\r\n", b"X-More: w\r\n\r\nbody\r\n")
    assert len(tx.head(limit=1000)) == 1000
    assert tx.head() == b"X-Long: " + b"v" * 5000 + b"\r\nX-More: w\r\n"


_MESSAGES = st.sampled_from(
    [
        b"Subject: a\r\nFrom: b@x.test\r\n\r\nbody\r\n\r\nmore\r\n",
        b"\r\nno headers\r\n",
        b"Subject: only headers\r\n",
        b"A: 1\r\n\r\n",
        b"",
        b"A: 1\r\nB: 2\r\n\r\n\r\n",
    ]
)


@settings(max_examples=300, deadline=None)
@given(_MESSAGES, st.lists(st.integers(0, 60), max_size=8))
def test_head_equals_header_section_of_the_joined_message(message: bytes, cuts: list[int]) -> None:
    bounds = [0, *sorted(c for c in cuts if c <= len(message)), len(message)]
    chunks = [message[a:b] for a, b in itertools.pairwise(bounds) if b > a]
    assert _tx(*chunks).head() == header_section(message)
