"""The restriction engine: Postfix ``smtpd_*_restrictions`` lists as data, run by stage.

Owns parsing a list (names + their arguments, validated against the registry when the
engine is built), opening the lookup tables those arguments name, and the evaluation
order: within a list the first PERMIT/REJECT/DEFER wins; across lists a PERMIT only
ends *that* list, a REJECT/DEFER ends everything. With smtpd_delay_reject = yes (the
default) the client, HELO and sender lists run at RCPT time, before the relay and
recipient lists; with no, they run at their own command and RCPT runs relay + recipient.
After the lists, smtpd_reject_unlisted_recipient applies reject_unlisted_recipient even
when no list named it (Postfix does, even for permitted clients).

Invariants:
- A configuration that names an unknown restriction, omits an argument, or could relay
  for anyone (no reject/defer_unauth_destination, reject or defer in the relay or
  recipient list) raises :class:`PolicyConfigError` at build time.
- Client/HELO/sender list results are cached in the context until HELO, MAIL or RSET,
  unless a recipient-dependent restriction ran while computing them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from ironpost.config.tables import LookupTable
from ironpost.dns.types import Resolver
from ironpost.policy.context import DEFAULT_PARAMS, PolicyContext, PolicyParams
from ironpost.policy.networks import NetworkList
from ironpost.policy.recipient import reject_unlisted_recipient as _unlisted_recipient
from ironpost.policy.registry import REGISTRY, Restriction, restriction, run_sequence
from ironpost.policy.sender import reject_unlisted_sender as _unlisted_sender
from ironpost.policy.sender_login import SenderLogins
from ironpost.policy.verdicts import PERMIT_BY_DEFAULT, Decision, Stage, Verdict
from ironpost.routing import Router
from ironpost.routing.domains import OpenTable, default_open_table
from ironpost.routing.settings import SettingsLike, optional

__all__ = [
    "Decision",
    "PolicyConfigError",
    "PolicyEngine",
    "Stage",
    "Verdict",
    "parse_restrictions",
    "restriction",
]

Step = tuple[Restriction, tuple[str, ...]]

# Postfix's "specify at least one working instance of" set for relay control.
_RELAY_GUARDS = frozenset(
    {"reject_unauth_destination", "defer_unauth_destination", "reject", "defer"}
)
_EARLY = (Stage.CLIENT, Stage.HELO, Stage.SENDER)


class PolicyConfigError(ValueError):
    """A restriction list that must not be run (the message names parameter and word)."""


# A bare ``type:table`` in a list is Postfix's implicit access check for that list.
_IMPLICIT_ACCESS = {
    Stage.CLIENT: "check_client_access",
    Stage.HELO: "check_helo_access",
    Stage.SENDER: "check_sender_access",
    Stage.RELAY: "check_recipient_access",
    Stage.RECIPIENT: "check_recipient_access",
}


def parse_restrictions(
    words: Iterable[str], stage: Stage | None = None
) -> list[tuple[str, tuple[str, ...]]]:
    """main.cf words (commas allowed) → ``[(name, args), …]``, checked against the registry."""
    tokens = [t for w in words for t in w.replace(",", " ").split()]
    out: list[tuple[str, tuple[str, ...]]] = []
    i = 0
    where = f" in {stage.value}" if stage is not None else ""
    while i < len(tokens):
        name = tokens[i].lower()
        entry = REGISTRY.get(name)
        if entry is None and ":" in tokens[i]:
            implicit = _IMPLICIT_ACCESS.get(stage) if stage is not None else None
            if implicit is None:
                raise PolicyConfigError(f"lookup table {tokens[i]!r} has no meaning{where}")
            out.append((implicit, (tokens[i],)))
            i += 1
            continue
        if entry is None:
            raise PolicyConfigError(f"unknown restriction {tokens[i]!r}{where}")
        args = tuple(tokens[i + 1 : i + 1 + entry.arity])
        if len(args) < entry.arity:
            raise PolicyConfigError(f"restriction {name!r}{where} needs {entry.arity} argument(s)")
        out.append((name, args))
        i += 1 + entry.arity
    return out


class PolicyEngine:
    """Runs the restriction lists of one smtpd service. Built once; shared by sessions."""

    def __init__(
        self,
        lists: Mapping[Stage, Iterable[str]],
        *,
        router: Router,
        mynetworks: NetworkList | None = None,
        params: PolicyParams = DEFAULT_PARAMS,
        delay_reject: bool = True,
        reject_unlisted_recipient: bool = True,
        reject_unlisted_sender: bool = False,
        relay_before_recipient: bool = True,
        open_table: OpenTable = default_open_table,
        sender_login_maps: Iterable[str] = (),
        resolver: Resolver | None = None,
    ) -> None:
        self.router = router
        self.resolver = resolver
        self.sender_logins = SenderLogins(
            tuple(open_table(spec) for spec in sender_login_maps if ":" in spec), router
        )
        self.mynetworks = mynetworks
        self.params = params
        self.delay_reject = delay_reject
        self.reject_unlisted_recipient = reject_unlisted_recipient
        self.reject_unlisted_sender = reject_unlisted_sender
        self._order = (
            (Stage.RELAY, Stage.RECIPIENT)
            if relay_before_recipient
            else (Stage.RECIPIENT, Stage.RELAY)
        )
        self.tables: dict[str, LookupTable] = {}
        self._lists: dict[Stage, list[Step]] = {}
        unimplemented: list[str] = []
        for stage in Stage:
            steps: list[Step] = []
            for name, args in parse_restrictions(lists.get(stage, ()), stage):
                entry = REGISTRY[name]
                if entry.table_args:
                    for spec in args:
                        if spec not in self.tables:
                            self.tables[spec] = open_table(spec)
                if not entry.implemented and name not in unimplemented:
                    unimplemented.append(name)
                steps.append((entry, args))
            self._lists[stage] = steps
        guarded = {
            e.name for stage in (Stage.RELAY, Stage.RECIPIENT) for e, _ in self._lists[stage]
        }
        if not guarded & _RELAY_GUARDS:
            raise PolicyConfigError(
                "in smtpd_relay_restrictions and smtpd_recipient_restrictions, specify at "
                "least one of: reject_unauth_destination, defer_unauth_destination, "
                "reject, defer (otherwise this server is an open relay)"
            )
        self.not_implemented: tuple[str, ...] = tuple(unimplemented)

    @classmethod
    def from_settings(
        cls,
        settings: SettingsLike,
        router: Router,
        mynetworks: NetworkList | None,
        *,
        open_table: OpenTable | None = None,
        resolver: Resolver | None = None,
    ) -> PolicyEngine:
        """``open_table`` defaults to ``settings.table`` (tables shared, paths relative to
        the config directory) when the settings object has one."""
        if open_table is None:
            open_table = getattr(settings, "table", None) or default_open_table
        return cls(
            {stage: settings.words(stage.value) for stage in Stage},
            router=router,
            mynetworks=mynetworks,
            params=PolicyParams.from_settings(settings),
            delay_reject=settings.boolean("smtpd_delay_reject"),
            reject_unlisted_recipient=settings.boolean("smtpd_reject_unlisted_recipient"),
            reject_unlisted_sender=settings.boolean("smtpd_reject_unlisted_sender"),
            relay_before_recipient=optional(
                settings.boolean, "smtpd_relay_before_recipient_restrictions", True
            ),
            open_table=open_table,
            sender_login_maps=optional(settings.words, "smtpd_sender_login_maps", ()),
            resolver=resolver,
        )

    def new_context(
        self,
        client_address: str,
        client_name: str = "unknown",
        *,
        log_warning: Callable[[str], None] | None = None,
    ) -> PolicyContext:
        """A context for one connection, wired to this engine's tables and parameters."""
        ctx = PolicyContext(
            client_address,
            self.router,
            client_name=client_name or "unknown",
            mynetworks=self.mynetworks,
            params=self.params,
            tables=self.tables,
            sender_logins=self.sender_logins,
            resolver=self.resolver,
        )
        if log_warning is not None:
            ctx.log_warning = log_warning
        return ctx

    def restrictions(self, stage: Stage) -> tuple[str, ...]:
        """The names in one list, for logs and ``postconf``-style introspection."""
        return tuple(e.name for e, _ in self._lists[stage])

    # -- evaluation ---------------------------------------------------------------------

    async def _run(self, stage: Stage, ctx: PolicyContext) -> Decision:
        cacheable = stage in _EARLY
        if cacheable:
            cached = ctx.list_cache.get(stage)
            if cached is not None:
                return cached
        ctx.stage = stage
        ctx.touched_recipient = False
        steps = self._lists[stage]
        decision = await run_sequence(ctx, steps) if steps else PERMIT_BY_DEFAULT
        if stage is Stage.SENDER and self.reject_unlisted_sender and not decision.refuses:
            unlisted = _unlisted_sender(ctx, ())
            if unlisted.refuses:
                decision = unlisted
        if cacheable and not ctx.touched_recipient:
            ctx.list_cache[stage] = decision
        return decision

    async def check(self, stage: Stage, ctx: PolicyContext) -> Decision:
        """Evaluate one list. A list that decides nothing permits."""
        decision = await self._run(stage, ctx)
        return PERMIT_BY_DEFAULT if decision.verdict is Verdict.DUNNO else decision

    async def check_command(self, stage: Stage, ctx: PolicyContext) -> Decision:
        """What the server calls after each command: CONNECT/HELO/MAIL lists are skipped
        here under smtpd_delay_reject (they run at RCPT); RCPT runs :meth:`check_recipient`."""
        if stage in _EARLY:
            return PERMIT_BY_DEFAULT if self.delay_reject else await self.check(stage, ctx)
        if stage is Stage.RELAY or stage is Stage.RECIPIENT:
            return await self.check_recipient(ctx)
        return await self.check(stage, ctx)

    async def check_recipient(self, ctx: PolicyContext) -> Decision:
        """All RCPT-time lists in Postfix order; the first REJECT/DEFER is the answer."""
        if self.delay_reject:
            for stage in _EARLY:
                decision = await self._run(stage, ctx)
                if decision.refuses:
                    return decision
        for stage in self._order:
            decision = await self._run(stage, ctx)
            if decision.refuses:
                return decision
        if self.reject_unlisted_recipient and not ctx.recipient_maps_checked:
            ctx.stage = Stage.RECIPIENT
            decision = _unlisted_recipient(ctx, ())
            if decision.refuses:
                return decision
        return PERMIT_BY_DEFAULT
