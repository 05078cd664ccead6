"""master.cf: which SMTP listeners exist and their per-service ``-o`` overrides.

Owns the Postfix master.cf grammar (service type private unpriv chroot wakeup
maxproc command args; whitespace continuation; ``#`` comments) and
:class:`Service`. Only ``inet`` services whose command is ``smtpd`` become
listeners; unix/fifo/pass services (pickup, qmgr, ...) are accepted silently.
Invariant: every Service's settings are the main settings with its overrides
applied and validated, and ``source`` is the ``file:line`` of its line.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from ironpost.config.diagnostics import Diagnostic
from ironpost.config.settings import Settings, apply_overrides
from ironpost.config.syntax import BraceError, split_ws, strip_braces

WELL_KNOWN_PORTS: dict[str, int] = {"smtp": 25, "submission": 587, "submissions": 465, "smtps": 465}
_TYPES = frozenset({"inet", "unix", "unix-dgram", "fifo", "pass"})


@dataclass(frozen=True, slots=True)
class MasterLine:
    """One master.cf service line, fields as written."""

    name: str
    type: str
    command: str
    args: tuple[str, ...]
    file: str
    line: int


@dataclass(frozen=True)
class Service:
    """One SMTP listener."""

    name: str
    #: Bind host as written (brackets removed); None: every address of inet_interfaces.
    host: str | None
    port: int
    overrides: Mapping[str, str]
    settings: Settings = field(repr=False)
    source: str

    @property
    def role(self) -> str:
        """``submissions`` (TLS wrapper mode), ``submission`` (port 587 or a
        ``.../submission`` syslog_name) or ``smtp``."""
        if self.settings.boolean("smtpd_tls_wrappermode"):
            return "submissions"
        if self.port == 587 or self.settings.raw("syslog_name").endswith("/submission"):
            return "submission"
        return "smtp"

    def bind_hosts(self) -> tuple[str, ...]:
        """Addresses to bind: the service host, else inet_interfaces per inet_protocols."""
        if self.host is not None:
            return (self.host,)
        return interface_addresses(self.settings)


def interface_addresses(settings: Settings) -> tuple[str, ...]:
    """inet_interfaces as bind addresses: ``all`` -> 0.0.0.0 and/or ::, ``loopback-only``
    -> 127.0.0.1 and/or ::1 (per inet_protocols), else the listed addresses."""
    protocols = set(settings.words("inet_protocols"))
    v4 = bool(protocols & {"all", "ipv4"})
    v6 = bool(protocols & {"all", "ipv6"})
    interfaces = settings.words("inet_interfaces")
    if interfaces in (("all",), ()):
        return (*(("0.0.0.0",) if v4 else ()), *(("::",) if v6 else ()))
    if interfaces == ("loopback-only",):
        return (*(("127.0.0.1",) if v4 else ()), *(("::1",) if v6 else ()))
    return tuple(i.strip("[]") for i in interfaces)


def parse_master_cf(text: str, file: str) -> tuple[list[MasterLine], list[Diagnostic]]:
    lines: list[MasterLine] = []
    diags: list[Diagnostic] = []
    logical: list[tuple[int, str]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if line[0] in " \t":
            if not logical:
                diags.append(
                    Diagnostic(
                        "error", file, lineno, "continuation line without a service line above it"
                    )
                )
            else:
                n, prev = logical[-1]
                logical[-1] = (n, f"{prev} {stripped}")
            continue
        logical.append((lineno, stripped))
    for lineno, text_line in logical:
        try:
            fields = split_ws(text_line)
        except BraceError as exc:
            diags.append(Diagnostic("error", file, lineno, str(exc)))
            continue
        if len(fields) < 8:
            diags.append(
                Diagnostic(
                    "error",
                    file,
                    lineno,
                    f"expected at least 8 fields "
                    f"(service type private unpriv chroot wakeup maxproc "
                    f"command), found {len(fields)}",
                )
            )
            continue
        if fields[1] not in _TYPES:
            diags.append(
                Diagnostic(
                    "error",
                    file,
                    lineno,
                    f"unknown service type {fields[1]!r}"
                    f" (expected one of {', '.join(sorted(_TYPES))})",
                )
            )
            continue
        lines.append(MasterLine(fields[0], fields[1], fields[7], fields[8:], file, lineno))
    return lines, diags


def _endpoint(name: str) -> tuple[str | None, int]:
    """``smtp``, ``2525``, ``127.0.0.1:2525``, ``[::1]:2525`` -> (host, port)."""
    host: str | None = None
    port_text = name
    if name.startswith("["):
        close = name.find("]")
        if close < 0 or name[close + 1 : close + 2] != ":":
            raise ValueError(f"bad service address {name!r}: expected [address]:port")
        host, port_text = name[1:close], name[close + 2 :]
        ipaddress.IPv6Address(host)
    elif ":" in name:
        host, _, port_text = name.rpartition(":")
        if ":" in host:
            raise ValueError(f"bad service address {name!r}: put an IPv6 address in [brackets]")
    if port_text.isdigit():
        port = int(port_text)
    elif port_text in WELL_KNOWN_PORTS:
        port = WELL_KNOWN_PORTS[port_text]
    else:
        try:
            port = socket.getservbyname(port_text, "tcp")
        except OSError:
            raise ValueError(f"unknown service port {port_text!r}") from None
    if not 0 < port < 65536:
        raise ValueError(f"port {port} out of range")
    return host or None, port


def _overrides(ml: MasterLine) -> tuple[list[tuple[str, str]], list[str]]:
    found: list[tuple[str, str]] = []
    problems: list[str] = []
    args = list(ml.args)
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg != "-o" and not arg.startswith("-o"):
            continue  # -v, -D and friends: accepted, no effect
        if arg == "-o":
            if i >= len(args):
                problems.append("-o without name=value")
                break
            arg = args[i]
            i += 1
        else:
            arg = arg[2:]
        name, sep, value = strip_braces(arg).partition("=")
        if not sep or not name.strip():
            problems.append(f"-o {arg}: expected name=value")
            continue
        found.append((name.strip(), strip_braces(value.strip())))
    return found, problems


def build_services(
    lines: list[MasterLine], settings: Settings
) -> tuple[list[Service], list[Diagnostic]]:
    services: list[Service] = []
    diags: list[Diagnostic] = []
    seen: dict[tuple[str | None, int], str] = {}
    for ml in lines:
        origin = f"{ml.file}:{ml.line}"
        if ml.type != "inet":
            continue
        if ml.command != "smtpd":
            diags.append(
                Diagnostic(
                    "warning",
                    ml.file,
                    ml.line,
                    f"{ml.name}: inet service "
                    f"{ml.command!r} is not implemented by ironpost: no "
                    "listener",
                )
            )
            continue
        try:
            host, port = _endpoint(ml.name)
        except ValueError as exc:
            diags.append(Diagnostic("error", ml.file, ml.line, str(exc)))
            continue
        if (host, port) in seen:
            diags.append(
                Diagnostic(
                    "error",
                    ml.file,
                    ml.line,
                    f"{ml.name}: duplicate service (first at {seen[host, port]})",
                )
            )
            continue
        seen[host, port] = origin
        overrides, problems = _overrides(ml)
        diags.extend(Diagnostic("error", ml.file, ml.line, p) for p in problems)
        svc_settings = settings
        if overrides:
            svc_settings, found = apply_overrides(settings, overrides, origin)
            diags.extend(found)
        services.append(
            Service(ml.name, host, port, MappingProxyType(dict(overrides)), svc_settings, origin)
        )
    return services, diags
