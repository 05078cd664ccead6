"""Published records: SPF authorises us, DKIM keys match ours, DMARC is sane, and the
MTA-STS / TLS-RPT records exist when configured.

Owns :func:`check_published` and the small tag parsers it needs (:func:`tags`,
:func:`dkim_public_key`). SPF is judged by our own SPF engine (``auth.spf``, pyspf over
our resolver), exactly as a receiver would evaluate it, never by reading the record
text; DKIM compares the published ``p=`` with the public half of our private key.

Invariant: no key is ever created (``ensure_auto_keys`` is the server's job); a key
that cannot be read is reported, not fixed.
"""

from __future__ import annotations

import asyncio
import re

from ironpost.auth.dkim_keys import SigningKey, txt_record
from ironpost.auth.dnsbridge import BlockingDns
from ironpost.auth.spf import check_spf
from ironpost.dns.types import Status
from ironpost.doctor.check import Check, Inputs, failed, passed, warned

FAMILY = "records"
_SPACE = re.compile(r"\s+")


def tags(record: str) -> dict[str, str]:
    """``v=DMARC1; p=none`` -> ``{"v": "DMARC1", "p": "none"}`` (names lowercased,
    values stripped; the first occurrence of a tag wins)."""
    out: dict[str, str] = {}
    for part in record.split(";"):
        name, sep, value = part.partition("=")
        name = name.strip().lower()
        if sep and name and name not in out:
            out[name] = value.strip()
    return out


def dkim_public_key(record: str) -> tuple[str, str]:
    """``(k, p)`` of a DKIM key record: the algorithm (default rsa) and the key data
    with its whitespace removed (RFC 6376 §3.6.1 allows folding whitespace in p=)."""
    found = tags(record)
    return found.get("k", "rsa").lower(), _SPACE.sub("", found.get("p", ""))


async def check_published(inputs: Inputs) -> list[Check]:
    out: list[Check] = []
    out.extend(await _check_spf(inputs))
    out.extend(await _check_dkim(inputs))
    for domain in inputs.domains:
        out.append(await _check_dmarc(inputs, domain))
    out.extend(await _check_sts(inputs))
    return out


def _expected(inputs: Inputs, name: str, prefix: str) -> str | None:
    """The value ``ironpost dns records`` would publish at ``name`` (for fix texts)."""
    if inputs.records is None:
        return None
    absolute = name.rstrip(".") + "."
    for record in inputs.records.expected():
        if record.name == absolute and record.type == "TXT" and record.value.startswith(prefix):
            return record.value
    return None


def _publish(inputs: Inputs, name: str, prefix: str, fallback: str) -> str:
    value = _expected(inputs, name, prefix) or fallback
    return f'publish {name}. TXT "{value}" (see `ironpost dns records`)'


async def _check_spf(inputs: Inputs) -> list[Check]:
    if not inputs.addresses:
        return []  # names.py already failed "no public address known"
    blocking = BlockingDns(inputs.resolver, asyncio.get_running_loop())
    out: list[Check] = []
    host = inputs.hostname
    identities = [(d, f"postmaster@{d}") for d in inputs.domains]
    if host not in inputs.domains:
        identities.append((host, ""))  # the HELO identity (RFC 7208 §2.3), bounces use it
    for domain, sender in identities:
        for address in inputs.addresses:
            what = "HELO " if not sender else ""
            title = f"SPF {what}{domain} for {address}"
            result = await check_spf(blocking, str(address), sender, host, receiver=host)
            fix = _publish(
                inputs, domain, "v=spf1", f"v=spf1 mx a ip{address.version}:{address} -all"
            )
            if result.result == "pass":
                mech = f" ({result.mechanism})" if result.mechanism else ""
                out.append(passed(FAMILY, title, f"pass{mech}"))
            elif result.result == "temperror":
                out.append(
                    warned(
                        FAMILY,
                        title,
                        f"temperror: {result.explanation}",
                        "check the resolver, then rerun",
                    )
                )
            elif result.result == "none":
                out.append(failed(FAMILY, title, "no SPF record", fix))
            else:
                why = f": {result.explanation}" if result.explanation else ""
                out.append(
                    failed(FAMILY, title, f"{result.result}: {address} is not authorised{why}", fix)
                )
    return out


async def _check_dkim(inputs: Inputs) -> list[Check]:
    if inputs.dkim_error is not None:
        return [
            failed(
                FAMILY,
                "DKIM keys",
                inputs.dkim_error,
                "fix dkim_signing_table or the key file it names (`ironpost dkim list`)",
            )
        ]
    if not inputs.dkim_keys:
        return [
            warned(
                FAMILY,
                "DKIM keys",
                "no signing key: outgoing mail is not DKIM-signed",
                "run `ironpost dkim keygen` and set dkim_signing_table, or start the server "
                "once with dkim_auto_keys = yes",
            )
        ]
    return [await _check_dkim_key(inputs, key) for key in inputs.dkim_keys]


async def _check_dkim_key(inputs: Inputs, key: SigningKey) -> Check:
    name = key.dns_name
    title = f"DKIM {name}"
    fix = f'publish {name}. TXT "{txt_record(key)}" (see `ironpost dkim list`)'
    result = await inputs.resolver.txt(name)
    if result.status is Status.TEMPFAIL:
        return warned(FAMILY, title, f"DNS temporary failure ({result.error})", "rerun later")
    records = [r for r in result.records if tags(r).get("v", "DKIM1") == "DKIM1" and "p" in tags(r)]
    if not records:
        return failed(
            FAMILY, title, "no key published: receivers cannot verify our signatures", fix
        )
    if len(records) > 1:
        return failed(FAMILY, title, f"{len(records)} key records: verifiers give up", fix)
    algorithm, public = dkim_public_key(records[0])
    if not public:
        return failed(FAMILY, title, "the published key is revoked (empty p=)", fix)
    if public != key.public_b64 or algorithm != key.algorithm:
        return failed(
            FAMILY,
            title,
            f"the published key does not match our private key {key.private_path}: "
            "every signature fails",
            fix,
        )
    return passed(FAMILY, title, f"published key matches ({key.algorithm}, {key.bits} bits)")


async def _check_dmarc(inputs: Inputs, domain: str) -> Check:
    name = f"_dmarc.{domain}"
    title = f"DMARC {domain}"
    fix = _publish(
        inputs, name, "v=DMARC1", f"v=DMARC1; p=quarantine; rua=mailto:postmaster@{domain}"
    )
    result = await inputs.resolver.txt(name)
    if result.status is Status.TEMPFAIL:
        return warned(FAMILY, title, f"DNS temporary failure ({result.error})", "rerun later")
    records = [r for r in result.records if r.strip().startswith("v=DMARC1")]
    if not records:
        return failed(FAMILY, title, f"no DMARC record at {name}", fix)
    if len(records) > 1:
        return failed(
            FAMILY, title, f"{len(records)} DMARC records: receivers ignore them all", fix
        )
    found = tags(records[0])
    policy = found.get("p", "").lower()
    if policy not in ("none", "quarantine", "reject"):
        return failed(FAMILY, title, f"p={policy or '(missing)'} is not a DMARC policy", fix)
    if policy == "none":
        return warned(
            FAMILY,
            title,
            "p=none: forged mail in this domain's name is delivered anyway",
            f"once reports show our mail passing, raise {name} to p=quarantine, then p=reject",
        )
    pct = found.get("pct", "100")
    if pct != "100":
        return warned(
            FAMILY,
            title,
            f"p={policy} but pct={pct}: the policy covers part of the mail only",
            f"remove pct= from {name} (it defaults to 100)",
        )
    rua = " with reports" if "rua" in found else ", no aggregate reports (rua=)"
    return passed(FAMILY, title, f"p={policy}{rua}")


async def _check_sts(inputs: Inputs) -> list[Check]:
    mode = inputs.settings.raw("dns_records_mta_sts_mode")
    tlsrpt = bool(inputs.settings.raw("dns_records_tlsrpt_rua").strip())
    if mode == "none" and not tlsrpt:
        return []
    out: list[Check] = []
    for domain in inputs.domains:
        if mode != "none":
            out.append(await _check_txt(inputs, f"_mta-sts.{domain}", "v=STSv1", "MTA-STS"))
        out.append(await _check_txt(inputs, f"_smtp._tls.{domain}", "v=TLSRPTv1", "TLS-RPT"))
    return out


async def _check_txt(inputs: Inputs, name: str, prefix: str, what: str) -> Check:
    title = f"{what} {name}"
    fix = _publish(inputs, name, prefix, prefix)
    result = await inputs.resolver.txt(name)
    if result.status is Status.TEMPFAIL:
        return warned("records", title, f"DNS temporary failure ({result.error})", "rerun later")
    records = [r for r in result.records if r.startswith(prefix)]
    if len(records) != 1:
        found = "no record" if not records else f"{len(records)} records"
        return warned(FAMILY, title, f"{found}: senders will not use {what}", fix)
    expected = _expected(inputs, name, prefix)
    if what == "MTA-STS" and expected is not None:
        want, have = tags(expected).get("id"), tags(records[0]).get("id")
        if want != have:
            return warned(
                FAMILY,
                title,
                f"id={have}, but the current policy's id is {want}: senders keep the old policy",
                fix + " and serve the new policy file",
            )
    return passed(FAMILY, title, records[0])
