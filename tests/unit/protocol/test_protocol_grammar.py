"""Envelope grammar: paths (RFC 5321/6531) and ESMTP parameters."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ironpost.protocol import AddressError, ParamError, Path, replies
from ironpost.protocol.grammar import (
    MailParams,
    RcptParams,
    parse_mail_params,
    parse_path,
    parse_rcpt_params,
    xtext_decode,
)

GOOD = [
    # text, smtputf8, local, domain, route
    ("<user@example.com>", False, "user", "example.com", ()),
    ("user@example.com", False, "user", "example.com", ()),  # bare, Postfix-tolerated
    ("<User@Example.COM>", False, "User", "Example.COM", ()),  # case kept
    ("<user@example.com.>", False, "user", "example.com", ()),  # one trailing dot stripped
    ('<"a b"@x.example>', False, "a b", "x.example", ()),
    ('<"user@remote"@x.example>', False, "user@remote", "x.example", ()),
    ('<"a\\"b"@x.example>', False, 'a"b', "x.example", ()),
    ("<user@[192.0.2.1]>", False, "user", "[192.0.2.1]", ()),
    ("<user@[IPv6:2001:db8::1]>", False, "user", "[IPv6:2001:db8::1]", ()),
    (
        "<@a.example,@b.example:user@c.example>",
        False,
        "user",
        "c.example",
        ("a.example", "b.example"),
    ),
    ("<user%other@x.example>", False, "user%other", "x.example", ()),
    ("<host!user@x.example>", False, "host!user", "x.example", ()),
    ("<a.b+tag@sub_d.x.example>", False, "a.b+tag", "sub_d.x.example", ()),
    ("<jörg@bücher.example>", True, "jörg", "bücher.example", ()),
    ("<用户@例子.广告>", True, "用户", "例子.广告", ()),
]


@pytest.mark.parametrize(("text", "utf8", "local", "domain", "route"), GOOD)
def test_good_paths(text: str, utf8: bool, local: str, domain: str, route: tuple[str, ...]) -> None:
    p = parse_path(text, smtputf8=utf8)
    assert (p.local, p.domain, p.route, p.null) == (local, domain, route, False)
    assert p.is_utf8 == (not text.isascii())


BAD = [
    ("<user@>", replies.BAD_ADDRESS_SYNTAX),  # empty domain
    ("<user>", replies.BAD_ADDRESS_SYNTAX),  # missing @
    ("<@example.com>", replies.BAD_ADDRESS_SYNTAX),
    ("<user@exa mple.com>", replies.BAD_ADDRESS_SYNTAX),
    ("user name@example.com", replies.BAD_ADDRESS_SYNTAX),  # bare with a space
    ('"a b"@example.com', replies.BAD_ADDRESS_SYNTAX),  # bare with a space, even quoted
    ("<user@example.com", replies.BAD_ADDRESS_SYNTAX),
    ("<user(comment)@example.com>", replies.BAD_ADDRESS_SYNTAX),  # RFC 5322 comment
    ("<user@example.com (comment)>", replies.BAD_ADDRESS_SYNTAX),
    ("<a..b@example.com>", replies.BAD_ADDRESS_SYNTAX),
    ("<.a@example.com>", replies.BAD_ADDRESS_SYNTAX),
    ("<a.@example.com>", replies.BAD_ADDRESS_SYNTAX),
    ("<user@-bad.example>", replies.BAD_ADDRESS_SYNTAX),
    ("<user@example..com>", replies.BAD_ADDRESS_SYNTAX),
    ("<user@[300.1.1.1]>", replies.BAD_ADDRESS_SYNTAX),
    ("<user@[IPv6:2001:db8::zz]>", replies.BAD_ADDRESS_SYNTAX),
    ("<user@[IPv6:fe80::1%eth0]>", replies.BAD_ADDRESS_SYNTAX),
    ("<user@[tag:whatever]>", replies.BAD_ADDRESS_SYNTAX),
    ("<user@" + "a" * 64 + ".example>", replies.BAD_ADDRESS_SYNTAX),  # 64-octet label
    ("<" + "a" * 65 + "@example.com>", replies.LOCAL_PART_TOO_LONG),
    ("<jörg@example.com>", replies.UTF8_NOT_NEGOTIATED),
    ("<user@bücher.example>", replies.UTF8_NOT_NEGOTIATED),
    ("", replies.BAD_ADDRESS_SYNTAX),
    ("<a\x00b@example.com>", replies.BAD_ADDRESS_SYNTAX),
]


@pytest.mark.parametrize(("text", "reply"), BAD)
def test_bad_paths(text: str, reply: replies.Reply) -> None:
    with pytest.raises(AddressError) as info:
        parse_path(text, smtputf8=False)
    assert info.value.reply == reply


def test_length_boundaries() -> None:
    assert parse_path("<" + "a" * 64 + "@example.com>", smtputf8=False).local == "a" * 64
    assert len(("<" + "a" * 64 + "@example.com>").encode()) < 256
    local = "é" * 33  # 66 octets, 33 characters: octets count
    with pytest.raises(AddressError) as info:
        parse_path(f"<{local}@example.com>", smtputf8=True)
    assert info.value.reply == replies.LOCAL_PART_TOO_LONG
    domain = ".".join(["b" * 61] * 4)  # 247 octets
    path = f"<abcdef@{domain}>"
    assert len(path) == 256 and parse_path(path, smtputf8=False).domain == domain
    assert parse_path(path[1:-1], smtputf8=False).local == "abcdef"  # bare: brackets count
    with pytest.raises(AddressError) as info:
        parse_path(f"<abcdefg@{domain}>", smtputf8=False)  # 257
    assert info.value.reply == replies.ADDRESS_TOO_LONG


def test_null_path_and_postmaster() -> None:
    p = parse_path("<>", smtputf8=False)
    assert p.null and p.address == "" and str(p) == "<>"
    pm = parse_path("<Postmaster>", smtputf8=False, allow_postmaster=True)
    assert (pm.local, pm.domain, pm.address) == ("Postmaster", "", "Postmaster")
    with pytest.raises(AddressError):
        parse_path("<bob>", smtputf8=False, allow_postmaster=True)


def test_canonical_address_quotes_only_when_needed() -> None:
    assert parse_path('<"plain"@x.example>', smtputf8=False).address == "plain@x.example"
    assert parse_path('<"a b"@x.example>', smtputf8=False).address == '"a b"@x.example'
    assert parse_path('<"a\\\\b"@x.example>', smtputf8=False).address == '"a\\\\b"@x.example'
    assert parse_path('<""@x.example>', smtputf8=False).address == '""@x.example'
    p = parse_path("<@r.example:U@Ex.COM>", smtputf8=False)
    assert p.address == "U@Ex.COM" and p.domain_lower == "ex.com"


# -- property tests -----------------------------------------------------------------

_chars = st.characters(codec="utf-8")
_path_like = st.one_of(
    st.text(_chars, max_size=80),
    st.builds(
        lambda a, b, q: f'<"{a}"@{b}>' if q else f"<{a}@{b}>",
        st.text(_chars, max_size=30),
        st.text(_chars, max_size=30),
        st.booleans(),
    ),
    st.from_regex(r"<[a-z.\"\\ @%!\[\]:0-9]{0,40}>", fullmatch=True),
)


@settings(max_examples=300, deadline=None)
@given(_path_like, st.booleans())
def test_parse_path_only_raises_address_error(text: str, utf8: bool) -> None:
    try:
        p = parse_path(text, smtputf8=utf8)
    except AddressError as e:
        assert 500 <= e.reply.code < 600
        return
    again = parse_path(f"<{p.address}>", smtputf8=utf8)
    assert (again.local, again.domain, again.null) == (p.local, p.domain, p.null)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(_chars, max_size=20), max_size=5))
def test_params_only_raise_param_error(tokens: list[str]) -> None:
    for parse in (parse_mail_params, parse_rcpt_params):
        try:
            parse(tokens)
        except ParamError as e:
            assert e.reply.code in (501, 555)


# -- ESMTP parameters ---------------------------------------------------------------


def test_mail_params() -> None:
    p = parse_mail_params(
        ["size=1000", "BODY=8bitmime", "SMTPUTF8", "RET=hdrs", "ENVID=QQ+2B14", "AUTH=<>"]
    )
    assert p == MailParams(1000, "8BITMIME", True, "HDRS", "QQ+14", "<>")
    assert parse_mail_params([]) == MailParams()


@pytest.mark.parametrize(
    ("tokens", "code"),
    [
        (["SIZE=abc"], 501),
        (["SIZE="], 501),
        (["SIZE"], 501),
        (["BODY=9BIT"], 501),
        (["SMTPUTF8=yes"], 501),
        (["RET=ALL"], 501),
        (["ENVID=a+zz"], 501),
        (["ENVID=a+0D+0A"], 501),  # decodes to control characters
        (["ENVID=" + "a" * 101], 501),
        (["SIZE=1", "size=2"], 501),
        (["X-FOO=1"], 555),
        (["-bad"], 501),
    ],
)
def test_bad_mail_params(tokens: list[str], code: int) -> None:
    with pytest.raises(ParamError) as info:
        parse_mail_params(tokens)
    assert info.value.reply.code == code


def test_unsupported_option_text() -> None:
    with pytest.raises(ParamError) as info:
        parse_mail_params(["X-Foo=1"])
    assert info.value.reply == replies.Reply(555, "5.5.4", "Unsupported option: X-Foo")


def test_rcpt_params() -> None:
    p = parse_rcpt_params(["NOTIFY=success,delay", "ORCPT=rfc822;a+2Bb@x.example"])
    assert p == RcptParams(("SUCCESS", "DELAY"), "rfc822;a+b@x.example")
    assert parse_rcpt_params(["notify=never"]).notify == ("NEVER",)
    for bad in (["NOTIFY=NEVER,SUCCESS"], ["NOTIFY=SOMETIMES"], ["NOTIFY="], ["ORCPT=a@b"]):
        with pytest.raises(ParamError) as info:
            parse_rcpt_params(bad)
        assert info.value.reply.code == 501
    with pytest.raises(ParamError) as info:
        parse_rcpt_params(["SIZE=1"])
    assert info.value.reply.code == 555


def test_xtext() -> None:
    assert xtext_decode("a+3Db") == "a=b"
    with pytest.raises(ParamError):
        xtext_decode("a=b")


def test_path_is_frozen() -> None:
    p = Path("a", "b")
    with pytest.raises(AttributeError):
        p.local = "x"  # type: ignore[misc]
