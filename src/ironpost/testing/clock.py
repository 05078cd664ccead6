"""A clock that only moves when a test says so.

Owns :class:`FakeClock`: a ``Callable[[], float]`` usable wherever a component takes
an injected clock (the scheduler, the queue manager). Invariant: time never goes
backwards; :meth:`FakeClock.advance` and :meth:`FakeClock.set` refuse to.
"""

from __future__ import annotations


class FakeClock:
    """Epoch seconds, starting at ``start`` (default: 2024-01-01T00:00:00Z)."""

    __slots__ = ("_now",)

    def __init__(self, start: float = 1_704_067_200.0) -> None:
        self._now = float(start)

    def __call__(self) -> float:
        return self._now

    @property
    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        """Move forward by ``seconds``; return the new time."""
        if seconds < 0:
            raise ValueError("a FakeClock does not go backwards")
        self._now += seconds
        return self._now

    def set(self, when: float) -> None:
        """Jump to ``when`` (not earlier than now)."""
        if when < self._now:
            raise ValueError("a FakeClock does not go backwards")
        self._now = float(when)

    async def sleep(self, seconds: float) -> None:
        """An ``asyncio.sleep`` stand-in that advances the clock instead of waiting."""
        self.advance(max(seconds, 0.0))

    def __repr__(self) -> str:
        return f"FakeClock({self._now!r})"
