"""Client SMTP AUTH decisions: credential lookup order, mechanism choice under the security
options and the filter, failure texts, and the parameters (no sockets)."""

from __future__ import annotations

import pytest

from ironpost.config.settings import Settings, build_settings
from ironpost.config.syntax import Entry
from ironpost.config.tables import open_table
from ironpost.delivery.smtp_auth import (
    AuthDecision,
    Credentials,
    Defer,
    Login,
    Plain,
    SaslOptions,
    ScramSha256,
    Skip,
    Use,
    decide,
    failure,
    filter_mechanisms,
    find_credentials,
    lookup_keys,
    parse_mechanism_filter,
    parse_security_options,
)
from ironpost.delivery.smtp_session import SmtpOptions
from ironpost.protocol.replies import Reply

PEER = "relay.example[192.0.2.1]"
RELAY = "relay.example[192.0.2.1]:587"
MAP = open_table(
    "inline:{ relay.example=host:pw1, [relay.example]:587=bracket:pw2, example.com=dom:pw3 }"
)


def opts(**kw: object) -> SaslOptions:
    base: dict[str, object] = {"enable": True, "password_maps": (MAP,)}
    base.update(kw)
    return SaslOptions(**base)  # type: ignore[arg-type]


def run(
    offered: tuple[str, ...],
    *,
    tls: bool = False,
    keys: tuple[str, ...] = ("relay.example",),
    **kw: object,
) -> AuthDecision:
    return decide(opts(**kw), offered, tls=tls, keys=keys, peer=PEER, relay=RELAY)


# --- lookup ---------------------------------------------------------------------------


def test_lookup_keys_host_then_nexthop_as_written_then_domain() -> None:
    assert lookup_keys("relay.example", "[relay.example]:587", "relay.example") == (
        "relay.example",
        "[relay.example]:587",
    )
    assert lookup_keys("mx1.example.com", "example.com", "example.com") == (
        "mx1.example.com",
        "example.com",
    )
    assert lookup_keys("127.0.0.1", "[127.0.0.1]", "127.0.0.1") == ("127.0.0.1", "[127.0.0.1]")
    assert lookup_keys("mx.example", "", "example.com") == ("mx.example", "example.com")


def test_find_credentials_in_postfix_order() -> None:
    # The host name wins over the next hop as written, which wins over the domain.
    keys = lookup_keys("relay.example", "[relay.example]:587", "relay.example")
    assert find_credentials((MAP,), keys) == Credentials("host", "pw1")
    keys = lookup_keys("other.example", "[relay.example]:587", "relay.example")
    assert find_credentials((MAP,), keys) == Credentials("bracket", "pw2")
    keys = lookup_keys("mx9.example.com", "example.com", "example.com")
    assert find_credentials((MAP,), keys) == Credentials("dom", "pw3")
    assert find_credentials((MAP,), ("nowhere.example",)) is None


def test_each_key_in_every_map_before_the_next_key() -> None:
    first = open_table("inline:{ example.com=first:a }")
    second = open_table("inline:{ mx.example.com=second:b }")
    keys = lookup_keys("mx.example.com", "example.com", "example.com")
    assert find_credentials((first, second), keys) == Credentials("second", "b")


def test_credentials_split_at_the_first_colon_and_hide_the_password() -> None:
    c = Credentials.parse("user@example.com:pa:ss")
    assert (c.username, c.password) == ("user@example.com", "pa:ss")
    assert Credentials.parse("only-user") == Credentials("only-user", "")
    assert "pa:ss" not in repr(c) and "pa:ss" not in repr(Plain(c)) + repr(Login(c))
    assert "pa:ss" not in repr(ScramSha256(c)) + repr(Use(Plain(c)))


# --- the decision -------------------------------------------------------------------


def test_disabled_or_not_offered_or_no_credentials_skips() -> None:
    assert run(("PLAIN",), enable=False) == Skip()
    assert run((), tls=True) == Skip()
    assert run(("PLAIN",), tls=True, keys=("stranger.example",)) == Skip()


def test_noplaintext_on_a_plaintext_session_defers_without_auth() -> None:
    d = run(("PLAIN", "LOGIN"), keys=("relay.example",))
    assert isinstance(d, Defer) and d.dsn == "4.7.0"
    assert d.text == (
        f"SASL authentication failed; cannot authenticate to server {PEER}: no mechanism available"
    )


def test_tls_allows_plaintext_mechanisms_with_the_default_options() -> None:
    d = run(("LOGIN", "PLAIN"), tls=True, keys=("relay.example",))
    assert isinstance(d, Use) and isinstance(d.mechanism, Plain)
    d = run(("LOGIN",), tls=True, keys=("relay.example",))
    assert isinstance(d, Use) and d.mechanism.name == "LOGIN"


def test_tls_security_options_apply_on_tls() -> None:
    strict = frozenset({"noanonymous", "nodictionary"})
    d = run(("PLAIN",), tls=True, keys=("relay.example",), tls_security_options=strict)
    assert isinstance(d, Defer)
    # and security_options (not the TLS ones) apply in plaintext
    d = run(("PLAIN",), keys=("relay.example",), security_options=frozenset({"noanonymous"}))
    assert isinstance(d, Use)


def test_scram_is_preferred_and_allowed_in_plaintext() -> None:
    d = run(("PLAIN", "LOGIN", "SCRAM-SHA-256"), keys=("relay.example",))
    assert isinstance(d, Use) and d.mechanism.name == "SCRAM-SHA-256"


def test_unknown_mechanisms_only_is_no_mechanism_available() -> None:
    d = run(("GSSAPI", "NTLM"), tls=True, keys=("relay.example",))
    assert isinstance(d, Defer) and "no mechanism available" in d.text


def test_mechanism_filter_and_its_warning() -> None:
    d = run(("PLAIN", "LOGIN"), tls=True, keys=("relay.example",), mechanism_filter=("LOGIN",))
    assert isinstance(d, Use) and d.mechanism.name == "LOGIN" and d.warning is None
    d = run(("PLAIN", "LOGIN"), tls=True, keys=("relay.example",), mechanism_filter=("CRAM-MD5",))
    assert isinstance(d, Defer)
    assert d.text == (
        f"SASL authentication failed: server {PEER} offered no compatible authentication "
        "mechanisms for this type of connection security"
    )
    assert d.warning == f"warning: {RELAY} offered no supported AUTH mechanisms: 'PLAIN LOGIN'"
    # Without credentials the mail goes unauthenticated, but the warning is still logged.
    d = run(("PLAIN",), tls=True, keys=("nobody.example",), mechanism_filter=("LOGIN",))
    assert isinstance(d, Skip) and d.warning is not None


def test_filter_matching() -> None:
    offered = ("SCRAM-SHA-256", "PLAIN", "LOGIN")
    assert filter_mechanisms(offered, ()) == offered
    assert filter_mechanisms(offered, ("PLAIN", "LOGIN")) == ("PLAIN", "LOGIN")
    assert filter_mechanisms(offered, ("!PLAIN", "PLAIN", "LOGIN")) == ("LOGIN",)
    assert parse_mechanism_filter("f", ["plain", "!Login"]) == ("PLAIN", "!LOGIN")
    for bad in ("/etc/filter", "hash:/etc/filter", "!"):
        with pytest.raises(ValueError, match="f: "):
            parse_mechanism_filter("f", [bad])


def test_security_options_are_checked() -> None:
    assert parse_security_options("o", ["NoPlaintext", "noanonymous"]) == {
        "noplaintext",
        "noanonymous",
    }
    with pytest.raises(ValueError, match="o: unknown option 'noplain'"):
        parse_security_options("o", ["noplain"])


# --- failure texts ----------------------------------------------------------------------


def test_535_with_soft_bounce_defers_with_postfix_text() -> None:
    reply = Reply(535, "5.7.8", "Error: authentication failed: bad password")
    dsn, text, bounce = failure(reply, None, peer=PEER, soft_bounce=True)
    assert (dsn, bounce) == ("4.7.8", False)
    assert text == (
        f"SASL authentication failed; server {PEER} said: "
        "535 5.7.8 Error: authentication failed: bad password"
    )
    assert failure(reply, None, peer=PEER, soft_bounce=False)[::2] == ("5.7.8", True)


def test_other_failures() -> None:
    assert failure(Reply(535, None, "no"), None, peer=PEER, soft_bounce=True)[0] == "4.7.0"
    assert failure(Reply(454, "4.7.0", "later"), None, peer=PEER, soft_bounce=False)[::2] == (
        "4.7.0",
        False,
    )
    dsn, text, bounce = failure(
        Reply(501, None, "aborted"), "bad nonce", peer=PEER, soft_bounce=False
    )
    assert (dsn, bounce) == ("4.7.0", False)
    assert text == f"SASL authentication failed; cannot authenticate to server {PEER}: bad nonce"


# --- parameters -------------------------------------------------------------------------


def _settings(values: dict[str, str]) -> Settings:
    entries = [Entry(k, v, "main.cf", n) for n, (k, v) in enumerate(values.items(), 1)]
    settings, diags = build_settings(entries, base=None)
    assert not [d for d in diags if d.is_error], diags
    return settings


def test_defaults_are_postfix_defaults() -> None:
    o = SmtpOptions.from_settings(_settings({"myhostname": "mail.example.org"})).sasl
    assert o == SaslOptions()
    assert not o.enable and o.soft_bounce and o.password_maps == ()
    assert o.security_options == o.tls_security_options == {"noplaintext", "noanonymous"}


def test_options_from_settings_smtp_and_lmtp() -> None:
    s = _settings(
        {
            "myhostname": "mail.example.org",
            "smtp_sasl_auth_enable": "yes",
            "smtp_sasl_password_maps": "inline:{ [relay.example]:587=u:p }",
            "smtp_sasl_security_options": "noanonymous",
            "smtp_sasl_mechanism_filter": "plain, login",
            "smtp_sasl_auth_soft_bounce": "no",
            "lmtp_sasl_auth_enable": "yes",
        }
    )
    o = SmtpOptions.from_settings(s).sasl
    assert o.enable and not o.soft_bounce and o.mechanism_filter == ("PLAIN", "LOGIN")
    assert o.security_options == o.tls_security_options == {"noanonymous"}  # $smtp_sasl_...
    assert find_credentials(o.password_maps, ["[relay.example]:587"]) == Credentials("u", "p")
    lmtp = SmtpOptions.from_settings(s, lmtp=True).sasl
    assert lmtp.enable and lmtp.password_maps == () and lmtp.soft_bounce
