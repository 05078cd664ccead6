"""The DMARC quarantine marker is read from the header section only."""

from __future__ import annotations

from ironpost.delivery.local import quarantined


def test_marker_in_the_header_section_only() -> None:
    assert quarantined(b"Received: x\r\nX-Ironpost-Quarantine: dmarc\r\nFrom: a\r\n\r\nbody")
    assert quarantined(b"x-ironpost-quarantine: dmarc\r\n\r\nb")  # any case
    assert not quarantined(b"From: a\r\n\r\nX-Ironpost-Quarantine: dmarc\r\n")  # the body
    assert not quarantined(b"From: a\r\nX-Not-Ironpost-Quarantine: x\r\n\r\n")
    assert not quarantined(b"Subject: a\r\n X-Ironpost-Quarantine: folded\r\n\r\n")
