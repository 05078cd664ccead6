"""Fixtures for integration tests: a real ironpost on loopback (see mta_harness)."""

from mta_harness import mta, mta_factory

__all__ = ["mta", "mta_factory"]
