"""Running the doctor: gather the inputs once, then run each family of checks in order.

Owns :class:`Options` (what the command line can change), :func:`gather` (settings ->
:class:`~ironpost.doctor.check.Inputs`: our host name, addresses, domains, DKIM keys,
the record set to expect, the resolver) and :func:`run` (the families, in a fixed
order: names, records, tls, reputation, audit, relay).

Invariants: the doctor only reads: it creates no key, no certificate, no queue file
and sends no mail; our addresses follow ``ironpost dns records`` (``--ip``, else
``dns_records_addresses``, else the public ones among inet_interfaces), and ``--ip``
addresses are taken as given even when not globally routable.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ironpost.auth.dkim_keys import DkimKeyError, SigningKey, load_signing_keys, txt_record
from ironpost.config import LoadedConfig, Settings
from ironpost.deliverability.records import (
    DkimPublicKey,
    RecordsError,
    build_records,
    mail_domains,
    options_from_settings,
)
from ironpost.dns.resolver import DnsResolver
from ironpost.dns.types import Resolver
from ironpost.doctor.audit import audit, free_space, host_networks, listeners
from ironpost.doctor.check import Check, Inputs
from ironpost.doctor.names import check_names
from ironpost.doctor.published import check_published
from ironpost.doctor.relay import judge, literal, relay_battery, run_battery
from ironpost.doctor.reputation import check_reputation
from ironpost.doctor.tlscert import check_tls
from ironpost.policy.networks import NetworkList

FAMILIES = ("names", "records", "tls", "reputation", "audit", "relay")


@dataclass(frozen=True)
class Options:
    ips: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()
    relay_target: str | None = None  # HOST:PORT; None: the first smtp listener
    source: str | None = None
    skip: frozenset[str] = field(default_factory=frozenset)
    relay_timeout: float = 30.0


def _dkim(
    settings: Settings, config_dir: Path | None
) -> tuple[list[DkimPublicKey], list[SigningKey], str | None]:
    """The signing table's keys (read, never created), and the error if unreadable."""
    try:
        keys = load_signing_keys(settings, config_dir)
    except DkimKeyError as exc:
        return [], [], str(exc)
    return [DkimPublicKey(k.domain, k.selector, txt_record(k)) for k in keys], keys, None


def gather(loaded: LoadedConfig, options: Options, resolver: Resolver | None = None) -> Inputs:
    """The inputs every check reads (no DNS yet: lookups happen in the checks)."""
    settings = loaded.settings
    public, keys, dkim_error = _dkim(settings, loaded.config_dir)
    record_options = options_from_settings(
        settings, dkim=public, ips=options.ips, domains=options.domains
    )
    if options.domains:
        domains = record_options.domains
    else:
        domains, _ = mail_domains(settings, public)
    try:
        records = build_records(record_options, public)
    except RecordsError:
        records = None
    nameservers: tuple[str, ...] = ()
    if resolver is None:
        dns = DnsResolver.from_settings(settings)
        nameservers, resolver = dns.nameservers, dns
    elif isinstance(resolver, DnsResolver):
        nameservers = resolver.nameservers
    return Inputs(
        settings=settings,
        config_dir=loaded.config_dir,
        services=loaded.services,
        hostname=settings.raw("myhostname").rstrip(".").lower(),
        addresses=record_options.addresses,
        domains=tuple(domains),
        resolver=resolver,
        records=records,
        nameservers=nameservers,
        dkim_keys=tuple(keys),
        dkim_error=dkim_error,
        notes=record_options.warnings,
    )


def relay_target(inputs: Inputs, given: str | None) -> tuple[str, int] | None:
    """``HOST:PORT`` given, else the first smtp listener (a wildcard bind is reached
    at our first address, else at loopback)."""
    if given:
        host, _, port = given.rpartition(":")
        return host.strip("[]"), int(port)
    for service in inputs.services:
        if service.role != "smtp":
            continue
        hosts = service.bind_hosts()
        host = hosts[0] if hosts else ""
        if host in ("", "0.0.0.0", "::"):
            host = str(inputs.addresses[0]) if inputs.addresses else "127.0.0.1"
        return host, service.port
    return None


async def check_relay(inputs: Inputs, options: Options) -> list[Check]:
    target = relay_target(inputs, options.relay_target)
    if target is None:
        return []
    host, port = target
    ours = inputs.domains[0] if inputs.domains else inputs.hostname
    recipients = relay_battery(ours, literal(host))
    outcome = await run_battery(
        host,
        port,
        recipients,
        source=options.source,
        helo="relay-test.invalid",
        timeout=options.relay_timeout,
    )
    mynetworks = NetworkList.build(
        inputs.settings.words("mynetworks"), open_table=inputs.settings.table
    )
    trusted = bool(outcome.source) and mynetworks.contains(outcome.source)
    return [
        judge(
            outcome,
            f"{literal(host)}:{port}",
            source_trusted=trusted,
            source_explicit=options.source is not None,
        )
    ]


async def run(
    inputs: Inputs,
    options: Options,
    *,
    host_nets: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network] | None = None,
) -> list[Check]:
    """Every family not in ``options.skip``, in :data:`FAMILIES` order."""
    out: list[Check] = []
    skip = options.skip
    if "names" not in skip:
        out.extend(await check_names(inputs))
    if "records" not in skip:
        out.extend(await check_published(inputs))
    if "tls" not in skip:
        configured = [s.settings for s in inputs.services] or [inputs.settings]
        out.extend(check_tls(configured, inputs.hostname))
    if "reputation" not in skip:
        out.extend(await check_reputation(inputs))
    if "audit" not in skip:
        out.extend(
            audit(
                listeners(inputs.services, inputs.settings),
                host_nets=host_networks() if host_nets is None else host_nets,
                addresses=inputs.addresses,
                free_bytes=free_space(inputs.settings),
            )
        )
    if "relay" not in skip:
        out.extend(await check_relay(inputs, options))
    return out
