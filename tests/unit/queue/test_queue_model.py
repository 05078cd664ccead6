"""Envelope records: round trip, and bad records raise CorruptRecord only."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ironpost.queue.model import (
    ClientInfo,
    CorruptRecord,
    Envelope,
    RecipientSpec,
    RecipientStatus,
    envelope_from_json,
    envelope_to_json,
    notify_from_text,
    notify_to_text,
)

text = st.text(max_size=40)
opt = st.none() | text

envelopes = st.builds(
    Envelope,
    sender=text,
    recipients=st.just(()),
    size=st.integers(0, 2**40),
    body_type=opt,
    smtputf8=st.booleans(),
    ret=opt,
    envid=opt,
    client=st.builds(ClientInfo, text, text, text, text, opt, opt),
    arrival=st.floats(0, 4e9, allow_nan=False),
)


@given(envelopes)
def test_envelope_round_trip(envelope: Envelope) -> None:
    assert envelope_from_json(envelope_to_json(envelope), ()) == envelope


@given(st.text(max_size=200))
def test_garbage_raises_corrupt_record_only(garbage: str) -> None:
    try:
        envelope_from_json(garbage, ())
    except CorruptRecord:
        pass


@pytest.mark.parametrize(
    "record",
    [
        "{not json",
        "[]",
        '{"v": 2}',
        '{"v": 1, "sender": 5}',
        '{"v":1,"sender":"","size":"x","body_type":null,"smtputf8":false,"ret":null,'
        '"envid":null,"arrival":1,"client":["a","b","c","d",null,null]}',
        '{"v":1,"sender":"","size":1,"body_type":null,"smtputf8":false,"ret":null,'
        '"envid":null,"arrival":1,"client":["a"]}',
    ],
)
def test_corrupt_records(record: str) -> None:
    with pytest.raises(CorruptRecord):
        envelope_from_json(record, (RecipientSpec("a@b", "a@b"),))


@given(st.none() | st.lists(st.sampled_from(["SUCCESS", "FAILURE", "DELAY", "NEVER"])))
def test_notify_round_trip(notify: list[str] | None) -> None:
    value = None if notify is None else tuple(notify)
    assert notify_from_text(notify_to_text(value)) == value


def test_final_statuses() -> None:
    assert RecipientStatus.DELIVERED.is_final and RecipientStatus.BOUNCED.is_final
    assert not RecipientStatus.DEFERRED.is_final and not RecipientStatus.PENDING.is_final
