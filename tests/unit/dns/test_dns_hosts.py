"""The hosts file consulted before DNS for client names."""

from __future__ import annotations

from pathlib import Path

from ironpost.dns.hosts import HostsFile
from ironpost.testing.clock import FakeClock


def test_names_and_addresses_and_reload(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text("127.0.0.1 localhost  # loopback\n::1 localhost ip6-localhost\n"
                    "# comment\n192.0.2.7 Mail.Example.TEST. mail\nbad-line\n")  # fmt: skip
    clock = FakeClock()
    hosts = HostsFile(path, clock=clock)
    assert hosts.names("127.0.0.1") == ["localhost"]
    assert hosts.names("0:0:0:0:0:0:0:1") == ["localhost", "ip6-localhost"]
    assert hosts.names("192.0.2.7") == ["mail.example.test", "mail"]
    assert hosts.addresses("localhost") == ["127.0.0.1", "::1"]
    assert hosts.names("198.51.100.1") == []
    path.write_text("127.0.0.1 renamed\n")
    assert hosts.names("127.0.0.1") == ["localhost"]  # not re-checked within a second
    clock.advance(1.5)
    assert hosts.names("127.0.0.1") == ["renamed"]
    path.unlink()
    clock.advance(1.5)
    assert hosts.names("127.0.0.1") == []
