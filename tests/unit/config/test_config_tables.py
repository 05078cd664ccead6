"""Lookup tables: every type, read once at open, Postfix file formats."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ironpost.config.tables import TableError, open_table


def _file(tmp_path: Path, text: str, name: str = "t") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_inline_is_case_insensitive() -> None:
    t = open_table("inline:{ A@X.org=one, b=two, { c = with spaces } }")
    assert t.spec == "inline:{ A@X.org=one, b=two, { c = with spaces } }"
    assert t.lookup("a@x.ORG") == "one"
    assert t.lookup("c") == "with spaces"
    assert t.lookup("zz") is None
    with pytest.raises(TableError, match="element 1 is not key=value"):
        open_table("inline:{ novalue }")
    # The error never echoes the table's text: it may hold passwords.
    with pytest.raises(TableError) as refused:
        open_table("inline:{ [relay.test]:587 user:s3cret, oops }")
    assert "s3cret" not in str(refused.value)


@pytest.mark.parametrize("kind", ["texthash", "hash", "lmdb", "btree"])
def test_text_source_tables(tmp_path: Path, kind: str) -> None:
    path = _file(
        tmp_path,
        "# comment\nUser@Example.org  alice@x.org,\n  bob@x.org\n\ndup first\ndup second\n",
    )
    t = open_table(f"{kind}:{path}")
    assert t.lookup("user@example.ORG") == "alice@x.org, bob@x.org"
    assert t.lookup("dup") == "first"  # postmap keeps the first
    assert t.lookup("nobody") is None


def test_text_table_bad_line_and_missing_file(tmp_path: Path) -> None:
    path = _file(tmp_path, "ok value\nlonely\n")
    with pytest.raises(TableError, match=rf"{path}:2: expected format: key whitespace value"):
        open_table(f"hash:{path}")
    with pytest.raises(TableError, match="cannot open"):
        open_table(f"hash:{tmp_path}/missing")


def test_cidr_v4_v6_first_match(tmp_path: Path) -> None:
    path = _file(
        tmp_path,
        "192.0.2.0/24 REJECT net\n192.0.2.7 OK\n"
        "2001:db8::/32 v6 net\n[2001:db8::1]/128 never (first match)\n"
        "!10.0.0.0/8 not ten\n",
    )
    t = open_table(f"cidr:{path}")
    assert t.lookup("192.0.2.7") == "REJECT net"
    assert t.lookup("2001:db8::1") == "v6 net"
    assert t.lookup("2001:db9::1") is None
    assert t.lookup("10.1.2.3") is None
    assert t.lookup("11.1.2.3") == "not ten"
    assert t.lookup("::ffff:192.0.2.9") == "REJECT net"
    assert t.lookup("not-an-ip") is None


@pytest.mark.parametrize("line", ["192.0.2.1/24 x", "300.0.0.0/8 x", "10.0.0.0/8"])
def test_cidr_bad_lines(tmp_path: Path, line: str) -> None:
    path = _file(tmp_path, f"# c\n{line}\n")
    with pytest.raises(TableError, match=rf"{path}:2: "):
        open_table(f"cidr:{path}")


def test_regexp_with_substitution_negation_and_if(tmp_path: Path) -> None:
    path = _file(
        tmp_path,
        "/^(.*)@old\\.example$/  $1@new.example\n"
        "/^UPPER/ case-insensitive by default\n"
        "/^Exact$/i case-sensitive\n"
        "if /@corp\\./\n!/^admin@/ not admin\nendif\n"
        "!/x/ no x\n",
    )
    t = open_table(f"regexp:{path}")
    assert t.lookup("joe@old.example") == "joe@new.example"
    assert t.lookup("upper-case") == "case-insensitive by default"
    assert t.lookup("exact") is None and t.lookup("Exact") == "case-sensitive"
    assert t.lookup("bob@corp.example") == "not admin"
    assert t.lookup("admin@corp.example") is None
    assert t.lookup("yyy") == "no x"
    assert open_table(f"pcre:{path}").lookup("joe@old.example") == "joe@new.example"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("/(unclosed/ x\n", "bad regular expression"),
        ("/a/ $2\n", "out of range"),
        ("/a/q x\n", "unknown regexp flag"),
        ("/a x\n", "missing closing delimiter"),
        ("/a/\n", "missing result"),
        ("if /a/\n/b/ c\n", "missing endif"),
        ("endif\n", "endif without if"),
    ],
)
def test_regexp_errors(tmp_path: Path, text: str, message: str) -> None:
    path = _file(tmp_path, text)
    with pytest.raises(TableError, match=message):
        open_table(f"regexp:{path}")


def test_static_union_proxy_unix() -> None:
    assert open_table("static:{ a b }").lookup("anything") == "a b"
    u = open_table("unionmap:{ inline:{ k=1 }, static:2 }")
    assert u.lookup("k") == "1,2" and u.lookup("z") == "2"
    assert open_table("proxy:inline:{ a=b }").lookup("A") == "b"
    root = open_table("unix:passwd.byname").lookup("root")
    assert root is not None and root.startswith("root:")
    with pytest.raises(TableError, match="unsupported table type"):
        open_table("mysql:/etc/x.cf")


_key = st.from_regex(r"[A-Za-z0-9@._+-]{1,20}", fullmatch=True)


@given(st.dictionaries(_key.map(str.lower), _key, max_size=10))
def test_inline_roundtrip(mapping: dict[str, str]) -> None:
    spec = "inline:{ " + ", ".join(f"{k}={v}" for k, v in mapping.items()) + " }"
    t = open_table(spec)
    for k, v in mapping.items():
        assert t.lookup(k.upper()) == v
