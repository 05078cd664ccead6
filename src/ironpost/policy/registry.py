"""The restriction registry: Postfix restriction names → small functions.

Owns registration (the :func:`restriction` decorator), the arity of each name (how many
main.cf words follow it, e.g. one table for ``check_client_access``), and invoking one
restriction, sync or async. Families register themselves on import (``ironpost.policy``
imports them all).

Invariant: a name is registered once; an unknown name is a configuration error found when
the engine is built, never at SMTP time (except inside an access map value, where it is
answered with 451 4.3.5 and a warning, as Postfix does).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from ironpost.policy.verdicts import Decision, Verdict

if TYPE_CHECKING:
    from ironpost.policy.context import PolicyContext

RestrictionFn = Callable[["PolicyContext", tuple[str, ...]], "Decision | Awaitable[Decision]"]


@dataclass(frozen=True, slots=True)
class Restriction:
    name: str
    func: RestrictionFn
    arity: int = 0  # main.cf words that follow the name
    table_args: bool = False  # those words are lookup tables, opened when the engine is built
    per_recipient: bool = False  # reads the recipient: a list using it is not cached
    implemented: bool = True


REGISTRY: dict[str, Restriction] = {}
F = TypeVar("F", bound=RestrictionFn)


def restriction(
    *names: str,
    arity: int = 0,
    tables: bool = False,
    per_recipient: bool = False,
    implemented: bool = True,
) -> Callable[[F], F]:
    """Register the decorated function under each Postfix name in ``names``."""

    def register(func: F) -> F:
        for name in names:
            if name in REGISTRY:
                raise ValueError(f"restriction {name!r} registered twice")
            REGISTRY[name] = Restriction(name, func, arity, tables, per_recipient, implemented)
        return func

    return register


def arity_table() -> dict[str, int]:
    """name → number of arguments, for the config parser's restriction syntax check."""
    return {name: r.arity for name, r in REGISTRY.items()}


async def invoke(ctx: PolicyContext, entry: Restriction, args: tuple[str, ...]) -> Decision:
    if entry.per_recipient:
        ctx.touched_recipient = True
    result = entry.func(ctx, args)
    if isinstance(result, Decision):
        return result
    return await result


async def run_sequence(
    ctx: PolicyContext, steps: list[tuple[Restriction, tuple[str, ...]]]
) -> Decision:
    """Evaluate steps in order: the first PERMIT/REJECT/DEFER wins; DUNNO goes on.

    ``warn_if_reject`` turns the next step's REJECT/DEFER into a logged ``reject_warning``.
    Falling off the end is DUNNO: the caller decides what an exhausted list means.
    """
    warn_next = False
    for entry, args in steps:
        if entry.name == "warn_if_reject":
            warn_next = True
            continue
        decision = await invoke(ctx, entry, args)
        if warn_next:
            warn_next = False
            if decision.refuses:
                ctx.log_warning(f"reject_warning: {ctx.client_label}: {decision.reply}")
                continue
        if decision.verdict is not Verdict.DUNNO:
            return decision
    return Decision(Verdict.DUNNO, None, "")
