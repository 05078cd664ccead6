"""Zone-file and JSON rendering, checked by parsing the text back with dnspython."""

from __future__ import annotations

import ipaddress
import json

import dns.rdatatype
import dns.zone
from hypothesis import given, settings
from hypothesis import strategies as st

from ironpost.deliverability import (
    DkimPublicKey,
    DomainRecords,
    Record,
    RecordOptions,
    RecordSet,
    build_records,
    render_fragment,
    render_json,
    render_zone,
)
from ironpost.deliverability.zone import as_dict, quote, split_txt

SOA = (
    "test. 3600 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 300\ntest. 3600 IN NS ns.test.\n"
)
LONG_KEY = "v=DKIM1; k=rsa; p=" + "A" * 392 + "IDAQAB"  # an RSA-2048 record's length


def record_set(**kw: object) -> RecordSet:
    base: dict[str, object] = {
        "hostname": "mail.example.test",
        "domains": ("example.test", "other.test"),
        "addresses": (ipaddress.ip_address("8.8.4.4"),),
        "relayhost": "[relay.test]",
    }
    base.update(kw)
    keys = [DkimPublicKey("example.test", "sel", LONG_KEY)]
    return build_records(RecordOptions(**base), keys)  # type: ignore[arg-type]


def parse(text: str) -> dns.zone.Zone:
    """The text as a zone under ``test.``; raises if anything does not parse."""
    return dns.zone.from_text(SOA + text, origin="test.", relativize=False, check_origin=True)


def rrset_values(zone: dns.zone.Zone) -> set[tuple[str, str, str]]:
    out = set()
    for name, node in zone.nodes.items():
        for rdataset in node.rdatasets:
            rtype = dns.rdatatype.to_text(rdataset.rdtype)
            if rtype in ("SOA", "NS"):
                continue
            for rdata in rdataset:
                txt = rtype == "TXT"
                value = b"".join(rdata.strings).decode() if txt else rdata.to_text()
                out.add((name.to_text(), rtype, value))
    return out


def test_the_whole_output_parses_to_exactly_the_expected_records() -> None:
    rs = record_set()
    text = render_zone(rs)
    zone = parse(text)
    expected = {(r.name, r.type, r.value) for r in rs.expected() if r.type != "PTR"}
    assert rrset_values(zone) == expected
    assert "$ORIGIN" not in text and "$TTL" not in text
    for name, node in zone.nodes.items():
        assert name.is_absolute()
        for rdataset in node.rdatasets:
            if dns.rdatatype.to_text(rdataset.rdtype) not in ("SOA", "NS"):
                assert rdataset.ttl == rs.ttl


def test_each_fragment_stands_alone() -> None:
    rs = record_set(ttl=900)
    for z in rs.zones:
        zone = parse(render_fragment(z, rs.ttl))
        assert rrset_values(zone) == {(r.name, r.type, r.value) for r in z.records}


def test_long_txt_is_split_into_255_octet_strings() -> None:
    zone = parse(render_zone(record_set()))
    rdataset = zone.find_rdataset("sel._domainkey.example.test.", "TXT")
    (rdata,) = rdataset
    assert [len(s) for s in rdata.strings] == [255, len(LONG_KEY) - 255]
    assert b"".join(rdata.strings).decode() == LONG_KEY


def test_ptr_mta_sts_and_warnings_are_comments_only() -> None:
    rs = record_set()
    text = render_zone(rs)
    assert "; ask the provider of each address to publish:" in text
    assert "; 4.4.8.8.in-addr.arpa. 3600 IN PTR mail.example.test." in text
    assert ";\tversion: STSv1" in text and ";\tmx: mail.example.test" in text
    assert "https://mta-sts.other.test/.well-known/mta-sts.txt" in text
    assert "; mta-sts.example.test. 3600 IN CNAME <your web server>." in text
    assert "; NOTE: relayhost = [relay.test]" in text
    zone = parse(text)
    assert all(dns.rdatatype.to_text(rds.rdtype) != "PTR" for _, rds in zone.iterate_rdatasets())


def test_a_newline_in_a_note_cannot_make_a_record() -> None:
    evil = DomainRecords(
        "example.test",
        (Record("example.test.", "TXT", "v=spf1 -all", "line one\nevil.test. 1 IN A 1.2.3.4"),),
        notes=("x\nbad.test. 1 IN A 1.2.3.4",),
    )
    text = render_fragment(evil, 60)
    assert rrset_values(parse(text)) == {("example.test.", "TXT", "v=spf1 -all")}


def test_quote_escapes() -> None:
    assert quote(b'a"b\\c') == '"a\\"b\\\\c"'
    assert quote("é".encode()) == '"\\195\\169"'
    assert quote(b"tab\there") == '"tab\\009here"'
    assert split_txt("") == [b""]


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=700))
def test_any_txt_value_round_trips(value: str) -> None:
    chunks = split_txt(value)
    assert all(len(c) <= 255 for c in chunks) and b"".join(chunks) == value.encode()
    z = DomainRecords("example.test", (Record("x.example.test.", "TXT", value),))
    zone = parse(render_fragment(z, 60))
    (rdata,) = zone.find_rdataset("x.example.test.", "TXT")
    assert b"".join(rdata.strings) == value.encode()


def test_json_carries_the_same_records() -> None:
    rs = record_set()
    data = json.loads(render_json(rs))
    assert data == as_dict(rs)
    assert data["hostname"] == "mail.example.test."
    assert data["addresses"] == ["8.8.4.4"]
    flat = [(r["name"], r["type"], r["value"]) for d in data["domains"] for r in d["records"]]
    flat += [(r["name"], r["type"], r["value"]) for r in data["ptr"]]
    assert flat == [(r.name, r.type, r.value) for r in rs.expected()]
    example = data["domains"][0]
    assert example["mta_sts"]["id"] in {
        r["value"].rpartition("=")[2] for r in example["records"] if "_mta-sts" in r["name"]
    }
    assert example["mta_sts"]["policy"].endswith("max_age: 604800\r\n")
    assert all(r["ttl"] == 3600 for d in data["domains"] for r in d["records"])


def test_a_host_only_fragment_has_no_mta_sts() -> None:
    rs = record_set(hostname="mx.provider.test")
    data = as_dict(rs)
    assert data["domains"][-1]["domain"] == "mx.provider.test"  # type: ignore[index]
    assert data["domains"][-1]["mta_sts"] is None  # type: ignore[index]
    assert "publish these in its zone" in render_zone(rs)
    zone = parse(render_zone(rs))
    assert zone.find_rdataset("mx.provider.test.", "A")
