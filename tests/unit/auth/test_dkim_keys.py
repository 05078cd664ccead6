"""DKIM keys: generation (files, modes, opendkim-genkey's layout), records, signing table."""

from __future__ import annotations

import base64
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ironpost.auth.dkim_keys import (
    DkimKeyError,
    SigningKey,
    generate_key,
    load_signing_keys,
    read_private_key,
    txt_record,
    txt_strings,
    zone_line,
)
from ironpost.config import load_texts

_QUOTED = re.compile(r'"([^"]*)"')


def _strings(zone_text: str) -> list[str]:
    return _QUOTED.findall(zone_text)


def _tags(value: str) -> dict[str, str]:
    out = {}
    for item in value.split(";"):
        k, _, v = item.strip().partition("=")
        if k:
            out[k] = v
    return out


def test_rsa_key_files_modes_and_record(tmp_path: Path) -> None:
    key = generate_key(tmp_path / "k", "Example.ORG", "sel")
    private = tmp_path / "k" / "sel.private"
    assert key.private_path == private
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert b"-----BEGIN PRIVATE KEY-----" in private.read_bytes()
    assert key.domain == "example.org" and key.algorithm == "rsa" and key.bits == 2048
    text = (tmp_path / "k" / "sel.txt").read_text()
    assert text == zone_line(key)
    assert text.startswith('sel._domainkey\tIN\tTXT\t( "v=DKIM1; k=rsa; "\n\t  "p=')
    assert text.endswith('" )  ; ----- DKIM key sel for example.org\n')
    assert "".join(_strings(text)) == txt_record(key)
    assert all(len(s) <= 255 for s in _strings(text))
    assert txt_record(key) == f"v=DKIM1; k=rsa; p={key.public_b64}"


def test_4096_bit_record_is_split_in_255_byte_strings(tmp_path: Path) -> None:
    key = generate_key(tmp_path, "example.org", "big", bits=4096)
    strings = _strings(zone_line(key))
    assert len(strings) == 4  # tags, then p= in 255-byte pieces
    assert [len(s) for s in strings[1:-1]] == [255, 255]
    assert "".join(strings) == txt_record(key)
    assert key.bits == 4096


def test_ed25519_key(tmp_path: Path) -> None:
    key = generate_key(tmp_path, "example.org", "ed", ed25519=True)
    assert key.algorithm == "ed25519" and key.bits == 256
    assert len(base64.b64decode(key.public_b64)) == 32  # RFC 8463: the raw key
    assert txt_record(key).startswith("v=DKIM1; k=ed25519; p=")
    assert stat.S_IMODE(key.private_path.stat().st_mode) == 0o600


def test_dknewkey_seed_format_is_read(tmp_path: Path) -> None:
    path = tmp_path / "seed.key"
    path.write_bytes(base64.b64encode(bytes(range(32))) + b"\n")
    read_private_key(path)  # no exception: an ed25519 key


def test_refusals(tmp_path: Path) -> None:
    generate_key(tmp_path, "example.org", "sel", bits=1024)
    with pytest.raises(DkimKeyError, match="exists"):
        generate_key(tmp_path, "example.org", "sel", bits=1024)
    with pytest.raises(DkimKeyError, match="selector"):
        generate_key(tmp_path, "example.org", "../etc/x")
    with pytest.raises(DkimKeyError, match="bits"):
        generate_key(tmp_path, "example.org", "other", bits=512)
    bad = tmp_path / "bad.private"
    bad.write_text("not a key")
    with pytest.raises(DkimKeyError, match=r"bad\.private") as info:
        read_private_key(bad)
    assert "not a key" not in str(info.value)


@given(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef0123456789+/=", max_size=2000))
def test_txt_strings_never_exceed_255_and_rejoin(data: str) -> None:
    key = SigningKey("example.org", "s", "rsa", Path("/x"), data)
    strings = txt_strings(key)
    assert all(len(s.encode()) <= 255 for s in strings)
    assert "".join(strings) == txt_record(key)


@pytest.mark.skipif(shutil.which("opendkim-genkey") is None, reason="opendkim-tools missing")
def test_same_structure_as_opendkim_genkey(tmp_path: Path) -> None:
    theirs_dir, ours_dir = tmp_path / "theirs", tmp_path / "ours"
    theirs_dir.mkdir()
    subprocess.run(
        ["opendkim-genkey", "-D", str(theirs_dir), "-d", "example.test", "-s", "sel"],
        check=True,
        capture_output=True,
    )
    generate_key(ours_dir, "example.test", "sel")
    for name in ("sel.private", "sel.txt"):
        assert stat.S_IMODE((theirs_dir / name).stat().st_mode) == stat.S_IMODE(
            (ours_dir / name).stat().st_mode
        )
    theirs_text = (theirs_dir / "sel.txt").read_text()
    ours_text = (ours_dir / "sel.txt").read_text()
    shape = re.compile(
        r'^sel\._domainkey\tIN\tTXT\t\( (".*"\n\t  )+".*" \)  '
        r"; ----- DKIM key sel for example\.test\n\Z"
    )
    assert shape.match(theirs_text) and shape.match(ours_text)
    t, o = _tags("".join(_strings(theirs_text))), _tags("".join(_strings(ours_text)))
    assert t["v"] == o["v"] == "DKIM1" and t["k"] == o["k"] == "rsa"
    assert len(t["p"]) == len(o["p"])  # both 2048-bit SubjectPublicKeyInfo
    # Each reads the other's private key file.
    read_private_key(theirs_dir / "sel.private")
    assert (ours_dir / "sel.private").read_text().startswith("-----BEGIN PRIVATE KEY-----")


def _settings(tmp_path: Path, table: str) -> object:
    main = f"myhostname = mx.example.org\ndkim_signing_table = {table}\n"
    return load_texts(main, None, main_file="main.cf", master_file="master.cf", config_dir=tmp_path)


def test_signing_table_inline_and_file(tmp_path: Path) -> None:
    keys = tmp_path / "dkim"
    rsa = generate_key(keys / "example.org", "example.org", "r1", bits=1024)
    ed = generate_key(keys / "example.org", "example.org", "e1", ed25519=True)
    other = generate_key(tmp_path / "elsewhere", "example.net", "x", bits=1024)
    # A value with a comma needs braces in inline: (Postfix's syntax).
    table = "inline:{ { example.org = r1, e1 }, example.net=x:../elsewhere/x.private }"
    loaded = _settings(tmp_path, table)
    found = load_signing_keys(loaded.settings, tmp_path)  # type: ignore[attr-defined]
    assert [(k.domain, k.selector, k.algorithm) for k in found] == [
        ("example.org", "r1", "rsa"),
        ("example.org", "e1", "ed25519"),
        ("example.net", "x", "rsa"),
    ]
    assert found[0].public_b64 == rsa.public_b64 and found[1].public_b64 == ed.public_b64
    assert found[2].private_path.resolve() == tmp_path / "elsewhere" / "x.private"
    assert found[2].public_b64 == other.public_b64

    (tmp_path / "dkim_table").write_text("# domains\nexample.org r1\n")
    loaded = _settings(tmp_path, "texthash:dkim_table")
    found = load_signing_keys(loaded.settings, tmp_path)  # type: ignore[attr-defined]
    assert [(k.domain, k.selector) for k in found] == [("example.org", "r1")]


def test_signing_table_missing_key_is_named(tmp_path: Path) -> None:
    loaded = _settings(tmp_path, "inline:{ example.org=gone }")
    with pytest.raises(DkimKeyError, match=r"example\.org/gone\.private"):
        load_signing_keys(loaded.settings, tmp_path)  # type: ignore[attr-defined]


def test_empty_table_means_no_keys(tmp_path: Path) -> None:
    loaded = load_texts("", None, main_file="main.cf", master_file="master.cf", config_dir=None)
    assert load_signing_keys(loaded.settings, None) == []
