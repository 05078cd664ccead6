"""The inbound checking pipeline the server calls at end of DATA: SPF, DKIM, ARC, DMARC,
then the header fields that record them.

Owns :class:`InboundAuth` (configured once from the settings) and :class:`InboundVerdict`
(what one message gets: header fields to prepend, the content with forged fields
removed, and a DMARC refusal or quarantine). SPF, DKIM, ARC, DMARC and the header fields
are computed in *one* worker thread per message (pyspf and dkimpy are blocking
libraries): one thread hop, where a check per thread and a loop round trip per DNS
question cost more than the checks themselves. Their queries go through
:class:`~ironpost.auth.dnsbridge.BlockingDns` and its :class:`AnswerCache`, so answers the
resolver gave recently are read in the worker; on a cold cache the first TXT lookups are
started on the loop before the hop, so they still overlap.

Invariants:
- ``check`` never raises for anything in the message or the DNS; a verifier that crashes
  counts as ``temperror`` for its method (never ``pass``);
- DMARC refuses or quarantines only when ``reject_dmarc_policy`` is in a restriction list,
  only on a ``fail`` (never on a temperror), and never for ``skip_dmarc`` mail (our
  SASL-authenticated submissions and ``$mynetworks``);
- the prepended fields come in this order: Authentication-Results, then the quarantine
  marker (if any), then Received-SPF; incoming copies of our A-R and of the marker are
  always removed from ``content``, so the marker can only be ours.
"""

from __future__ import annotations

import asyncio
import importlib
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ironpost.auth.answers import AnswerCache
from ironpost.auth.dmarc import evaluate_dmarc, evaluate_dmarc_blocking, from_domains, worst
from ironpost.auth.dnsbridge import BlockingDns
from ironpost.auth.results import (
    QUARANTINE_FIELD,
    authentication_results,
    header_end,
    received_spf,
    strip_forged,
)
from ironpost.auth.spf import SPF_TIMEOUT, SpfQuery, prepare_spf, run_spf, timed_out
from ironpost.auth.types import ArcResult, DkimResult, DmarcResult, InboundResults, SpfResult
from ironpost.dns.types import Resolver, Result
from ironpost.policy.context import enhanced_for
from ironpost.policy.verdicts import Stage
from ironpost.protocol.replies import Reply
from ironpost.routing.settings import optional


def _optional_verifier(module: str, name: str) -> Callable[..., Any] | None:
    """The DKIM/ARC verifier if that part of issue #5 is in the tree, else None ("none")."""
    try:
        verifier: Callable[..., Any] = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None
    return verifier


_verify_dkim = _optional_verifier("ironpost.auth.dkim_verify", "verify_dkim")
_verify_arc = _optional_verifier("ironpost.auth.arc", "verify_arc")
DEFAULT_REJECT_TEXT = "Rejected by the DMARC policy of"


class AuthSettings(Protocol):
    def text(self, name: str) -> str: ...

    def integer(self, name: str) -> int: ...

    def boolean(self, name: str) -> bool: ...

    def words(self, name: str) -> tuple[str, ...]: ...

    def seconds(self, name: str) -> float: ...


@dataclass(frozen=True, slots=True)
class InboundVerdict:
    headers: bytes  # header lines to prepend (A-R, Received-SPF), CRLF-terminated
    content: bytes  # the message with forged A-R headers removed (unchanged object if none)
    reply: Reply | None  # DMARC reject (550 5.7.1 …) or None
    quarantine: bool  # DMARC quarantine applied
    results: InboundResults


def dmarc_enforced(settings: AuthSettings) -> bool:
    """True if ``reject_dmarc_policy`` appears in any ``smtpd_*_restrictions`` list."""
    none: tuple[str, ...] = ()
    return any(
        "reject_dmarc_policy" in optional(settings.words, stage.value, none) for stage in Stage
    )


@dataclass(slots=True)
class InboundAuth:
    resolver: Resolver
    authserv_id: str
    loop: asyncio.AbstractEventLoop | None = None
    enforce_dmarc: bool = False
    dmarc_reject_code: int = 550
    dmarc_reject_text: str = DEFAULT_REJECT_TEXT
    quarantine_action: str = "junk"  # or "header": A-R only, no marker
    received_spf: bool = True
    spf_timeout: float = SPF_TIMEOUT
    dkim_max_signatures: int = 5
    dkim_timeout: float = 10.0
    rand: Callable[[], float] = random.random
    # The verifiers, replaceable so the pipeline can run before/without them.
    verify_dkim: Callable[..., Sequence[DkimResult]] | None = _verify_dkim
    verify_arc: Callable[[bytes, BlockingDns], ArcResult] | None = _verify_arc

    @classmethod
    def from_settings(
        cls,
        settings: AuthSettings,
        resolver: Resolver,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> InboundAuth:
        authserv_id = optional(settings.text, "authserv_id", "") or settings.text("myhostname")
        return cls(
            resolver=resolver,
            authserv_id=authserv_id,
            loop=loop,
            enforce_dmarc=dmarc_enforced(settings),
            dmarc_reject_code=optional(settings.integer, "dmarc_reject_code", 550),
            dmarc_reject_text=optional(settings.text, "dmarc_reject_text", DEFAULT_REJECT_TEXT),
            quarantine_action=optional(settings.text, "dmarc_quarantine_action", "junk"),
            received_spf=optional(settings.boolean, "spf_received_header", True),
            spf_timeout=optional(settings.seconds, "spf_check_timeout", SPF_TIMEOUT),
            dkim_max_signatures=optional(settings.integer, "dkim_max_signatures", 5),
            dkim_timeout=optional(settings.seconds, "dkim_key_fetch_timeout", 10.0),
        )

    # Past its own deadlines, how long a check may still run before what is missing
    # counts as temperror (a verifier overrunning them: a bug or pathological input).
    overrun_slack: float = 5.0
    answers: AnswerCache = field(default_factory=AnswerCache, repr=False)
    _bridge: BlockingDns | None = field(default=None, repr=False)
    _prefetching: set[asyncio.Task[Any]] = field(default_factory=set, repr=False)

    # --- the checks, in one worker thread ---------------------------------------------------

    def _dns(self, loop: asyncio.AbstractEventLoop) -> BlockingDns:
        """The bridge, made once per loop: it shares :attr:`answers` between messages."""
        bridge = self._bridge
        if bridge is None or bridge.loop is not loop:
            timeout = min(self.dkim_timeout, self.spf_timeout)
            bridge = BlockingDns(self.resolver, loop, timeout=timeout, cache=self.answers)
            self._bridge = bridge
        return bridge

    def _run_checks(
        self,
        content: bytes,
        dns: BlockingDns,
        spf: SpfQuery | SpfResult,
        sender: str,
        helo: str,
        skip_dmarc: bool,
        started: float,
        done: _Progress,
    ) -> InboundVerdict:
        """SPF, DKIM, ARC, DMARC and the header fields, blocking (in a worker thread).

        Each result goes into ``done`` as soon as it is known, so a caller that stops
        waiting still has the finished ones. Deadlines run from ``started``, as if the
        checks ran side by side (their first DNS questions were asked at ``started``)."""
        if isinstance(spf, SpfQuery):
            deadline = started + self.spf_timeout
            spf = run_spf(dns, spf, deadline=deadline, receiver=self.authserv_id)
        done.spf = spf
        done.dkim = self._dkim(content, dns, started)
        done.arc = self._arc(content, dns)
        done.arc_done = True
        if not skip_dmarc:
            done.dmarc = self._dmarc(content, spf, done.dkim, dns.txt)
            done.dmarc_done = True
        return self._verdict(content, sender, helo, done)

    def _dkim(self, content: bytes, dns: BlockingDns, started: float) -> tuple[DkimResult, ...]:
        verify = self.verify_dkim
        if verify is None:
            return ()
        left = max(started + self.dkim_timeout - time.monotonic(), 0.001)
        try:
            found = verify(content, dns, max_signatures=self.dkim_max_signatures, timeout=left)
            return tuple(found)
        except Exception as exc:  # a verifier bug: temporary, never a pass
            return (DkimResult("temperror", "", reason=f"verifier: {type(exc).__name__}"),)

    def _arc(self, content: bytes, dns: BlockingDns) -> ArcResult | None:
        verify = self.verify_arc
        if verify is None:
            return None
        if b"arc-seal" not in content[: header_end(content)].lower():
            return ArcResult("none")  # no ARC-Seal field: nothing to fetch or verify
        try:
            return verify(content, dns)
        except Exception as exc:
            return ArcResult("fail", reason=f"verifier: {type(exc).__name__}")

    def _dmarc(
        self,
        content: bytes,
        spf: SpfResult | None,
        dkim: Sequence[DkimResult],
        txt: Callable[[str], Result[str]],
    ) -> DmarcResult:
        domains = from_domains(content)
        if domains is None:
            return DmarcResult("permerror", "", reason="no usable From address")
        results = [evaluate_dmarc_blocking(txt, d, spf, dkim, rand=self.rand) for d in domains]
        chosen = worst(results)
        assert chosen is not None  # domains is never empty
        return chosen

    async def _dmarc_async(
        self, content: bytes, spf: SpfResult | None, dkim: Sequence[DkimResult]
    ) -> DmarcResult:
        """DMARC on the loop, for a check whose worker overran (see :meth:`check`)."""
        domains = from_domains(content)
        if domains is None:
            return DmarcResult("permerror", "", reason="no usable From address")
        results = [
            await evaluate_dmarc(self.resolver, d, spf, dkim, rand=self.rand) for d in domains
        ]
        chosen = worst(results)
        assert chosen is not None
        return chosen

    def _verdict(self, content: bytes, sender: str, helo: str, done: _Progress) -> InboundVerdict:
        spf_result, dmarc = done.spf, done.dmarc
        results = InboundResults(spf_result, done.dkim or (), dmarc, done.arc)
        reply: Reply | None = None
        quarantine = False
        if self.enforce_dmarc and dmarc is not None and dmarc.result == "fail":
            if dmarc.disposition == "reject":
                code = self.dmarc_reject_code
                text = f"{self.dmarc_reject_text} {dmarc.from_domain}"
                reply = Reply(code, enhanced_for(code, "7.1"), text)
            elif dmarc.disposition == "quarantine":
                quarantine = True

        fields = [authentication_results(self.authserv_id, results, sender=sender)]
        if quarantine and self.quarantine_action == "junk":
            fields.append(QUARANTINE_FIELD)
        if self.received_spf and spf_result is not None:
            fields.append(
                received_spf(spf_result, receiver=self.authserv_id, sender=sender, helo=helo)
            )
        return InboundVerdict(
            b"".join(fields), strip_forged(content, self.authserv_id), reply, quarantine, results
        )

    # --- warming the DNS answers before the worker asks ---------------------------------------

    def _prefetch(self, content: bytes, spf: SpfQuery | SpfResult, skip_dmarc: bool) -> None:
        """Start, on the loop, the TXT lookups the worker will need first and the answer
        cache lacks (the SPF policy, the DKIM keys, the DMARC policy), so that on a cold
        cache they run side by side and not one after the other in the worker. Only a
        hint: the names come from a quick scan; the checks ask for what they need."""
        names = []
        if isinstance(spf, SpfQuery):
            names.append(spf.domain)
        head = content[: header_end(content)]
        if self.verify_dkim is not None:
            for n, start in enumerate(_DKIM_FIELD.finditer(head)):
                if n >= self.dkim_max_signatures:
                    break
                value = _FIELD_END.split(head[start.end() : start.end() + 2048], 1)[0]
                d, s = _D_TAG.search(value), _S_TAG.search(value)
                if d and s:
                    names.append(f"{_ws(s.group(1))}._domainkey.{_ws(d.group(1))}")
        if not skip_dmarc and (match := _FROM_DOMAIN.search(head)):
            names.append("_dmarc." + match.group(1).decode("ascii").rstrip("."))
        for name in names:
            if self.answers.get("TXT", name) is None:
                task = asyncio.ensure_future(self._warm(name))
                self._prefetching.add(task)
                task.add_done_callback(self._prefetching.discard)

    async def _warm(self, name: str) -> None:
        self.answers.put("TXT", name, await self.resolver.txt(name))

    # --- one message ----------------------------------------------------------------------

    async def check(
        self,
        content: bytes,
        *,
        client_address: str,
        helo: str,
        sender: str,
        spf: SpfResult | None,
        skip_dmarc: bool,
    ) -> InboundVerdict:
        """Authenticate one received message; see the module docstring for the guarantees."""
        loop = self.loop or asyncio.get_running_loop()
        dns = self._dns(loop)
        spf_in = prepare_spf(client_address, sender, helo) if spf is None else spf
        self._prefetch(content, spf_in, skip_dmarc)
        done = _Progress()
        started = time.monotonic()
        work = loop.run_in_executor(
            None,
            self._run_checks,
            content,
            dns,
            spf_in,
            sender,
            helo,
            skip_dmarc,
            started,
            done,
        )
        # The checks bound themselves (query deadlines); this is the safety net for a
        # verifier that overruns anyway: DMARC's two policy lookups come on top.
        slack = self.overrun_slack
        limit = max(self.spf_timeout + min(1.0, slack), self.dkim_timeout + slack)
        limit += 2 * dns.timeout
        try:
            return await asyncio.wait_for(work, limit)
        except TimeoutError:
            pass
        # The worker overran: what it finished stands, the rest is temporary.
        if done.spf is None:
            assert isinstance(spf_in, SpfQuery)
            done.spf = timed_out(spf_in)
        if done.dkim is None:
            overran = DkimResult("temperror", "", reason="verifier: TimeoutError")
            done.dkim = (overran,) if self.verify_dkim is not None else ()
        if not done.arc_done and self.verify_arc is not None:
            done.arc = ArcResult("fail", reason="verifier: TimeoutError")
        if not skip_dmarc and not done.dmarc_done:
            done.dmarc = await self._dmarc_async(content, done.spf, done.dkim)
        return self._verdict(content, sender, helo, done)


@dataclass(slots=True)
class _Progress:
    """What the worker has finished so far (read by :meth:`InboundAuth.check` on overrun)."""

    spf: SpfResult | None = None
    dkim: tuple[DkimResult, ...] | None = None
    arc: ArcResult | None = None
    arc_done: bool = False
    dmarc: DmarcResult | None = None
    dmarc_done: bool = False


# Quick scans for prefetching only (never for a result): DKIM-Signature d= and s=, and
# the first From: address's domain.
_DKIM_FIELD = re.compile(rb"(?im)^dkim-signature[ \t]*:")
_FIELD_END = re.compile(rb"\r?\n(?![ \t])")
_D_TAG = re.compile(rb"(?:^|;)\s*d\s*=\s*([^;]+)")
_S_TAG = re.compile(rb"(?:^|;)\s*s\s*=\s*([^;]+)")
_FROM_DOMAIN = re.compile(rb"(?im)^from[ \t]*:[^\r\n]*?@([A-Za-z0-9.-]+\.[A-Za-z0-9-]+)")
_WS_RUN = re.compile(rb"\s+")


def _ws(value: bytes) -> str:
    return _WS_RUN.sub(b"", value).decode("ascii", "replace").rstrip(".")
