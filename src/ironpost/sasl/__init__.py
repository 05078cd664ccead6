"""SMTP AUTH: the back-end contract, the mechanisms and the built-in passwd back-end.

See :mod:`ironpost.sasl.backend` for the contract the SMTP server calls.
"""

from ironpost.sasl.backend import (
    Challenge,
    ClientMeta,
    Failure,
    Outcome,
    SaslBackend,
    SaslExchange,
    Success,
)
from ironpost.sasl.builtin import BuiltinBackend
from ironpost.sasl.hashes import hash_password, scram_credentials, verify
from ironpost.sasl.passwd import Entry, PasswdError, PasswdFile, canonical_user, passwd_path

__all__ = [
    "BuiltinBackend",
    "Challenge",
    "ClientMeta",
    "Entry",
    "Failure",
    "Outcome",
    "PasswdError",
    "PasswdFile",
    "SaslBackend",
    "SaslExchange",
    "Success",
    "canonical_user",
    "hash_password",
    "passwd_path",
    "scram_credentials",
    "verify",
]
