"""``ironpost dkim keygen|rotate|list`` end to end through the real entry point."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from ironpost.auth.dkim_keys import read_private_key
from ironpost.cli.dkim import activate, new_selector
from ironpost.cli.main import main


def config(tmp_path: Path, table: str = "texthash:dkim_table") -> Path:
    (tmp_path / "main.cf").write_text(
        f"myhostname = mx.example.org\ndkim_signing_table = {table}\n"
    )
    return tmp_path


def test_keygen_writes_files_and_prints_the_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "out"
    code = main(["dkim", "keygen", "-d", "example.org", "-s", "sel", "-D", str(out_dir)])
    assert code == 0
    printed = capsys.readouterr()
    assert printed.out == (out_dir / "sel.txt").read_text()
    assert printed.out.startswith('sel._domainkey\tIN\tTXT\t( "v=DKIM1; k=rsa; "')
    assert stat.S_IMODE((out_dir / "sel.private").stat().st_mode) == 0o600
    assert "private key written" in printed.err

    code = main(["dkim", "keygen", "-d", "example.org", "-s", "sel", "-D", str(out_dir)])
    assert code == 1 and "exists" in capsys.readouterr().err

    code = main(
        ["dkim", "keygen", "-d", "example.org", "-s", "ed", "--ed25519", "-D", str(out_dir)]
    )
    assert code == 0 and "k=ed25519" in capsys.readouterr().out


def test_keygen_default_directory_is_the_key_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = config(tmp_path)
    (cfg / "dkim_table").write_text("")
    argv = ["dkim", "keygen", "-c", str(cfg), "-d", "Example.org", "-s", "a", "-b", "1024"]
    assert main(argv) == 0
    assert (cfg / "dkim" / "example.org" / "a.private").is_file()


def test_rotate_activate_and_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config(tmp_path)
    (cfg / "dkim_table").write_text("# signing table\nexample.org old, ed\nexample.net n1\n")
    keys = cfg / "dkim" / "example.org"
    assert main(["dkim", "keygen", "-c", str(cfg), "-d", "example.org", "-s", "old"]) == 0
    argv = ["dkim", "keygen", "-c", str(cfg), "-d", "example.org", "-s", "ed", "--ed25519"]
    assert main(argv) == 0
    assert main(["dkim", "keygen", "-c", str(cfg), "-d", "example.net", "-s", "n1"]) == 0
    capsys.readouterr()

    argv = ["dkim", "rotate", "-c", str(cfg), "-d", "example.org", "-s", "new", "--activate"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "new._domainkey\tIN\tTXT" in out
    assert "Publish the record above at new._domainkey.example.org" in out
    assert "(replacing old)" in out
    # Only the RSA item was replaced; the ed25519 key and the other domain stay.
    assert (cfg / "dkim_table").read_text() == (
        "# signing table\nexample.org new, ed\nexample.net n1\n"
    )
    read_private_key(keys / "new.private")

    assert main(["dkim", "list", "-c", str(cfg)]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        ("example.org", "new", "rsa", "2048"),
        ("example.org", "ed", "ed25519", "256"),
        ("example.net", "n1", "rsa", "2048"),
    ]


def test_rotate_activate_refuses_an_inline_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = config(tmp_path, "inline:{ example.org=s1 }")
    assert main(["dkim", "rotate", "-c", str(cfg), "-d", "example.org", "--activate"]) == 1
    printed = capsys.readouterr()
    assert "edit it by hand" in printed.err
    assert "in dkim_signing_table, example.org = s" in printed.out


def test_list_reports_a_missing_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config(tmp_path, "inline:{ example.org=gone }")
    assert main(["dkim", "list", "-c", str(cfg)]) == 1
    assert "gone.private" in capsys.readouterr().err


def test_new_selector_and_activate_helpers(tmp_path: Path) -> None:
    assert new_selector(tmp_path, now=1_795_000_000) == "s202611"
    (tmp_path / "s202611.private").write_text("")
    assert new_selector(tmp_path, now=1_795_000_000) == "s202611a"
    table = tmp_path / "t"
    assert activate(table, "example.org", "s1", []) == "s1"
    assert table.read_text() == "example.org s1\n"
