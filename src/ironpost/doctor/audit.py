"""The configuration audit, after the hardening checklist of the seeds.

Owns :func:`audit` (pure: settings of the listeners, the host's networks, our
addresses and the free disk space in; Checks out) and :func:`host_networks` (the
networks of this host's interfaces, read from /proc on Linux).

What is checked, per smtpd listener where it matters:

- ``mynetworks`` no wider than loopback, the host's own networks and our addresses:
  every client in mynetworks may relay, so ``0.0.0.0/0`` is an open relay;
- the relay decision for a stranger (not in mynetworks, not authenticated): some list
  (``smtpd_relay_restrictions`` or ``smtpd_recipient_restrictions``) must reach a
  relay guard (reject/defer_unauth_destination, reject, defer) before an
  unconditional ``permit``; access tables and policy services before the guard can
  say OK for anyone, so they warn;
- TLS offered on port 25 (and not required there: RFC 3207 §4 forbids it on a public
  MX), ``smtpd_helo_required``, at least one DNSBL, AUTH only over TLS;
- concurrency the disk can sustain. The heuristic, kept simple on purpose: in the worst
  burst every smtpd process (``default_process_limit``) receives a message of
  ``message_size_limit`` at once; that must fit in the free space of the queue's file
  system (warn if not), and two such messages at least must fit (fail if not).
"""

from __future__ import annotations

import ipaddress
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

from ironpost.config import Service, Settings
from ironpost.config.restrictions import RestrictionError, is_table_token, parse_restrictions
from ironpost.deliverability.records import IPAddress
from ironpost.doctor.check import Check, failed, passed, warned
from ironpost.doctor.reputation import dnsbl_domains
from ironpost.policy.networks import Network, parse_network
from ironpost.policy.verdicts import Stage

FAMILY = "audit"
GUARDS = frozenset({"reject_unauth_destination", "defer_unauth_destination", "reject", "defer"})
# Before a guard, these may answer OK for a stranger: we cannot know from the config.
_MAYBE_PERMIT = ("check_", "permit_tls_all_clientcerts", "check_policy_service")
LOOPBACK: tuple[Network, ...] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)

Listener = tuple[str, str, Settings]  # (service name, role, its settings)


def listeners(services: Sequence[Service], settings: Settings) -> list[Listener]:
    """Each smtpd listener as (name, role, settings); main.cf alone when there is none."""
    return [(s.name, s.role, s.settings) for s in services] or [("main.cf", "smtp", settings)]


def host_networks(
    route: Path = Path("/proc/net/route"), inet6: Path = Path("/proc/net/if_inet6")
) -> list[Network]:
    """Directly connected IPv4 networks (gateway 0) and the IPv6 interface prefixes."""
    out: list[Network] = []
    try:
        for line in route.read_text().splitlines()[1:]:
            f = line.split()
            if len(f) < 8 or f[2] != "00000000" or f[1] == "00000000":
                continue
            dest = ipaddress.IPv4Address(bytes.fromhex(f[1])[::-1])
            mask = ipaddress.IPv4Address(bytes.fromhex(f[7])[::-1])
            out.append(ipaddress.ip_network(f"{dest}/{mask}", strict=False))
    except (OSError, ValueError):
        pass
    try:
        for line in inet6.read_text().splitlines():
            f = line.split()
            address = ipaddress.IPv6Address(bytes.fromhex(f[0]))
            if not address.is_link_local:
                out.append(ipaddress.ip_network(f"{address}/{int(f[2], 16)}", strict=False))
    except (OSError, ValueError, IndexError):
        pass
    return out


def free_space(settings: Settings) -> int | None:
    """Free bytes on the file system of queue_directory (or its nearest parent)."""
    path = Path(settings.text("queue_directory"))
    for candidate in (path, *path.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return None


def audit(
    listeners: Sequence[Listener],
    *,
    host_nets: Iterable[Network] = (),
    addresses: Iterable[IPAddress] = (),
    free_bytes: int | None = None,
) -> list[Check]:
    allowed = [*LOOPBACK, *host_nets, *(ipaddress.ip_network(a) for a in addresses)]
    out: list[Check] = []
    out.extend(_dedupe(_mynetworks(s, allowed) for _, _, s in listeners))
    out.extend(_relay(name, s) for name, _, s in listeners)
    smtp = [(n, s) for n, role, s in listeners if role == "smtp"]
    out.extend(_tls_offered(name, s) for name, s in smtp)
    out.extend(_dedupe(_helo(name, s) for name, s in smtp))
    out.append(_dnsbl([s for _, _, s in listeners]))
    out.append(_auth_tls([(n, s) for n, _, s in listeners]))
    out.append(_disk(listeners[0][2], free_bytes))
    return out


def _dedupe(checks: Iterable[Check]) -> list[Check]:
    """One check per distinct finding (most listeners share main.cf's values)."""
    seen: dict[tuple[str, str], Check] = {}
    for c in checks:
        seen.setdefault((c.status, c.detail), c)
    return list(seen.values())


def _mynetworks(s: Settings, allowed: Sequence[Network]) -> Check:
    title = "mynetworks"
    wide: list[str] = []
    unknown: list[str] = []
    for word in s.words("mynetworks"):
        net = parse_network(word)
        if net is None:
            unknown.append(word)
            continue
        if not any(net.version == a.version and net.subnet_of(a) for a in allowed):  # type: ignore[arg-type]
            wide.append(str(net))
    fix = (
        "set mynetworks to the networks you trust to relay: loopback and this host's own "
        "(e.g. mynetworks = 127.0.0.0/8 [::1]/128); users elsewhere should authenticate"
    )
    if wide:
        return failed(
            FAMILY,
            title,
            f"{', '.join(wide)} is wider than loopback and this host's networks: "
            "every client there may relay",
            fix,
        )
    if unknown:
        return warned(
            FAMILY, title, f"{', '.join(unknown)} cannot be checked (a table or file)", fix
        )
    return passed(FAMILY, title, f"{' '.join(s.words('mynetworks')) or '(empty)'}: local only")


def _steps(s: Settings, stage: Stage) -> list[tuple[str, tuple[str, ...]]] | None:
    try:
        return list(
            parse_restrictions(s.words(stage.value), classes=s.words("smtpd_restriction_classes"))
        )
    except RestrictionError:
        return None


def _relay(name: str, s: Settings) -> Check:
    title = f"relay restrictions ({name})"
    fix = (
        "put reject_unauth_destination after permit_mynetworks, permit_sasl_authenticated "
        "in smtpd_relay_restrictions, and no bare permit before it"
    )
    guarded: list[str] = []
    risky: list[str] = []
    for stage in (Stage.RELAY, Stage.RECIPIENT):
        steps = _steps(s, stage)
        if steps is None:
            continue
        maybe: list[str] = []
        for step, args in steps:
            if step in GUARDS:
                (risky if maybe else guarded).append(f"{stage.value}: {step}")
                risky.extend(f"{stage.value}: {m}" for m in maybe)
                break
            if step == "permit":
                break  # strangers pass this list; the next one may still guard
            if (
                step.startswith(_MAYBE_PERMIT)
                or is_table_token(step)
                or (not args and step in s.words("smtpd_restriction_classes"))
            ):
                maybe.append(" ".join((step, *args)))
    if guarded:
        return passed(FAMILY, title, f"strangers stop at {guarded[0]}")
    if risky:
        return warned(
            FAMILY,
            title,
            f"strangers reach the relay guard only if no table says OK first ({'; '.join(risky)})",
            "make sure those tables never answer OK for a client or sender a stranger can "
            "claim, or move them after reject_unauth_destination",
        )
    return failed(
        FAMILY,
        title,
        "a stranger reaches permit before any relay guard: this is an open relay",
        fix,
    )


def _tls_offered(name: str, s: Settings) -> Check:
    title = f"TLS offered ({name})"
    level = s.raw("smtpd_tls_security_level").strip().lower() or "none"
    if level == "none":
        return failed(
            FAMILY,
            title,
            "smtpd_tls_security_level = none: mail arrives in clear text",
            "set smtpd_tls_security_level = may (and a certificate)",
        )
    if level == "encrypt":
        return warned(
            FAMILY,
            title,
            "smtpd_tls_security_level = encrypt on port 25: senders without TLS cannot "
            "deliver (RFC 3207 forbids this on a public MX)",
            "use smtpd_tls_security_level = may on port 25; encrypt on submission",
        )
    return passed(FAMILY, title, f"smtpd_tls_security_level = {level}")


def _helo(name: str, s: Settings) -> Check:
    if s.boolean("smtpd_helo_required"):
        return passed(FAMILY, "HELO required", "smtpd_helo_required = yes")
    return warned(
        FAMILY,
        "HELO required",
        f"smtpd_helo_required = no ({name}): clients may skip HELO",
        "set smtpd_helo_required = yes",
    )


def _dnsbl(settings: Sequence[Settings]) -> Check:
    found = dnsbl_domains(settings)
    if found:
        return passed(FAMILY, "DNSBL", ", ".join(d for _, d in found))
    return warned(
        FAMILY,
        "DNSBL",
        "no DNSBL in any restriction list",
        "add reject_rbl_client zen.spamhaus.org to smtpd_recipient_restrictions "
        "(after reject_unauth_destination), with a local resolver",
    )


def _auth_tls(listeners: Sequence[tuple[str, Settings]]) -> Check:
    title = "AUTH only over TLS"
    offering = [(n, s) for n, s in listeners if s.boolean("smtpd_sasl_auth_enable")]
    if not offering:
        return passed(FAMILY, title, "no listener offers AUTH")
    clear = [
        n
        for n, s in offering
        if not s.boolean("smtpd_tls_wrappermode") and not s.boolean("smtpd_tls_auth_only")
    ]
    if clear:
        return failed(
            FAMILY,
            title,
            f"{', '.join(clear)} offer AUTH before STARTTLS: passwords cross in clear text",
            "set smtpd_tls_auth_only = yes",
        )
    return passed(FAMILY, title, f"{', '.join(n for n, _ in offering)}: after TLS only")


def _disk(s: Settings, free: int | None) -> Check:
    title = "concurrency vs. disk"
    procs = s.integer("default_process_limit")
    size = s.integer("message_size_limit")
    burst = procs * size
    if free is None or size <= 0:
        return passed(FAMILY, title, "not checked (no size limit or free space unknown)")
    gib = 1024**3
    text = (
        f"default_process_limit {procs} x message_size_limit {size / 2**20:.1f} MiB = "
        f"{burst / gib:.2f} GiB; {free / gib:.2f} GiB free on the queue's disk"
    )
    if free < 2 * size:
        return failed(
            FAMILY,
            title,
            text + ": not even two messages fit",
            "free disk space on queue_directory's file system",
        )
    if burst > free:
        return warned(
            FAMILY,
            title,
            text + ": a burst of large messages would fill the disk",
            "lower default_process_limit or message_size_limit, or give the queue more "
            "space; set queue_minfree so ironpost refuses mail before the disk is full",
        )
    return passed(FAMILY, title, text)
