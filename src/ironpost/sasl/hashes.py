"""Password hashes: the schemes ironpost writes, the ones it reads, and SCRAM keys.

Owns the ``{SCHEME}hash`` strings of a passwd file (Dovecot's notation) and their
verification. ironpost *writes* only ``{ARGON2ID}$argon2id$…`` (argon2-cffi's defaults,
RFC 9106's low-memory profile) and ``{SCRAM-SHA-256}…`` credentials. It *reads*, for
files migrated from Dovecot:

* ``{ARGON2ID}``, ``{ARGON2I}`` and a bare ``$argon2id$``/``$argon2i$``;
* ``{SHA512-CRYPT}$6$`` and ``{SHA256-CRYPT}$5$`` (Drepper's SHA-crypt, implemented here
  with hashlib, since the ``crypt`` module is deprecated), also bare or as ``{CRYPT}``;
* ``{BLF-CRYPT}``/``{BCRYPT}``/``$2y$``/``$2b$``/``$2a$`` via the bcrypt package (the
  password is cut at 72 bytes, as libc's bcrypt and Dovecot did when it was hashed);
* ``{PLAIN}``/``{CLEAR}``/``{CLEARTEXT}`` (never written);
* ``{SCRAM-SHA-256}`` itself, checked by deriving the StoredKey from the password.

SCRAM credentials use Dovecot's layout, so its files work unchanged:
``{SCRAM-SHA-256}<iterations>,<base64 salt>,<base64 StoredKey>,<base64 ServerKey>``.

Invariants: :func:`verify` never raises on bad input and answers False for an unknown
scheme; :func:`scheme_name` is the only text about a stored hash fit for a log (it never
echoes the hash, nor an unrecognised string, which may be a plaintext password);
comparisons are constant-time (hmac.compare_digest or the libraries' own).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import os
import re
import stringprep
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field

import bcrypt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

SCRAM_SCHEME = "{SCRAM-SHA-256}"
SCRAM_DEFAULT_ITERATIONS = 4096  # RFC 7677's minimum, and Dovecot's default
_SCRAM_MAX_ITERATIONS = 10_000_000  # a parse bound: a typo must not stall a login for hours

_HASHER = PasswordHasher()  # thread-safe; parameters come from the stored hash on verify
_SCHEME_RE = re.compile(r"\{([A-Za-z0-9.\-]{1,32})\}")
_BCRYPT_PREFIXES = ("$2y$", "$2b$", "$2a$")


# -- argon2 ----------------------------------------------------------------------------


def hash_password(password: str) -> str:
    """The stored form ironpost writes: ``{ARGON2ID}$argon2id$v=19$m=…``."""
    return "{ARGON2ID}" + _HASHER.hash(password)


@functools.cache
def _dummy_hash() -> str:
    # Made once with the same parameters as hash_password, so a verify against it costs
    # what a real user's verify costs.
    return _HASHER.hash(os.urandom(16).hex())


def dummy_verify(password: str) -> None:
    """Spend the time of one argon2id verify, for an unknown user (equal timing)."""
    _verify_argon2(_dummy_hash(), password)


def _verify_argon2(stored: str, password: str) -> bool:
    try:
        return _HASHER.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


# -- SHA-crypt (Ulrich Drepper, "Unix crypt using SHA-256 and SHA-512", 2007) -----------

_ITOA64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_ROUNDS_DEFAULT, _ROUNDS_MIN, _ROUNDS_MAX = 5000, 1000, 999_999_999
_SALT_MAX = 16
# The byte triples of the final digest, in the order the spec encodes them.
_ORDER_256 = tuple((i, (i + 10) % 30, (i + 20) % 30) for i in (0, 21, 12, 3, 24, 15, 6, 27, 18, 9))


def _order_512() -> tuple[tuple[int, int, int], ...]:
    # The spec's table: (0,21,42), (22,43,1), (44,2,23), (3,24,45), … — each triple starts
    # 22 further on (mod 63) than the previous one.
    out = []
    a = 0
    for _ in range(21):
        out.append((a, (a + 21) % 63, (a + 42) % 63))
        a = (a + 22) % 63
    return tuple(out)


_ORDER_512 = _order_512()


def _b64_24(b2: int, b1: int, b0: int, n: int) -> str:
    w = (b2 << 16) | (b1 << 8) | b0
    out = []
    for _ in range(n):
        out.append(_ITOA64[w & 0x3F])
        w >>= 6
    return "".join(out)


def _repeat(block: bytes, length: int) -> bytes:
    q, r = divmod(length, len(block))
    return block * q + block[:r]


def sha_crypt(password: str | bytes, setting: str) -> str:
    """crypt(3) for ``$5$`` (SHA-256) and ``$6$`` (SHA-512) settings, ``rounds=`` included.

    ``setting`` may be a full stored hash; only its salt part is used. Raises ValueError
    for another prefix. As in glibc, ``rounds=`` is clamped to [1000, 999999999] and
    shown in the result only when given, and the salt is cut at 16 characters.
    """
    if setting.startswith("$5$"):
        new, size, prefix = hashlib.sha256, 32, "$5$"
    elif setting.startswith("$6$"):
        new, size, prefix = hashlib.sha512, 64, "$6$"
    else:
        raise ValueError("not a SHA-crypt setting")
    rest = setting[3:]
    rounds, custom = _ROUNDS_DEFAULT, False
    if rest.startswith("rounds="):
        num, sep, after = rest[7:].partition("$")
        if sep and num.isascii() and num.isdigit():
            rounds = max(_ROUNDS_MIN, min(int(num), _ROUNDS_MAX))
            custom, rest = True, after
    salt_text = rest.split("$", 1)[0][:_SALT_MAX]
    p = password.encode() if isinstance(password, str) else password
    s = salt_text.encode()
    n = len(p)

    b = new(p + s + p).digest()
    ctx = new(p + s + _repeat(b, n))
    i = n
    while i:
        ctx.update(b if i & 1 else p)
        i >>= 1
    a = ctx.digest()
    dp_ctx = new()
    for _ in range(n):  # not p * n: a long password must not allocate n² bytes
        dp_ctx.update(p)
    p_seq = _repeat(dp_ctx.digest(), n)
    s_seq = _repeat(new(s * (16 + a[0])).digest(), len(s))

    c = a
    for r in range(rounds):
        h = new(p_seq if r & 1 else c)
        if r % 3:
            h.update(s_seq)
        if r % 7:
            h.update(p_seq)
        h.update(c if r & 1 else p_seq)
        c = h.digest()

    if size == 32:
        parts = [_b64_24(c[x], c[y], c[z], 4) for x, y, z in _ORDER_256]
        parts.append(_b64_24(0, c[31], c[30], 3))
    else:
        parts = [_b64_24(c[x], c[y], c[z], 4) for x, y, z in _ORDER_512]
        parts.append(_b64_24(0, 0, c[63], 2))
    head = f"{prefix}rounds={rounds}$" if custom else prefix
    return f"{head}{salt_text}${''.join(parts)}"


def _verify_sha_crypt(stored: str, password: str) -> bool:
    try:
        computed = sha_crypt(password, stored)
    except ValueError:
        return False
    return hmac.compare_digest(computed.encode(), stored.encode())


def _verify_bcrypt(stored: str, password: str) -> bool:
    # bcrypt >= 5 refuses passwords over 72 bytes; the hash was made from the first 72.
    try:
        return bcrypt.checkpw(password.encode()[:72], stored.encode())
    except ValueError:
        return False


# -- SCRAM-SHA-256 credentials (RFC 5802, RFC 7677) -------------------------------------


@dataclass(frozen=True, slots=True)
class ScramCredentials:
    """What a server stores for SCRAM-SHA-256; the password cannot be recovered from it."""

    iterations: int
    salt: bytes = field(repr=False)
    stored_key: bytes = field(repr=False)
    server_key: bytes = field(repr=False)

    def format(self) -> str:
        b64 = base64.b64encode
        return (
            f"{SCRAM_SCHEME}{self.iterations},{b64(self.salt).decode()},"
            f"{b64(self.stored_key).decode()},{b64(self.server_key).decode()}"
        )


def saslprep(text: str) -> str:
    """RFC 4013 SASLprep (stored-strings profile). Raises ValueError, naming no input."""
    if text.isascii():
        # Only C.2.1 (ASCII controls) can apply: mapping and NFKC leave ASCII unchanged.
        if any(ord(c) < 0x20 or c == "\x7f" for c in text):
            raise ValueError("SASLprep: prohibited character")
        return text
    mapped = "".join(
        " " if stringprep.in_table_c12(c) else c for c in text if not stringprep.in_table_b1(c)
    )
    out = unicodedata.normalize("NFKC", mapped)
    prohibited = (
        stringprep.in_table_a1,
        stringprep.in_table_c12,
        stringprep.in_table_c21_c22,
        stringprep.in_table_c3,
        stringprep.in_table_c4,
        stringprep.in_table_c5,
        stringprep.in_table_c6,
        stringprep.in_table_c7,
        stringprep.in_table_c8,
        stringprep.in_table_c9,
    )
    for c in out:
        if any(test(c) for test in prohibited):
            raise ValueError("SASLprep: prohibited character")
    if any(stringprep.in_table_d1(c) for c in out) and (
        any(stringprep.in_table_d2(c) for c in out)
        or not (stringprep.in_table_d1(out[0]) and stringprep.in_table_d1(out[-1]))
    ):
        raise ValueError("SASLprep: bidirectional rule violated")
    return out


def _scram_password(password: str) -> bytes:
    # Clients SASLprep the password (RFC 5802 section 2.2). A password SASLprep refuses
    # is used as is: such a client cannot do SCRAM anyway, and PLAIN still works.
    try:
        return saslprep(password).encode()
    except ValueError:
        return password.encode()


def salted_password(password: str, salt: bytes, iterations: int) -> bytes:
    """RFC 5802's SaltedPassword: Hi(Normalize(password), salt, i) = PBKDF2-HMAC-SHA-256."""
    return hashlib.pbkdf2_hmac("sha256", _scram_password(password), salt, iterations)


def derive_scram(password: str, salt: bytes, iterations: int) -> ScramCredentials:
    salted = salted_password(password, salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    return ScramCredentials(iterations, salt, hashlib.sha256(client_key).digest(), server_key)


def scram_credentials(
    password: str, iterations: int = SCRAM_DEFAULT_ITERATIONS, *, salt: bytes | None = None
) -> str:
    """``{SCRAM-SHA-256}iterations,salt,StoredKey,ServerKey`` (base64), a 16-byte salt."""
    if iterations < 1:
        raise ValueError("iterations must be positive")
    return derive_scram(password, os.urandom(16) if salt is None else salt, iterations).format()


def parse_scram(text: str) -> ScramCredentials:
    """Parse :func:`scram_credentials` output (the ``{SCRAM-SHA-256}`` prefix optional).

    Raises ValueError with a message that quotes nothing from ``text``.
    """
    if text[: len(SCRAM_SCHEME)].upper() == SCRAM_SCHEME:
        text = text[len(SCRAM_SCHEME) :]
    parts = text.split(",")
    if len(parts) != 4 or not parts[0].isascii() or not parts[0].isdigit():
        raise ValueError("SCRAM credentials: expected iterations,salt,storedkey,serverkey")
    iterations = int(parts[0])
    if not 1 <= iterations <= _SCRAM_MAX_ITERATIONS:
        raise ValueError("SCRAM credentials: iteration count out of range")
    try:
        salt, stored, server = (base64.b64decode(p, validate=True) for p in parts[1:])
    except (binascii.Error, ValueError):
        raise ValueError("SCRAM credentials: bad base64") from None
    if not salt or len(stored) != 32 or len(server) != 32:
        raise ValueError("SCRAM credentials: wrong salt or key length")
    return ScramCredentials(iterations, salt, stored, server)


def _verify_scram(stored: str, password: str) -> bool:
    try:
        creds = parse_scram(stored)
    except ValueError:
        return False
    salted = salted_password(password, creds.salt, creds.iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    return hmac.compare_digest(hashlib.sha256(client_key).digest(), creds.stored_key)


# -- dispatch ---------------------------------------------------------------------------


def _verify_plain(stored: str, password: str) -> bool:
    return hmac.compare_digest(stored.encode(), password.encode())


def _by_prefix(stored: str) -> str:
    if stored.startswith(("$argon2id$", "$argon2i$")):
        return "ARGON2"
    if stored.startswith("$6$"):
        return "SHA512-CRYPT"
    if stored.startswith("$5$"):
        return "SHA256-CRYPT"
    if stored.startswith(_BCRYPT_PREFIXES):
        return "BLF-CRYPT"
    return ""


_VERIFIERS: dict[str, Callable[[str, str], bool]] = {
    "ARGON2": _verify_argon2,
    "SHA512-CRYPT": _verify_sha_crypt,
    "SHA256-CRYPT": _verify_sha_crypt,
    "BLF-CRYPT": _verify_bcrypt,
    "PLAIN": _verify_plain,
    "SCRAM-SHA-256": _verify_scram,
}
# Dovecot's names for a scheme -> (our verifier, the payload prefixes it accepts; () = any)
_SCHEMES: dict[str, tuple[str, tuple[str, ...]]] = {
    "ARGON2ID": ("ARGON2", ("$argon2id$",)),
    "ARGON2I": ("ARGON2", ("$argon2i$",)),
    "SHA512-CRYPT": ("SHA512-CRYPT", ("$6$",)),
    "SHA256-CRYPT": ("SHA256-CRYPT", ("$5$",)),
    "BLF-CRYPT": ("BLF-CRYPT", _BCRYPT_PREFIXES),
    "BCRYPT": ("BLF-CRYPT", _BCRYPT_PREFIXES),
    "PLAIN": ("PLAIN", ()),
    "CLEAR": ("PLAIN", ()),
    "CLEARTEXT": ("PLAIN", ()),
    "SCRAM-SHA-256": ("SCRAM-SHA-256", ()),
}


def _resolve(stored: str) -> tuple[str, str, str]:
    """(label for the log, verifier key or "", payload)."""
    m = _SCHEME_RE.match(stored)
    if m is None:
        kind = _by_prefix(stored)
        return (kind or "unknown", kind, stored)
    name = m.group(1).upper()
    payload = stored[m.end() :]
    if name == "CRYPT":  # Dovecot's libc crypt(): dispatch on the payload's prefix
        kind = _by_prefix(payload)
        return ("CRYPT" if not kind else f"CRYPT/{kind}", kind, payload)
    scheme = _SCHEMES.get(name)
    if scheme is None:
        return (name, "", payload)
    kind, prefixes = scheme
    if prefixes and not payload.startswith(prefixes):
        return (f"{name} (malformed)", "", payload)
    if kind == "SCRAM-SHA-256":
        payload = stored  # parse_scram wants its prefix
    return (name, kind, payload)


def scheme_name(stored: str) -> str:
    """The scheme as a log may show it (``SHA512-CRYPT``, ``MD5``, ``unknown``), never
    any part of the hash itself."""
    return _resolve(stored)[0]


def is_supported(stored: str) -> bool:
    """True when :func:`verify` can check a password against ``stored``."""
    return bool(_resolve(stored)[1])


def verify(stored: str, password: str) -> bool:
    """Whether ``password`` matches ``stored``. False for an unsupported or malformed
    scheme (see :func:`is_supported` and :func:`scheme_name` to tell the two apart)."""
    _, kind, payload = _resolve(stored)
    if not kind:
        return False
    return _VERIFIERS[kind](payload, password)
