"""The values restrictions return: verdicts, decisions, and the stages lists run at.

Owns nothing but these small immutable types, so every restriction family and the engine
can import them without a cycle. A :class:`Decision` carries the reply to send (for
REJECT/DEFER) and the restriction that made it, for the log line.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ironpost.protocol.replies import Reply


class Verdict(Enum):
    PERMIT = "permit"
    REJECT = "reject"
    DEFER = "defer"
    DUNNO = "dunno"


class Stage(Enum):
    """Where a restriction list runs (one main.cf parameter each)."""

    CLIENT = "smtpd_client_restrictions"
    HELO = "smtpd_helo_restrictions"
    SENDER = "smtpd_sender_restrictions"
    RELAY = "smtpd_relay_restrictions"
    RECIPIENT = "smtpd_recipient_restrictions"
    DATA = "smtpd_data_restrictions"
    END_OF_DATA = "smtpd_end_of_data_restrictions"


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    reply: Reply | None
    restriction: str

    @property
    def is_final(self) -> bool:
        """PERMIT, REJECT or DEFER: the list stops here."""
        return self.verdict is not Verdict.DUNNO

    @property
    def refuses(self) -> bool:
        return self.verdict is Verdict.REJECT or self.verdict is Verdict.DEFER


PERMIT_BY_DEFAULT = Decision(Verdict.PERMIT, None, "")
