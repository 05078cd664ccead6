"""The hosts file (/etc/hosts), consulted before DNS for the client's name, as glibc does.

Owns reading hosts(5): ``address name [aliases…]`` lines, ``#`` comments. Postfix's smtpd
gets the client's name from getnameinfo(), which reads /etc/hosts before DNS
(nsswitch ``hosts: files dns``); so ``connect from localhost[127.0.0.1]`` needs no DNS
server, and a machine whose resolver is unreachable does not stall every local
connection for a DNS timeout.

Invariants: the file is re-read when its mtime or size changes, checked at most once a
second; an unreadable file is an empty one; lookups never raise.
"""

from __future__ import annotations

import ipaddress
import os
import time
from collections.abc import Callable
from pathlib import Path

HOSTS = Path("/etc/hosts")


def _canonical(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address.split("%", 1)[0]))
    except ValueError:
        return address.lower()


class HostsFile:
    def __init__(self, path: Path = HOSTS, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._clock = clock
        self._checked = -1e9
        self._stamp: tuple[int, int] | None = None
        self._names: dict[str, list[str]] = {}  # address -> names, file order
        self._addresses: dict[str, list[str]] = {}  # name -> addresses

    def _refresh(self) -> None:
        now = self._clock()
        if now - self._checked < 1.0:
            return
        self._checked = now
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
        if stamp == self._stamp:
            return
        self._stamp = stamp
        names: dict[str, list[str]] = {}
        addresses: dict[str, list[str]] = {}
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace") if stamp else ""
        except OSError:
            text = ""
        for line in text.splitlines():
            fields = line.split("#", 1)[0].split()
            if len(fields) < 2:
                continue
            address = _canonical(fields[0])
            for name in fields[1:]:
                name = name.lower().rstrip(".")
                names.setdefault(address, []).append(name)
                addresses.setdefault(name, []).append(address)
        self._names, self._addresses = names, addresses

    def names(self, address: str) -> list[str]:
        """Names for ``address`` (the canonical name first); [] when it is not listed."""
        self._refresh()
        return list(self._names.get(_canonical(address), ()))

    def addresses(self, name: str) -> list[str]:
        """Addresses listed for ``name``."""
        self._refresh()
        return list(self._addresses.get(name.lower().rstrip("."), ()))
