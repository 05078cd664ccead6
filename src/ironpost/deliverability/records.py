"""The DNS records an administrator must publish for our mail domains.

Owns which domains are "ours" (:func:`mail_domains`), which addresses this host is
published under (:func:`public_addresses`), and the record set itself
(:func:`build_records`, pure: options + DKIM keys in, values out). Rendering is
``zone.py``'s job; a doctor compares :meth:`RecordSet.expected` with what DNS serves.

Invariants: every owner name is absolute (trailing dot) and in A-label form; TXT values
are unsplit and unquoted (splitting at 255 octets is a rendering concern); no record is
ever built from a loopback, private or otherwise non-public address found in the
configuration (a warning says why instead); an address the administrator names
explicitly is published, with a warning when it is not globally routable. The MTA-STS id
is derived from the policy text, so it changes exactly when the policy does.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import dns.exception
import dns.name
import dns.reversename

from ironpost.config import Settings
from ironpost.config.restrictions import is_table_token

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
RecordType = Literal["MX", "A", "AAAA", "TXT", "PTR"]

MTA_STS_MAX_AGE = 604800  # one week: RFC 8461 §3.2 suggests weeks
# Domain-list parameters whose plain names we accept mail for (relay_domains is not
# here: a domain we only relay for is published by whoever owns its mailboxes).
DOMAIN_PARAMS = ("mydestination", "virtual_mailbox_domains", "virtual_alias_domains")
_LOCAL_SUFFIXES = (".localhost", ".localdomain", ".local", ".invalid", ".internal")


@dataclass(frozen=True, slots=True)
class Record:
    """One resource record to publish (or, for PTR, to ask the address's owner for)."""

    name: str  # absolute, A-label form, e.g. "_dmarc.example.org."
    type: RecordType
    value: str  # presentation form; TXT unsplit and unquoted
    comment: str = ""


@dataclass(frozen=True, slots=True)
class DkimPublicKey:
    """What a DKIM TXT record needs: ``txt`` is ``v=DKIM1; k=…; p=…`` (unsplit)."""

    domain: str
    selector: str
    txt: str


@dataclass(frozen=True, slots=True)
class RecordOptions:
    """Everything :func:`build_records` needs; :func:`options_from_settings` fills it."""

    hostname: str
    domains: tuple[str, ...]
    addresses: tuple[IPAddress, ...] = ()
    ttl: int = 3600
    dmarc_policy: str = "quarantine"
    dmarc_rua: str = ""  # empty: postmaster@<domain>
    tlsrpt_rua: str = ""  # empty: postmaster@<domain>
    mta_sts_mode: str = "testing"
    relayhost: str = ""
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class MtaSts:
    """The policy file to serve at ``url`` over HTTPS, and where its host must point."""

    url: str
    policy: str
    policy_id: str
    host: str  # mta-sts.<domain>., the name that needs an A/CNAME to a web server


@dataclass(frozen=True, slots=True)
class DomainRecords:
    """The records of one zone fragment: a mail domain, or the host's own names."""

    domain: str  # A-label, no trailing dot
    records: tuple[Record, ...]
    notes: tuple[str, ...] = ()
    mta_sts: MtaSts | None = None  # None: a host-only fragment


@dataclass(frozen=True, slots=True)
class RecordSet:
    hostname: str  # absolute
    addresses: tuple[str, ...]
    ttl: int
    zones: tuple[DomainRecords, ...]
    ptr: tuple[Record, ...]  # not ours to publish: ask the address's provider
    warnings: tuple[str, ...] = field(default=())

    def expected(self) -> list[Record]:
        """Every record DNS should serve once published, the provider's PTRs included."""
        return [r for z in self.zones for r in z.records] + list(self.ptr)


class RecordsError(ValueError):
    """The options cannot give a meaningful record set (e.g. a bad host name)."""


# --- names ---------------------------------------------------------------------------


def absolute(name: str) -> str:
    """``Bücher.example`` -> ``xn--bcher-kva.example.`` (raises RecordsError if invalid)."""
    text = name.strip().rstrip(".").lower()
    if not text:
        raise RecordsError("empty domain name")
    try:
        return dns.name.from_unicode(text).to_text()
    except (dns.exception.DNSException, UnicodeError) as exc:
        raise RecordsError(f"bad domain name {name!r}: {exc}") from None


def _is_local(domain: str) -> bool:
    d = domain.rstrip(".").lower()
    return "." not in d or d.startswith("localhost.") or d.endswith(_LOCAL_SUFFIXES)


def _under(name: str, domain: str) -> bool:
    """True when absolute ``name`` is ``domain`` or below it (both absolute)."""
    return name == domain or name.endswith("." + domain)


# --- from settings -------------------------------------------------------------------


def _list_words(settings: Settings, name: str) -> list[str]:
    """A domain list's words with ``/file`` entries read (as Postfix's match_list does)."""
    out: list[str] = []
    for word in settings.words(name):
        if word.startswith("/"):
            try:
                text = Path(word).read_text(encoding="utf-8")
            except OSError:
                continue  # config check reports unreadable files; not our concern here
            for line in text.splitlines():
                out.extend(w for w in line.split("#", 1)[0].replace(",", " ").split() if w)
        else:
            out.append(word)
    return out


def mail_domains(
    settings: Settings, dkim: Sequence[DkimPublicKey] = ()
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(our mail domains, warnings): the domains we accept mail for and send from.

    Plain names of mydestination, virtual_mailbox_domains and virtual_alias_domains,
    plus myorigin and every DKIM signing domain; minus localhost-like names. The host
    name itself counts only when no other domain is left (its own records are published
    anyway). Table entries cannot be enumerated: a warning names them.
    """
    hostname = settings.raw("myhostname").rstrip(".").lower()
    warnings: list[str] = []
    found: list[str] = []
    for param in DOMAIN_PARAMS:
        for word in _list_words(settings, param):
            if is_table_token(word):
                # The virtual_* defaults name the address maps: quietly skipped.
                if settings.is_explicit(param):
                    warnings.append(
                        f"{param}: the domains in {word} cannot be listed; name them with -d DOMAIN"
                    )
            elif word.startswith("."):
                warnings.append(f"{param}: subdomains matched by {word} are not listed")
            else:
                found.append(word)
    found.append(settings.raw("myorigin"))
    found.extend(k.domain for k in dkim)
    domains: list[str] = []
    for word in found:
        d = word.strip().rstrip(".").lower()
        if d and not _is_local(d) and d not in domains:
            domains.append(d)
    if len(domains) > 1 and hostname in domains:
        domains.remove(hostname)
    if not domains:
        warnings.append("no mail domain found: set mydestination or myorigin, or use -d DOMAIN")
    return tuple(domains), tuple(warnings)


def _describe(addr: IPAddress) -> str:
    if addr.is_loopback:
        return "a loopback address"
    if addr.is_unspecified:
        return "the wildcard address"
    if addr.is_link_local:
        return "a link-local address"
    if addr.is_private:
        return "a private address"
    return "not a globally routable address"


def public_addresses(
    settings: Settings, explicit: Sequence[str] = ()
) -> tuple[tuple[IPAddress, ...], tuple[str, ...]]:
    """(addresses to publish, warnings). ``explicit`` (``--ip``) wins, then
    dns_records_addresses, else the public ones among the addresses ironpost listens on
    (inet_interfaces, proxy_interfaces) and sends from (smtp_bind_address[6])."""
    warnings: list[str] = []
    given = list(explicit) or list(settings.words("dns_records_addresses"))
    candidates = given or [
        *settings.words("inet_interfaces"),
        *settings.words("proxy_interfaces"),
        settings.raw("smtp_bind_address"),
        settings.raw("smtp_bind_address6"),
    ]
    out: list[IPAddress] = []
    for word in candidates:
        text = word.strip().strip("[]")
        if not text:
            continue
        if not given and text in ("all", "loopback-only"):
            if text == "all":
                warnings.append(
                    "inet_interfaces = all does not say which address is public: "
                    "give --ip ADDR or set dns_records_addresses"
                )
            continue
        try:
            addr = ipaddress.ip_address(text)
        except ValueError:
            warnings.append(f"{text} is not an IP address: not published")
            continue
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        if addr in out:
            continue
        if not addr.is_global:
            if not given:
                warnings.append(f"{addr} is {_describe(addr)}: not published")
                continue
            warnings.append(f"{addr} is {_describe(addr)}: published as you asked")
        out.append(addr)
    if not out:
        warnings.append(
            "no public address known: no A/AAAA, ip4/ip6 or PTR records; "
            "give --ip ADDR or set dns_records_addresses"
        )
    return tuple(out), tuple(warnings)


def _rua_setting(settings: Settings, name: str, schemes: tuple[str, ...]) -> tuple[str, list[str]]:
    value = settings.raw(name).strip()
    if value and not _valid_rua(value, schemes):
        return "", [f"{name} = {value}: not an address or URI; using postmaster@DOMAIN"]
    return value, []


def _valid_rua(value: str, schemes: tuple[str, ...]) -> bool:
    # ";" ends a DMARC/TLS-RPT tag and "," separates URIs: either would change the record.
    if any(c in value for c in ';,! \t"\\') or not value.isascii():
        return False
    return value.startswith(schemes) or (":" not in value and value.count("@") == 1)


def options_from_settings(
    settings: Settings,
    *,
    dkim: Sequence[DkimPublicKey] = (),
    ips: Sequence[str] = (),
    domains: Sequence[str] = (),
) -> RecordOptions:
    """The options for ``settings``; ``domains`` (``-d``) replaces the configured list."""
    warnings: list[str] = []
    if domains:
        chosen = tuple(dict.fromkeys(d.strip().rstrip(".").lower() for d in domains if d.strip()))
    else:
        chosen, found = mail_domains(settings, dkim)
        warnings.extend(found)
    addresses, found = public_addresses(settings, ips)
    warnings.extend(found)
    dmarc_rua, found_d = _rua_setting(settings, "dns_records_dmarc_rua", ("mailto:",))
    tlsrpt_rua, found_t = _rua_setting(settings, "dns_records_tlsrpt_rua", ("mailto:", "https:"))
    warnings.extend(found_d + found_t)
    mode = settings.raw("dns_records_mta_sts_mode")
    if mode == "enforce" and not (
        settings.raw("smtpd_tls_cert_file") or settings.words("smtpd_tls_chain_files")
    ):
        warnings.append(
            "dns_records_mta_sts_mode = enforce but no smtpd TLS certificate is configured: "
            "senders that honour MTA-STS will not deliver"
        )
    return RecordOptions(
        hostname=settings.raw("myhostname"),
        domains=chosen,
        addresses=addresses,
        ttl=settings.integer("dns_records_ttl"),
        dmarc_policy=settings.raw("dns_records_dmarc_policy"),
        dmarc_rua=dmarc_rua,
        tlsrpt_rua=tlsrpt_rua,
        mta_sts_mode=mode,
        relayhost=settings.raw("relayhost"),
        warnings=tuple(warnings),
    )


# --- record values -------------------------------------------------------------------


def spf_value(addresses: Iterable[IPAddress], *, host_only: bool = False) -> str:
    """``v=spf1 mx a ip4:… ip6:… -all``; ``host_only``: the HELO record ``v=spf1 a -all``.

    ``mx`` and ``a`` keep the record right when an address changes; the literal ip4/ip6
    terms let receivers decide without further lookups (each mx/a costs one of ten)."""
    terms = ["v=spf1", "a"] if host_only else ["v=spf1", "mx", "a"]
    for addr in addresses:
        terms.append(f"ip{addr.version}:{addr}")
    terms.append("-all")
    return " ".join(terms)


def mta_sts_policy(mode: str, mx_hosts: Sequence[str], max_age: int = MTA_STS_MAX_AGE) -> str:
    """The policy file (RFC 8461 §3.2), CRLF line ends, ``mx`` without trailing dots."""
    lines = ["version: STSv1", f"mode: {mode}"]
    lines.extend(f"mx: {h.rstrip('.')}" for h in mx_hosts)
    lines.append(f"max_age: {max_age}")
    return "".join(line + "\r\n" for line in lines)


def mta_sts_id(policy: str) -> str:
    """A stable id (1-32 alphanumerics, RFC 8461 §3.1) derived from the policy text."""
    return hashlib.sha256(policy.encode()).hexdigest()[:20]


def _mailto(value: str, domain: str) -> str:
    if not value:
        return f"mailto:postmaster@{domain}"
    return value if value.startswith(("mailto:", "https:")) else f"mailto:{value}"


def _rua_domain(uri: str) -> str | None:
    if not uri.startswith("mailto:"):
        return None
    return uri.rpartition("@")[2].rstrip(".").lower() or None


# --- the record set ------------------------------------------------------------------


def build_records(options: RecordOptions, dkim: Sequence[DkimPublicKey] = ()) -> RecordSet:
    """The record set for ``options`` (pure). Raises RecordsError for a bad host name."""
    host = absolute(options.hostname)
    if _is_local(host):
        raise RecordsError(
            f"myhostname = {options.hostname} is not a public host name: set myhostname"
        )
    warnings = list(options.warnings)
    domains: list[str] = []
    for d in options.domains:
        try:
            name = absolute(d)
        except RecordsError as exc:
            warnings.append(str(exc))
            continue
        if name not in domains:
            domains.append(name)
    by_domain: dict[str, list[DkimPublicKey]] = {}
    for key in dkim:
        by_domain.setdefault(absolute(key.domain), []).append(key)
    for dom in by_domain:
        if dom not in domains:
            warnings.append(f"DKIM key for {dom.rstrip('.')} is not for one of the listed domains")

    host_records = _host_records(host, options, is_mail_domain=host in domains)
    # The host's own records go into the fragment of the deepest domain holding it.
    holder = max((d for d in domains if _under(host, d)), key=len, default=None)
    zones: list[DomainRecords] = []
    for dom in domains:
        extra = host_records if dom == holder else ()
        zones.append(_domain_zone(dom, host, options, by_domain.get(dom, ()), extra))
    if holder is None:
        zones.append(
            DomainRecords(
                host.rstrip("."),
                host_records,
                notes=(f"{host} is not under a listed domain: publish these in its zone",),
            )
        )
    ptr = tuple(
        Record(
            dns.reversename.from_address(str(a)).to_text(),
            "PTR",
            host,
            f"ask the provider of {a} to set it (forward-confirmed: {host} has {a})",
        )
        for a in options.addresses
    )
    return RecordSet(
        hostname=host,
        addresses=tuple(str(a) for a in options.addresses),
        ttl=options.ttl,
        zones=tuple(zones),
        ptr=ptr,
        warnings=tuple(warnings),
    )


def _host_records(host: str, options: RecordOptions, *, is_mail_domain: bool) -> tuple[Record, ...]:
    out = [
        Record(host, "A" if a.version == 4 else "AAAA", str(a), "this host (myhostname)")
        for a in options.addresses
    ]
    if not is_mail_domain:
        # Receivers check SPF for the HELO name too (RFC 7208 §2.3), and bounces
        # (null sender) are judged by it alone.
        out.append(
            Record(host, "TXT", spf_value(options.addresses, host_only=True), "SPF for HELO")
        )
    return tuple(out)


def _domain_zone(
    dom: str,
    host: str,
    options: RecordOptions,
    keys: Sequence[DkimPublicKey],
    host_records: tuple[Record, ...],
) -> DomainRecords:
    bare = dom.rstrip(".")
    notes: list[str] = []
    records = [Record(dom, "MX", f"10 {host}", "mail for this domain goes to this host")]
    records.extend(host_records)
    spf_note = "SPF: the hosts allowed to send as this domain"
    if options.relayhost:
        spf_note += f"; mail leaves through relayhost {options.relayhost}"
        notes.append(
            f"relayhost = {options.relayhost}: add the relay provider's own SPF term "
            f"(e.g. include:…) before -all in the SPF record of {bare}"
        )
    records.append(Record(dom, "TXT", spf_value(options.addresses), spf_note))
    for key in sorted(keys, key=lambda k: k.selector):
        records.append(
            Record(
                absolute(f"{key.selector}._domainkey.{bare}"),
                "TXT",
                key.txt,
                f"DKIM key, selector {key.selector}",
            )
        )
    if not keys:
        notes.append(f"no DKIM key for {bare}: generate one with `ironpost dkim keygen`")
    rua = _mailto(options.dmarc_rua, bare)
    records.append(
        Record(
            absolute(f"_dmarc.{bare}"),
            "TXT",
            f"v=DMARC1; p={options.dmarc_policy}; rua={rua}",
            "DMARC policy and aggregate reports",
        )
    )
    rua_domain = _rua_domain(rua)
    if rua_domain is not None and absolute(rua_domain) != dom:
        notes.append(
            f"DMARC reports go to another domain: {rua_domain} must publish "
            f'{bare}._report._dmarc.{rua_domain}. TXT "v=DMARC1" (RFC 7489 §7.1)'
        )
    policy = mta_sts_policy(options.mta_sts_mode, [host])
    policy_id = mta_sts_id(policy)
    records.append(
        Record(
            absolute(f"_mta-sts.{bare}"),
            "TXT",
            f"v=STSv1; id={policy_id}",
            "MTA-STS: the id changes whenever the policy does",
        )
    )
    records.append(
        Record(
            absolute(f"_smtp._tls.{bare}"),
            "TXT",
            f"v=TLSRPTv1; rua={_mailto(options.tlsrpt_rua, bare)}",
            "TLS-RPT: where senders report TLS failures",
        )
    )
    mta_sts = MtaSts(
        url=f"https://mta-sts.{bare}/.well-known/mta-sts.txt",
        policy=policy,
        policy_id=policy_id,
        host=absolute(f"mta-sts.{bare}"),
    )
    return DomainRecords(bare, tuple(records), tuple(notes), mta_sts)
