"""Forgery defences end to end: a real ironpost, a real DNS server (dnsmasq) serving the
senders' SPF, DKIM and DMARC records, strangers on their own 127.0.0.x addresses.

What the unit and library-level tests cannot show is checked here: the server signs its
own users' mail, checks everyone else's, writes one Authentication-Results header (after
removing forged ones), refuses a DMARC p=reject failure at end of DATA, files a
p=quarantine failure into .Junk, and names its clients from reverse DNS."""

from __future__ import annotations

import smtplib
import time
from pathlib import Path

import dkim
import pytest
from mta_harness import HOST, STRANGER, Mta, MtaFactory

from ironpost.auth.dkim_keys import SigningKey, generate_key, txt_record
from ironpost.auth.dkim_sign import DkimSigner

pytestmark = pytest.mark.integration

CLEAN = STRANGER  # 127.0.0.66: sender.test's SPF lists it
NAMELESS = "127.0.0.67"  # no PTR record


def _signer(tmp_path: Path, domain: str) -> tuple[SigningKey, DkimSigner]:
    key = generate_key(tmp_path / "keys" / domain, domain, "sel")
    config = f"dkim_signing_table = inline:{{ {domain}=sel:{key.private_path} }}\n"
    return key, _signer_from(config)


def _signer_from(main_cf: str) -> DkimSigner:
    from ironpost.config import load_texts

    loaded = load_texts(
        "myhostname = h.example.test\n" + main_cf,
        None,
        main_file="main.cf",
        master_file="master.cf",
        config_dir=None,
    )
    return DkimSigner.from_settings(loaded.settings, None)


def _zones(sender_key: SigningKey) -> dict[str, dict[str, list[object]]]:
    return {
        "mx.sender.test": {"A": [CLEAN]},  # with dnsmasq, also the PTR of 127.0.0.66
        "sender.test": {"TXT": [f"v=spf1 ip4:{CLEAN} -all"]},
        "_dmarc.sender.test": {"TXT": ["v=DMARC1; p=reject"]},
        "sel._domainkey.sender.test": {"TXT": [txt_record(sender_key)]},
        "_dmarc.quarantine.test": {"TXT": ["v=DMARC1; p=quarantine"]},
        "quarantine.test": {"TXT": ["v=spf1 -all"]},
    }


def _message(sender: str, subject: str, extra: str = "") -> bytes:
    return (
        f"From: {sender}\r\nTo: alice@example.test\r\nSubject: {subject}\r\n"
        f"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{subject}@x.test>\r\n"
        f"{extra}\r\nbody of {subject}\r\n"
    ).encode()


def _send(mta: Mta, source: str, sender: str, content: bytes) -> None:
    with smtplib.SMTP(HOST, mta.port, timeout=30, source_address=(source, 0)) as c:
        c.ehlo("mx.sender.test")
        c.sendmail(sender, ["alice@example.test"], content)


@pytest.fixture
def world(tmp_path: Path, mta_factory: type[MtaFactory], dns_server, smtp_sink):  # type: ignore[no-untyped-def]
    sender_key, sender_signer = _signer(tmp_path / "remote", "sender.test")
    dns = dns_server(_zones(sender_key))
    own_key = generate_key(tmp_path / "keys" / "example.test", "example.test", "sel")
    sink = smtp_sink.start(7)  # remote.test's MX: far@example.test is forwarded there
    mta = mta_factory.start(
        f"""\
        dns_nameservers = {dns.nameserver}
        dkim_signing_table = inline:{{ example.test=sel:{own_key.private_path} }}
        smtpd_client_restrictions = permit_mynetworks, reject_unknown_reverse_client_hostname
        transport_maps = inline:{{ remote.test=smtp:{sink.nexthop} }}
        """
    )
    mta.sink = sink  # type: ignore[attr-defined]
    return mta, sender_signer, own_key


def test_inbound_mail_is_checked_and_forged_results_removed(world) -> None:  # type: ignore[no-untyped-def]
    mta, signer, _ = world
    forged = "Authentication-Results: mail.example.test; dkim=pass header.d=sender.test\r\n"
    content = _message("carol@sender.test", "signed", forged)
    _send(mta, CLEAN, "carol@sender.test", signer.sign(content) + content)
    (body,) = mta.wait_for_messages("alice", 1)
    head = body.split(b"\n\n", 1)[0].decode()
    results = [line for line in head.split("\n") if line.startswith("Authentication-Results:")]
    assert len(results) == 1, head  # ours only: the forged one is gone
    unfolded = head.replace("\n\t", " ").replace("\n ", " ")
    for verdict in ("spf=pass", "dkim=pass header.d=sender.test", "dmarc=pass"):
        assert verdict in unfolded, unfolded
    # The client was named from reverse DNS, confirmed forward.
    assert mta.log_has(f"connect from mx.sender.test[{CLEAN}]")
    assert f"(mx.sender.test [{CLEAN}])" in unfolded


def test_dmarc_reject_is_refused_at_end_of_data(world) -> None:  # type: ignore[no-untyped-def]
    mta, _, _ = world
    content = _message("ceo@sender.test", "forged")  # unsigned, and SPF is for another domain
    with pytest.raises(smtplib.SMTPDataError) as refused:
        _send(mta, CLEAN, "bounces@elsewhere.test", content)
    assert refused.value.smtp_code == 550 and b"5.7.1" in refused.value.smtp_error
    assert mta.log_has("NOQUEUE: reject: END-OF-MESSAGE")
    assert mta.messages("alice") == []


def test_dmarc_quarantine_files_into_junk(world) -> None:  # type: ignore[no-untyped-def]
    mta, _, _ = world
    content = _message("news@quarantine.test", "quarantined")
    _send(mta, CLEAN, "news@quarantine.test", content)
    junk = mta.maildir("alice") / ".Junk" / "new"
    for _ in range(100):
        if junk.exists() and any(junk.iterdir()):
            break
        time.sleep(0.05)
    (path,) = junk.iterdir()
    assert b"dmarc=fail" in path.read_bytes()
    assert mta.messages("alice") == []  # not in the inbox


def test_unknown_reverse_name_is_refused_with_a_4xx(world) -> None:  # type: ignore[no-untyped-def]
    mta, _, _ = world
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        _send(mta, NAMELESS, "carol@sender.test", _message("carol@sender.test", "nameless"))
    code, text = refused.value.recipients["alice@example.test"]
    assert code == 450 and b"cannot find your reverse hostname" in text


def test_own_mail_is_dkim_signed(world) -> None:  # type: ignore[no-untyped-def]
    mta, _, own_key = world
    content = _message("bob@example.test", "outgoing")
    _send(mta, HOST, "bob@example.test", content)  # $mynetworks: our own mail
    (body,) = mta.wait_for_messages("alice", 1)
    assert b"DKIM-Signature:" in body
    assert b"Authentication-Results" not in body  # our own mail is signed, not checked
    record = txt_record(own_key).encode()

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"sel._domainkey.example.test."
        return record

    crlf = body.replace(b"\n", b"\r\n")
    assert dkim.verify(crlf, dnsfunc=dnsfunc)


def test_mail_from_sendmail_is_signed_too(world) -> None:  # type: ignore[no-untyped-def]
    from test_sendmail import sendmail

    mta, _, own_key = world
    content = b"From: www@example.test\nTo: alice@example.test\nSubject: from php\n\nhello\n"
    done = sendmail(["-C", str(mta.dir), "-f", "www@example.test", "-t", "-i"], content)
    assert done.returncode == 0, done.stderr
    (body,) = mta.wait_for_messages("alice", 1)
    record = txt_record(own_key).encode()
    assert dkim.verify(body.replace(b"\n", b"\r\n"), dnsfunc=lambda name, timeout=5: record)


def test_fresh_install_signs_with_its_own_key_and_prints_the_record(mta: Mta) -> None:
    key_file = mta.data / "dkim" / "example.test" / "ironpost.private"
    assert key_file.exists() and key_file.stat().st_mode & 0o777 == 0o600
    _send(mta, HOST, "bob@example.test", _message("bob@example.test", "auto"))
    (body,) = mta.wait_for_messages("alice", 1)
    assert b"s=ironpost" in body and b"d=example.test" in body
    records = mta.cli("dns", "records")
    assert records.returncode == 0, records.stderr
    zone = records.stdout
    assert "ironpost._domainkey.example.test." in zone
    # The published record verifies the signature the server made.
    start = zone.index("ironpost._domainkey.example.test.")
    value = "".join(zone[start:].split("(", 1)[1].split(")", 1)[0].split('"')[1::2])

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        return value.encode()

    assert dkim.verify(body.replace(b"\n", b"\r\n"), dnsfunc=dnsfunc)


def test_forwarded_mail_is_arc_sealed(world) -> None:  # type: ignore[no-untyped-def]
    mta, signer, own_key = world
    content = _message("carol@sender.test", "forwarded")
    with smtplib.SMTP(HOST, mta.port, timeout=30, source_address=(CLEAN, 0)) as c:
        c.ehlo("mx.sender.test")
        c.sendmail("carol@sender.test", ["far@example.test"], signer.sign(content) + content)
    (relayed,) = mta.sink.wait_for_messages(1)
    assert b"ARC-Seal: i=1; cv=none; a=rsa-sha256; d=example.test; s=sel;" in relayed
    assert b"ARC-Authentication-Results: i=1; mail.example.test;" in relayed
    # dkimpy, an implementation we did not write, validates the chain we started.
    records = {b"sel._domainkey.example.test.": txt_record(own_key).encode()}
    start = relayed.index(b"ARC-Seal:")
    message = relayed[start:].replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    cv, _, reason = dkim.arc_verify(message, dnsfunc=lambda name, timeout=5: records.get(name))
    assert cv == b"pass", reason
