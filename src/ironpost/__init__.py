"""ironpost: a hardened, Postfix-compatible mail transfer agent."""

__version__ = "0.1.0"
