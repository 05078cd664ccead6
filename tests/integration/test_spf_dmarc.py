"""SPF and DMARC against a real DNS server (dnsmasq on loopback), SPF cross-checked with
libspf2's ``spfquery`` on the same zones.

spfquery has no option to choose its nameserver: it reads /etc/resolv.conf, whose
nameservers are always on port 53. So each spfquery runs in its own *mount namespace*
(``unshare --mount``), where a private resolv.conf is bind-mounted over /etc/resolv.conf
(the machine's file is never touched), pointing at a forwarding dnsmasq on
``127.53.x.y:53`` that relays to the test's dnsmasq. Binding port 53 and unsharing need
root; without it, or without spfquery, the cross-check is skipped (our own results are
still checked against the expected values).
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import pytest
from dns_server import DnsServer, start_dns_server

from ironpost.auth.dmarc import evaluate_dmarc
from ironpost.auth.dnsbridge import BlockingDns
from ironpost.auth.inbound import InboundAuth
from ironpost.auth.spf import check_spf
from ironpost.auth.types import DkimResult, DmarcResult, SpfResult
from ironpost.dns.resolver import DnsResolver

pytestmark = pytest.mark.integration

SPFQUERY = shutil.which("spfquery.libspf2") or shutil.which("spfquery")

ZONES: dict[str, dict[str, Any]] = {
    # SPF, one domain per kind of mechanism or modifier
    "ip4.spf.test": {"TXT": ["v=spf1 ip4:192.0.2.0/24 -all"]},
    "ip6.spf.test": {"TXT": ["v=spf1 ip6:2001:db8::/32 -all"]},
    "a.spf.test": {"TXT": ["v=spf1 a -all"], "A": ["198.51.100.1"]},
    "mx.spf.test": {"TXT": ["v=spf1 mx ~all"], "MX": [(10, "mx1.mx.spf.test")]},
    "mx1.mx.spf.test": {"A": ["203.0.113.10"]},
    "include.spf.test": {"TXT": ["v=spf1 include:ip4.spf.test ?all"]},
    "redirect.spf.test": {"TXT": ["v=spf1 redirect=ip4.spf.test"]},
    "exists.spf.test": {"TXT": ["v=spf1 exists:%{i}.allow.spf.test -all"]},
    "192.0.2.9.allow.spf.test": {"A": ["127.0.0.2"]},
    "ptr.spf.test": {"TXT": ["v=spf1 ptr -all"]},
    "mail.ptr.spf.test": {"A": ["198.51.100.50"]},  # dnsmasq publishes the PTR too
    "exp.spf.test": {"TXT": ["v=spf1 -all exp=why.exp.spf.test"]},
    "why.exp.spf.test": {"TXT": ["%{i} is not one of %{d}'s servers"]},
    "softfail.spf.test": {"TXT": ["v=spf1 ~all"]},
    "neutral.spf.test": {"TXT": ["v=spf1 ?all"]},
    "noall.spf.test": {"TXT": ["v=spf1 ip4:192.0.2.1"]},
    "two.spf.test": {"TXT": ["v=spf1 -all", "v=spf1 +all"]},
    "syntax.spf.test": {"TXT": ["v=spf1 ip4:192.0.2.300 -all"]},
    "other.spf.test": {"TXT": ["google-site-verification=abc"]},
    "lookups.spf.test": {
        "TXT": ["v=spf1 " + " ".join(f"a:h{i}.spf.test" for i in range(11)) + " -all"]
    },
    "ten.spf.test": {
        "TXT": ["v=spf1 " + " ".join(f"a:h{i}.spf.test" for i in range(10)) + " -all"]
    },
    **{f"h{i}.spf.test": {"A": [f"10.0.0.{i + 1}"]} for i in range(11)},
    "void.spf.test": {"TXT": ["v=spf1 a:n1.spf.test a:n2.spf.test a:n3.spf.test -all"]},
    "inctemp.spf.test": {"TXT": ["v=spf1 include:x.servfail.test -all"]},
    "helo.spf.test": {"TXT": ["v=spf1 ip4:192.0.2.44 -all"]},
    # DMARC
    "_dmarc.org.test": {"TXT": ["v=DMARC1; p=reject; sp=quarantine"]},
    "_dmarc.strict.test": {"TXT": ["v=DMARC1; p=reject; adkim=s; aspf=s"]},
    "_dmarc.pct.test": {"TXT": ["v=DMARC1; p=reject; pct=30"]},
    "org.test": {"TXT": ["v=spf1 ip4:192.0.2.0/24 -all"]},
    "bounce.org.test": {"TXT": ["v=spf1 ip4:192.0.2.0/24 -all"]},
}

# (client ip, MAIL FROM, HELO, expected result)
SPF_CASES = [
    ("192.0.2.7", "u@ip4.spf.test", "h.example", "pass"),
    ("198.51.100.1", "u@ip4.spf.test", "h.example", "fail"),
    ("2001:db8::1", "u@ip6.spf.test", "h.example", "pass"),
    ("2001:db9::1", "u@ip6.spf.test", "h.example", "fail"),
    ("198.51.100.1", "u@a.spf.test", "h.example", "pass"),
    ("198.51.100.2", "u@a.spf.test", "h.example", "fail"),
    ("203.0.113.10", "u@mx.spf.test", "h.example", "pass"),
    ("203.0.113.11", "u@mx.spf.test", "h.example", "softfail"),
    ("192.0.2.8", "u@include.spf.test", "h.example", "pass"),
    ("198.51.100.1", "u@include.spf.test", "h.example", "neutral"),
    ("192.0.2.8", "u@redirect.spf.test", "h.example", "pass"),
    ("198.51.100.1", "u@redirect.spf.test", "h.example", "fail"),
    ("192.0.2.9", "u@exists.spf.test", "h.example", "pass"),
    ("192.0.2.10", "u@exists.spf.test", "h.example", "fail"),
    ("198.51.100.50", "u@ptr.spf.test", "h.example", "pass"),
    ("198.51.100.51", "u@ptr.spf.test", "h.example", "fail"),
    ("198.51.100.3", "u@exp.spf.test", "h.example", "fail"),
    ("198.51.100.3", "u@softfail.spf.test", "h.example", "softfail"),
    ("198.51.100.3", "u@neutral.spf.test", "h.example", "neutral"),
    ("198.51.100.3", "u@noall.spf.test", "h.example", "neutral"),
    ("198.51.100.3", "u@other.spf.test", "h.example", "none"),
    ("198.51.100.3", "u@nonexistent.spf.test", "h.example", "none"),
    ("198.51.100.3", "u@two.spf.test", "h.example", "permerror"),
    ("198.51.100.3", "u@syntax.spf.test", "h.example", "permerror"),
    ("198.51.100.3", "u@ten.spf.test", "h.example", "fail"),
    ("198.51.100.3", "u@lookups.spf.test", "h.example", "permerror"),
    ("198.51.100.3", "u@void.spf.test", "h.example", "permerror"),
    ("198.51.100.3", "u@x.servfail.test", "h.example", "temperror"),
    ("198.51.100.3", "u@inctemp.spf.test", "h.example", "temperror"),
    ("192.0.2.44", "", "helo.spf.test", "pass"),
    ("192.0.2.45", "", "helo.spf.test", "fail"),
]

# Where libspf2 (1.2.10) knowingly departs from RFC 7208, which pyspf follows:
# it has no void-lookup limit (§4.6.4, added after libspf2's last release).
LIBSPF2_DIFFERS = {"u@void.spf.test": "fail"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsServer]:
    srv = start_dns_server(ZONES, tmp_path_factory.mktemp("spfdns"))
    yield srv
    srv.stop()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def resolver_for(server: DnsServer) -> DnsResolver:
    return DnsResolver([server.nameserver], timeout=2.0)


async def ours(server: DnsServer, ip: str, sender: str, helo: str) -> SpfResult:
    blocking = BlockingDns(resolver_for(server), asyncio.get_running_loop(), timeout=5.0)
    return await check_spf(blocking, ip, sender, helo, timeout=10.0)


@pytest.mark.parametrize(("ip", "sender", "helo", "expected"), SPF_CASES)
def test_spf_on_real_dns(server: DnsServer, ip: str, sender: str, helo: str, expected: str) -> None:
    assert run(ours(server, ip, sender, helo)).result == expected


def test_exp_explanation_on_real_dns(server: DnsServer) -> None:
    got = run(ours(server, "198.51.100.3", "u@exp.spf.test", "h.example"))
    assert got.explanation == "198.51.100.3 is not one of exp.spf.test's servers"


def test_queries_reach_the_test_server_only(server: DnsServer) -> None:
    run(ours(server, "203.0.113.10", "u@mx.spf.test", "h.example"))
    asked = server.queries()
    assert "TXT mx.spf.test" in asked and "MX mx.spf.test" in asked


# --- cross-check with libspf2 ------------------------------------------------------------


class SpfQuery:
    """Runs libspf2's spfquery with DNS pointed at the test server (see module doc)."""

    def __init__(self, server: DnsServer, directory: Path) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.resolv = directory / "resolv.conf"
        rng = random.Random(os.getpid())
        for _ in range(20):
            address = f"127.53.{rng.randrange(1, 255)}.{rng.randrange(1, 255)}"
            process = subprocess.Popen(
                [
                    "/usr/sbin/dnsmasq",
                    "--keep-in-foreground",
                    "--no-resolv",
                    "--no-hosts",
                    "--bind-interfaces",
                    f"--listen-address={address}",
                    "--port=53",
                    "--cache-size=0",
                    "--no-negcache",
                    "--pid-file=",
                    f"--server={server.address}#{server.port}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if self._ready(address, process):
                self.process = process
                break
            if process.poll() is None:
                process.kill()
            process.wait(timeout=5)
        else:
            raise RuntimeError("no loopback address free for the forwarding dnsmasq")
        self.resolv.write_text(f"nameserver {address}\noptions timeout:2 attempts:2\n")

    @staticmethod
    def _ready(address: str, process: subprocess.Popen[bytes]) -> bool:
        query = dns.message.make_query("ready.spf.test", "A")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            try:
                dns.query.udp(query, address, port=53, timeout=0.2)
                return True
            except Exception:
                time.sleep(0.05)
        return False

    def __call__(self, ip: str, sender: str, helo: str) -> str:
        # spfquery has no null-sender mode; RFC 7208 §2.4 defines that identity as
        # postmaster@<HELO>, which is what it is given instead.
        args = [SPFQUERY or "spfquery", "-ip", ip, "-helo", helo]
        args += ["-sender", sender or f"postmaster@{helo}"]
        script = 'mount --bind "$0" /etc/resolv.conf && exec "$@"'
        out = subprocess.run(
            ["unshare", "--mount", "sh", "-c", script, str(self.resolv), *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return self.parse(out.stdout, out.stderr)

    @staticmethod
    def parse(stdout: str, stderr: str = "") -> str:
        """The result word, skipping the StartError..EndError diagnostics block.

        libspf2 prints "(invalid)" when the checked domain's own record cannot be used:
        a temporary lookup failure (its error code 26, "DNS lookup failure"), which is
        RFC 7208's temperror, or a record that does not compile, which is permerror.
        """
        errors: list[str] = []
        in_error = False
        for line in stdout.splitlines():
            if line == "StartError":
                in_error = True
            elif line == "EndError":
                in_error = False
            elif in_error:
                errors.append(line)
            elif line.strip():
                word = line.strip().lower()
                if word == "(invalid)" and any("(26)" in e for e in errors):
                    return "temperror"
                if word == "(invalid)" and any("Failed to compile" in e for e in errors):
                    return "permerror"
                return word
        raise RuntimeError(f"spfquery gave no result: {stderr.strip()}")

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=5)


@pytest.fixture(scope="module")
def spfquery(server: DnsServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SpfQuery]:
    if SPFQUERY is None:
        pytest.skip("libspf2's spfquery is not installed")
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("the spfquery cross-check needs root (mount namespace, port 53)")
    query = SpfQuery(server, tmp_path_factory.mktemp("spfquery"))
    yield query
    query.close()


@pytest.mark.parametrize(("ip", "sender", "helo", "expected"), SPF_CASES)
def test_libspf2_agrees(
    spfquery: SpfQuery, server: DnsServer, ip: str, sender: str, helo: str, expected: str
) -> None:
    theirs = spfquery(ip, sender, helo)
    mine = run(ours(server, ip, sender, helo)).result
    assert theirs == LIBSPF2_DIFFERS.get(sender, mine), (sender, ip, theirs, mine)


# --- DMARC golden cases on real DNS --------------------------------------------------------


def spf(result: str, domain: str) -> SpfResult:
    return SpfResult(result, domain, "mailfrom", "192.0.2.1")


DMARC_CASES = [
    # (name, From domain, SPF, DKIM d= that passed, rand, result, disposition)
    ("aligned relaxed spf", "org.test", spf("pass", "bounce.org.test"), (), 0.0, "pass", "none"),
    ("aligned dkim", "org.test", None, ("mail.org.test",), 0.0, "pass", "none"),
    ("unaligned", "org.test", spf("pass", "else.test"), ("else.test",), 0.0, "fail", "reject"),
    ("subdomain sp", "news.org.test", None, (), 0.0, "fail", "quarantine"),
    ("strict spf", "strict.test", spf("pass", "a.strict.test"), (), 0.0, "fail", "reject"),
    ("strict dkim", "strict.test", None, ("strict.test",), 0.0, "pass", "none"),
    ("relaxed dkim on strict", "strict.test", None, ("a.strict.test",), 0.0, "fail", "reject"),
    ("pct in", "pct.test", None, (), 0.29, "fail", "reject"),
    ("pct out", "pct.test", None, (), 0.31, "fail", "quarantine"),
    ("no record", "none.test", None, (), 0.0, "none", "none"),
    ("servfail", "x.servfail.test", None, (), 0.0, "temperror", "none"),
]


@pytest.mark.parametrize(
    ("frm", "spf_result", "dkim_domains", "rand", "result", "disposition"),
    [case[1:] for case in DMARC_CASES],
    ids=[case[0] for case in DMARC_CASES],
)
def test_dmarc_on_real_dns(
    server: DnsServer,
    frm: str,
    spf_result: SpfResult | None,
    dkim_domains: tuple[str, ...],
    rand: float,
    result: str,
    disposition: str,
) -> None:
    dkim = tuple(DkimResult("pass", d, "s") for d in dkim_domains)
    got: DmarcResult = run(
        evaluate_dmarc(resolver_for(server), frm, spf_result, dkim, rand=lambda: rand)
    )
    assert (got.result, got.disposition) == (result, disposition)


def test_pipeline_on_real_dns(server: DnsServer) -> None:
    content = b"From: a@org.test\r\nSubject: x\r\n\r\nbody\r\n"

    async def go(client: str) -> Any:
        auth = InboundAuth(resolver_for(server), "mx.ours.test", enforce_dmarc=True)
        return await auth.check(
            content,
            client_address=client,
            helo="h.example",
            sender="a@bounce.org.test",
            spf=None,
            skip_dmarc=False,
        )

    good = run(go("192.0.2.5"))
    bad = run(go("198.51.100.5"))
    assert good.reply is None and b"dmarc=pass" in good.headers
    assert b"spf=pass smtp.mailfrom=a@bounce.org.test" in good.headers
    assert bad.reply is not None and (bad.reply.code, bad.reply.enhanced) == (550, "5.7.1")
