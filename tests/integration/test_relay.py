"""Never an open relay: the classic relay-test battery through a real socket.

The client is a stranger (not in $mynetworks, not authenticated). Each pattern
tries to make ironpost carry mail to ``remote.test`` by hiding the real
destination inside an address whose visible domain is ours.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from mta_harness import HOST, STRANGER, Mta, MtaFactory, RawClient, write_config

OURS = "example.test"
OUR_IP = "[127.0.0.1]"

# The 16 classic open-relay test patterns (after the relay-test batteries of the late
# 1990s), plus a few of their modern variants.
RELAY_PATTERNS = [
    "<victim@remote.test>",
    f"<victim%remote.test@{OURS}>",
    f"<victim%remote.test@{OUR_IP}>",
    '<"victim@remote.test">',
    '<"victim%remote.test">',
    f"<victim@remote.test@{OURS}>",
    f'<"victim@remote.test"@{OURS}>',
    f'<"victim@remote.test"@{OUR_IP}>',
    f"<@{OURS}:victim@remote.test>",
    f"<@{OUR_IP}:victim@remote.test>",
    "<remote.test!victim>",
    f"<remote.test!victim@{OURS}>",
    f"<remote.test!victim@{OUR_IP}>",
    "<victim%remote.test>",
    f"<{OURS}!remote.test!victim@{OURS}>",
    f'<"victim%remote.test"@{OURS}>',
    # variants
    "<victim@remote.test.>",
    "<VICTIM@REMOTE.TEST>",
    f"<victim%remote.test%{OURS}@{OURS}>",
    f"<@{OURS},@{OURS}:victim@remote.test>",
]


def _try_relay(port: int, rcpt: str) -> bytes:
    client = RawClient(port, source=STRANGER)
    try:
        assert client.cmd(b"EHLO client.sender.test").startswith(b"250")
        assert client.cmd(b"MAIL FROM:<spammer@sender.test>").startswith(b"250")
        return client.cmd(b"RCPT TO:" + rcpt.encode())
    finally:
        client.close()


@pytest.fixture(scope="module")
def relay_mta(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mta]:
    directory = tmp_path_factory.mktemp("relay")
    port = write_config(directory)
    mta = Mta(directory, port)
    mta.start()
    yield mta
    mta.stop()


@pytest.mark.parametrize("rcpt", RELAY_PATTERNS)
def test_stranger_cannot_relay(relay_mta: Mta, rcpt: str) -> None:
    reply = _try_relay(relay_mta.port, rcpt)
    # Syntactically domain-less paths may fail earlier with 501/553; all else is a
    # relay refusal. Never a 2xx, never a 4xx that invites a retry.
    assert reply[:3] in (b"554", b"501", b"553", b"550"), reply


@pytest.mark.parametrize(
    "rcpt",
    [
        f"<victim%remote.test@{OURS}>",
        f'<"victim@remote.test"@{OURS}>',
        f"<remote.test!victim@{OURS}>",
        f"<@{OURS}:victim@remote.test>",
        f"<victim@remote.test@{OURS}>",
        "<victim@remote.test>",
    ],
)
def test_hidden_destination_is_refused_as_relay(relay_mta: Mta, rcpt: str) -> None:
    reply = _try_relay(relay_mta.port, rcpt)
    assert reply.startswith(b"554 5.7.1"), reply
    assert b"Relay access denied" in reply


def test_defer_unauth_destination_gives_454(mta_factory: type[MtaFactory]) -> None:
    mta = mta_factory.start(
        "smtpd_relay_restrictions = permit_mynetworks, defer_unauth_destination\n"
    )
    reply = _try_relay(mta.port, f"<victim%remote.test@{OURS}>")
    assert reply.startswith(b"454 4.7.1"), reply


def test_trusted_network_may_relay_and_mail_stays_queued(relay_mta: Mta) -> None:
    client = RawClient(relay_mta.port, source=HOST)
    client.cmd(b"EHLO client.sender.test")
    client.cmd(b"MAIL FROM:<app@example.test>")
    assert client.cmd(b"RCPT TO:<someone@remote.test>").startswith(b"250")
    client.close()


def test_local_recipient_accepted_from_stranger(relay_mta: Mta) -> None:
    assert _try_relay(relay_mta.port, "<alice@example.test>").startswith(b"250")
