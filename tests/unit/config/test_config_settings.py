"""Settings: the table, typed validation, unknown names, overrides, the embedded default."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from ironpost.config import PARAMS, ConfigError, LoadedConfig, load
from ironpost.config.params import classify, render_table_markdown
from ironpost.config.restrictions import RestrictionError, parse_restrictions

Loader = Callable[..., LoadedConfig]


def _error(load_main: Loader, main: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_main(main)
    return str(info.value)


def test_embedded_default_loads_clean(tmp_path: Path) -> None:
    cfg = load(None, data_dir=tmp_path)
    assert cfg.diagnostics == ()
    s = cfg.settings
    assert s.raw("myhostname") == "mail.example.test"
    assert s.raw("virtual_mailbox_base") == f"{tmp_path}/mail"
    assert s.raw("smtpd_banner") == "mail.example.test ESMTP ironpost"
    (mailboxes,) = s.tables("virtual_mailbox_maps")
    assert mailboxes.lookup("DEMO@example.test") == "example.test/demo/"
    assert s.tables("virtual_alias_maps")[0].lookup("abuse@example.test") == (
        "postmaster@example.test"
    )
    assert [(x.host, x.port, x.role) for x in cfg.services] == [
        ("127.0.0.1", 2525, "smtp"),
        ("127.0.0.1", 2587, "submission"),
        ("127.0.0.1", 2465, "submissions"),
    ]
    assert cfg.services[2].settings.boolean("smtpd_tls_wrappermode") is True
    assert cfg.settings.boolean("smtpd_tls_wrappermode") is False


def test_embedded_data_dir_from_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("IRONPOST_DATA_DIR", str(tmp_path / "d"))
    assert load(None).settings.raw("queue_directory") == f"{tmp_path}/d/queue"
    monkeypatch.delenv("IRONPOST_DATA_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "x"))
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert load(None).settings.raw("data_directory") == f"{tmp_path}/x/ironpost"
    # root: every command (run, passwd, stop) agrees on the system location
    monkeypatch.setattr("os.geteuid", lambda: 0)
    assert load(None).settings.raw("data_directory") == "/var/lib/ironpost"


def test_every_default_is_valid_and_typed(load_main: Loader) -> None:
    s = load_main("myhostname = h.example.org\n").settings
    for name, p in PARAMS.items():
        if p.kind in ("int", "size"):
            s.integer(name)
        elif p.kind == "bool":
            s.boolean(name)
        elif p.kind == "time":
            s.seconds(name)
        else:
            s.words(name) if p.kind != "str" else s.text(name)


def test_postfix_defaults_and_hardened_defaults(load_main: Loader) -> None:
    s = load_main("myhostname = mx.a.example\n").settings
    assert s.raw("mydomain") == "a.example"
    assert s.words("mydestination") == ("mx.a.example", "localhost.a.example", "localhost")
    assert s.words("mynetworks") == ("127.0.0.0/8", "[::1]/128")
    assert s.raw("relay_domains") == ""
    assert s.seconds("smtpd_timeout") == 300.0
    assert s.seconds("maximal_queue_lifetime") == 5 * 86400
    assert s.seconds("delay_warning_time") == 4 * 3600
    assert s.integer("message_size_limit") == 10240000
    assert s.boolean("smtpd_helo_required") is True
    assert s.words("smtpd_relay_restrictions")[-1] == "reject_unauth_destination"
    assert s.words("smtpd_forbid_bare_newline_exclusions") == s.words("mynetworks")
    assert s.seconds("smtpd_greet_pause") == 1.0
    assert s.integer("smtpd_connection_limit") == 20000
    assert not s.is_explicit("mydomain") and s.is_explicit("myhostname")
    with pytest.raises(KeyError):
        s.raw("no_such_parameter")
    with pytest.raises(TypeError):
        s.integer("smtpd_banner")


def test_time_units_per_parameter(load_main: Loader) -> None:
    s = load_main(
        "myhostname = h.x.org\nmaximal_queue_lifetime = 2\nsmtpd_timeout = 2m\n"
        "delay_warning_time = 1\n"
    ).settings
    assert s.seconds("maximal_queue_lifetime") == 2 * 86400
    assert s.seconds("smtpd_timeout") == 120
    assert s.seconds("delay_warning_time") == 3600


def test_expansion_loop_names_parameter(load_main: Loader) -> None:
    msg = _error(load_main, "myhostname = h.x.org\nmyorigin = $mydomain\nmydomain = $myorigin\n")
    assert "main.cf:2: error: myorigin: parameter expansion loop" in msg


def test_unknown_names(load_main: Loader) -> None:
    cfg = load_main(
        "myhostname = h.x.org\nsmtp_sasl_auth_cache_name = btree:/tmp/c\n"
        "pipe_destination_concurrency_limit = 2\n"
        "my_rules = permit_mynetworks\nsmtpd_client_restrictions = $my_rules\n"
    )
    (w1,) = [d for d in cfg.warnings if "smtp_sasl_auth_cache_name" in d.message]
    assert w1.line == 2 and "not implemented by ironpost; ignored" in w1.message
    assert not any("my_rules" in d.message for d in cfg.diagnostics)  # referenced: fine
    (w2,) = [d for d in cfg.diagnostics if "pipe_destination" in d.message]
    assert w2.severity == "warning" and w2.line == 3
    msg = _error(load_main, "myhostname = h.x.org\nsmtpd_recipent_restrictions = permit\n")
    assert "main.cf:2: error: unknown parameter 'smtpd_recipent_restrictions'" in msg
    assert "did you mean smtpd_recipient_restrictions?" in msg


def test_classify() -> None:
    assert classify("smtpd_banner") == "ironpost"
    assert classify("smtp_sasl_auth_cache_name") == "postfix"
    assert classify("mytransport_destination_concurrency_limit") == "postfix"
    assert classify("made_up_thing") == "unknown"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("message_size_limit = 10x", "message_size_limit = 10x: not a number"),
        ("smtpd_helo_required = maybe", "smtpd_helo_required = maybe: not yes or no"),
        ("smtpd_timeout = 5 minutes", "smtpd_timeout = 5 minutes: not a time"),
        ("smtpd_recipient_limit = 0", "must be at least 1"),
        ("defer_code = 550", "must be at most 499"),
        ("smtpd_tls_security_level = sometimes", "must be one of"),
        ("mynetworks = 10.0.0.1/8", "did you mean 10.0.0.0/8?"),
        ("inet_protocols = ipv5", "expected all, ipv4, ipv6"),
        ("smtpd_client_restrictions = permit_everyone", "unknown restriction 'permit_everyone'"),
        ("smtpd_client_restrictions = reject_rbl_client", "reject_rbl_client needs an argument"),
        ("smtpd_client_restrictions = check_client_access permit", "needs a table"),
        ("virtual_alias_maps = /etc/postfix/virtual", "is not a lookup table"),
        ("virtual_alias_maps = nosuch:/x", "unsupported table type"),
    ],
)
def test_typed_validation_errors(load_main: Loader, line: str, expected: str) -> None:
    msg = _error(load_main, f"myhostname = h.x.org\n{line}\n")
    assert "main.cf:2: error: " in msg and expected in msg


def test_missing_table_file_names_parameter_and_line(load_main: Loader, tmp_path: Path) -> None:
    msg = _error(load_main, f"myhostname = h.x.org\n\nalias_maps = hash:{tmp_path}/nope\n")
    assert "main.cf:3: error: alias_maps: hash:" in msg and "cannot open" in msg


def test_relative_table_paths_are_relative_to_config_dir(load_main: Loader) -> None:
    cfg = load_main(
        "myhostname = h.x.org\nvirtual_alias_maps = texthash:virtual\n", virtual="a@x.org b@y.org\n"
    )
    assert cfg.settings.tables("virtual_alias_maps")[0].lookup("A@X.ORG") == "b@y.org"


def test_restriction_classes_and_tables_in_lists(load_main: Loader) -> None:
    cfg = load_main(
        "myhostname = h.x.org\nsmtpd_restriction_classes = strict\n"
        "strict = reject\nsmtpd_recipient_restrictions = strict, "
        "inline:{ a@x.org=OK }, check_sender_access inline:{ b=REJECT }\n"
    )
    assert cfg.diagnostics == ()


def test_parse_restrictions() -> None:
    got = parse_restrictions(
        [
            "permit_mynetworks",
            "reject_rbl_client",
            "zen.spamhaus.org",
            "check_client_access",
            "cidr:/x",
            "hash:/y",
            "permit",
        ]
    )
    assert got == (
        ("permit_mynetworks", ()),
        ("reject_rbl_client", ("zen.spamhaus.org",)),
        ("check_client_access", ("cidr:/x",)),
        ("hash:/y", ()),
        ("permit", ()),
    )
    with pytest.raises(RestrictionError, match="did you mean permit_mynetworks"):
        parse_restrictions(["permit_mynetwork"])
    with pytest.raises(RestrictionError, match="needs an argument"):
        parse_restrictions(["reject_rbl_client", "permit"])


def test_override(load_main: Loader) -> None:
    s = load_main("myhostname = h.x.org\nsmtpd_banner = $myhostname hi\n").settings
    o = s.override({"myhostname": "other.x.org", "smtpd_tls_wrappermode": "yes"}, "master.cf:4")
    assert o.raw("smtpd_banner") == "other.x.org hi"
    assert o.boolean("smtpd_tls_wrappermode") and not s.boolean("smtpd_tls_wrappermode")
    assert s.raw("smtpd_banner") == "h.x.org hi"
    with pytest.raises(ConfigError, match=r"master.cf:4: error: smtpd_timeout = x: not a time"):
        s.override({"smtpd_timeout": "x"}, "master.cf:4")


def test_settings_are_frozen(load_main: Loader) -> None:
    s = load_main("myhostname = h.x.org\n").settings
    with pytest.raises(AttributeError):
        s._values = {}  # type: ignore[misc]


def test_duplicate_entry_warns(load_main: Loader) -> None:
    cfg = load_main("myhostname = a.x.org\nmyhostname = b.x.org\n")
    assert cfg.settings.raw("myhostname") == "b.x.org"
    assert [d.line for d in cfg.warnings] == [2]


def test_render_table_markdown_lists_every_parameter() -> None:
    md = render_table_markdown()
    assert all(f"`{name}`" in md for name in PARAMS)
    assert "**ironpost-own.**" in md


def test_docs_table_is_current() -> None:
    docs = Path(__file__).resolve().parents[3] / "docs" / "configuration.md"
    assert render_table_markdown() in docs.read_text()


def test_a_postgresql_queue_needs_its_database_and_a_node_name(load_main: Loader) -> None:
    msg = _error(load_main, "myhostname = h.x.org\nqueue_engine = postgresql\n")
    assert "main.cf:2: error: queue_engine = postgresql needs queue_database_url" in msg
    msg = _error(
        load_main,
        "queue_engine = postgresql\nqueue_database_url = mysql://db/q\nqueue_node_name =\n",
    )
    assert "main.cf:2: error: queue_database_url: not a postgresql:// URL" in msg
    assert "main.cf:1: error: queue_engine = postgresql needs queue_node_name" in msg
    s = load_main(
        "myhostname = mx1.x.org\nqueue_engine = postgresql\n"
        "queue_database_url = postgresql://ironpost@db/q\n"
    ).settings
    assert s.text("queue_node_name") == "mx1.x.org"  # $myhostname by default
    assert _error(load_main, "queue_engine = oracle\n")  # one of sqlite, postgresql
