"""Fakes for unit tests of ironpost's components (resolver with zones, clock, ...).

Each module here stands in for one side-effecting interface and keeps a log of
what it was asked, so tests can assert behaviour without sockets or sleeping.
Integration tests use the real things instead (see tests/integration).
"""
