"""Per-session command counters for Postfix's ``disconnect from`` line.

``ehlo=1 mail=1 rcpt=0/1 data=0/1 quit=1 commands=3/5``: ``ok/total`` where some
failed, plain ``ok`` where none did, as pflogsumm and friends expect.
"""

from __future__ import annotations

from dataclasses import dataclass, field

_ORDER = ("helo", "ehlo", "starttls", "auth", "mail", "rcpt", "data", "bdat", "rset", "noop")
_ORDER_TAIL = ("vrfy", "expn", "help", "quit", "unknown")


@dataclass(slots=True)
class SessionCounters:
    ok: dict[str, int] = field(default_factory=dict)
    total: dict[str, int] = field(default_factory=dict)

    def count(self, command: str, success: bool) -> None:
        self.total[command] = self.total.get(command, 0) + 1
        if success:
            self.ok[command] = self.ok.get(command, 0) + 1

    def summary(self) -> str:
        parts = []
        for name in (*_ORDER, *_ORDER_TAIL):
            total = self.total.get(name)
            if total:
                parts.append(f"{name}={self._ratio(self.ok.get(name, 0), total)}")
        all_ok = sum(self.ok.values())
        all_total = sum(self.total.values())
        parts.append(f"commands={self._ratio(all_ok, all_total)}")
        return " ".join(parts)

    @staticmethod
    def _ratio(ok: int, total: int) -> str:
        return str(ok) if ok == total else f"{ok}/{total}"
