"""DKIM signing keys: generation, the DNS record to publish, and the signing table.

Owns :class:`SigningKey` (what ``ironpost dkim`` and ``ironpost dns records`` show),
:func:`generate_key` (``opendkim-genkey``'s files: ``SELECTOR.private`` and
``SELECTOR.txt``), :func:`txt_record` / :func:`zone_line`, and reading the signing
table (:func:`signing_entries`, :func:`load_signing_keys`).

The signing table (``dkim_signing_table``) maps a From: domain to one or more
``selector[:keyfile]`` items (comma or space separated); two items (an RSA key and an
ed25519 key) mean dual signing. A relative or absent keyfile is found in the key
directory (``dkim_key_directory``, itself relative to the config directory, or to
``data_directory`` with the embedded config): ``DIR/DOMAIN/SELECTOR.private``.

Invariants: private key files are written with mode 0600 (created so, never widened);
a key file is PKCS#8 PEM (as opendkim-genkey writes), and reading also takes PKCS#1 PEM
and dkimpy's raw base64 ed25519 seed; no error text contains key material.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from ironpost.config.syntax import BraceError, strip_braces, words
from ironpost.config.tables import LookupTable

PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

#: RFC 1035 character-string limit; the p= value is split so no string exceeds it.
TXT_STRING_MAX = 255
_BITS = (1024, 2048, 4096)


class DkimKeyError(Exception):
    """A key cannot be generated, read or found; the text names files, never key bytes."""


class _Settings(Protocol):
    def text(self, name: str) -> str: ...

    def boolean(self, name: str) -> bool: ...

    def tables(self, name: str) -> tuple[LookupTable, ...]: ...


@dataclass(frozen=True)
class SigningKey:
    domain: str
    selector: str
    algorithm: str  # "rsa" | "ed25519"
    private_path: Path
    public_b64: str

    @property
    def bits(self) -> int:
        """Key size: the RSA modulus length, 256 for ed25519."""
        if self.algorithm == "ed25519":
            return 256
        der = base64.b64decode(self.public_b64)
        public = serialization.load_der_public_key(der)
        assert isinstance(public, rsa.RSAPublicKey)
        return public.key_size

    @property
    def dns_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"


# --- records ------------------------------------------------------------------------


def txt_record(key: SigningKey) -> str:
    """The TXT value to publish at ``selector._domainkey.domain``, unsplit."""
    return f"v=DKIM1; k={key.algorithm}; p={key.public_b64}"


def txt_strings(key: SigningKey) -> list[str]:
    """The record as DNS character-strings of at most 255 bytes, opendkim-genkey's layout:
    the tags first, then ``p=`` and the key data in as few strings as fit."""
    head = f"v=DKIM1; k={key.algorithm}; "
    data = "p=" + key.public_b64
    return [head, *(data[i : i + TXT_STRING_MAX] for i in range(0, len(data), TXT_STRING_MAX))]


def zone_line(key: SigningKey) -> str:
    """The record as a zone-file entry, in opendkim-genkey's ``SELECTOR.txt`` form."""
    quoted = '"\n\t  "'.join(txt_strings(key))
    return (
        f'{key.selector}._domainkey\tIN\tTXT\t( "{quoted}" )  '
        f"; ----- DKIM key {key.selector} for {key.domain}\n"
    )


# --- keys -----------------------------------------------------------------------------


def public_b64(private: PrivateKey) -> str:
    """The p= value: DER SubjectPublicKeyInfo (RSA) or the raw 32 bytes (RFC 8463)."""
    if isinstance(private, ed25519.Ed25519PrivateKey):
        raw = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
    else:
        raw = private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    return base64.b64encode(raw).decode("ascii")


def read_private_key(path: Path) -> PrivateKey:
    """A key file: PEM (PKCS#8 or PKCS#1), or a base64 ed25519 seed (dkimpy's dknewkey)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DkimKeyError(f"{path}: {exc.strerror or exc}") from None
    if b"-----BEGIN" in data:
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError):
            raise DkimKeyError(f"{path}: not a readable unencrypted PEM private key") from None
        if isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
            return key
        raise DkimKeyError(f"{path}: not an RSA or ed25519 key")
    try:
        seed = base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError):
        seed = b""
    if len(seed) != 32:
        raise DkimKeyError(f"{path}: neither PEM nor a base64 ed25519 seed")
    return ed25519.Ed25519PrivateKey.from_private_bytes(seed)


def key_from_file(domain: str, selector: str, path: Path) -> tuple[SigningKey, PrivateKey]:
    private = read_private_key(path)
    algorithm = "ed25519" if isinstance(private, ed25519.Ed25519PrivateKey) else "rsa"
    return SigningKey(domain.lower(), selector, algorithm, path, public_b64(private)), private


def _write_private(path: Path, pem: bytes) -> None:
    # O_EXCL: never overwrite a key that may be live; 0600 from the first byte.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
        f.flush()
        os.fsync(f.fileno())


def check_label(what: str, value: str) -> None:
    """Refuse a domain or selector that cannot be a DNS name (and so a file name)."""
    if not value or len(value) > 253 or value.startswith(".") or ".." in value:
        raise DkimKeyError(f"bad {what}: {value!r}")
    for c in value:
        if not (c.isascii() and (c.isalnum() or c in "-_.")):
            raise DkimKeyError(f"bad {what}: {value!r}")


def generate_key(
    directory: Path, domain: str, selector: str, *, bits: int = 2048, ed25519: bool = False
) -> SigningKey:
    """Write ``SELECTOR.private`` (0600) and ``SELECTOR.txt`` in ``directory``."""
    check_label("domain", domain)
    check_label("selector", selector)
    if not ed25519 and bits not in _BITS:
        raise DkimKeyError(f"bits must be one of {', '.join(map(str, _BITS))}")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    private_path = directory / f"{selector}.private"
    if private_path.exists():
        raise DkimKeyError(f"{private_path} exists; choose another selector")
    private: PrivateKey
    if ed25519:
        private = _ed25519_new()
    else:
        private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_private(private_path, pem)
    key = SigningKey(
        domain.lower(),
        selector,
        "ed25519" if ed25519 else "rsa",
        private_path,
        public_b64(private),
    )
    txt = directory / f"{selector}.txt"
    fd = os.open(txt, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(zone_line(key))
    return key


def _ed25519_new() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


# --- the signing table ----------------------------------------------------------------


def key_directory(settings: _Settings, config_dir: Path | None) -> Path:
    """``dkim_key_directory``; relative to the config dir, or ``data_directory`` when
    embedded (as :func:`ironpost.sasl.passwd.passwd_path` resolves its file)."""
    value = Path(settings.text("dkim_key_directory"))
    if value.is_absolute():
        return value
    base = config_dir if config_dir is not None else Path(settings.text("data_directory"))
    return base / value


def parse_entry(value: str) -> list[tuple[str, str]]:
    """A table value ``sel[:file], sel2[:file2]`` as ``[(selector, file or "")]``."""
    out = []
    for item in value.replace(",", " ").split():
        selector, _, file = item.partition(":")
        if selector:
            out.append((selector, file))
    return out


def table_domains(table: LookupTable, base: Path | None) -> list[str]:
    """The keys of a table whose source can be listed (inline: and the text types).

    A :class:`LookupTable` only answers lookups; ``ironpost dkim list`` and
    ``ironpost dns records`` need every domain, so the source is read for its keys
    (values still come from ``table.lookup``)."""
    kind, _, name = table.spec.partition(":")
    if kind == "proxy":
        return table_domains(_Spec(name), base)
    if kind == "inline":
        try:
            items = words(name.strip()[1:-1])
        except BraceError:
            return []
        return [strip_braces(i).partition("=")[0].strip().lower() for i in items if "=" in i]
    if kind == "unionmap":
        try:
            parts = words(name.strip()[1:-1])
        except BraceError:
            return []
        return [d for p in parts for d in table_domains(_Spec(p), base)]
    if kind in ("texthash", "hash", "lmdb", "btree", "cdb", "dbm", "sdbm"):
        path = Path(name)
        if not path.is_absolute() and base is not None:
            path = base / path
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return []
        keys = []
        for line in text.splitlines():
            if line[:1] in ("", " ", "\t", "#"):
                continue
            keys.append(line.split(None, 1)[0].lower())
        return keys
    raise DkimKeyError(
        f"{table.spec}: dkim_signing_table must be inline: or a text table (texthash:, hash:…)"
    )


@dataclass(frozen=True)
class _Spec:
    spec: str

    def lookup(self, key: str) -> str | None:  # pragma: no cover - only spec is read
        return None


def signing_entries(settings: _Settings, config_dir: Path | None) -> list[tuple[str, str, Path]]:
    """``(domain, selector, keyfile)`` for every item of ``dkim_signing_table``, in
    table order; the first table that knows a domain wins (Postfix's rule)."""
    directory = key_directory(settings, config_dir)
    tables = settings.tables("dkim_signing_table")
    seen: set[str] = set()
    out: list[tuple[str, str, Path]] = []
    for table in tables:
        for domain in table_domains(table, config_dir):
            if domain in seen:
                continue
            seen.add(domain)
            value = next((v for t in tables if (v := t.lookup(domain)) is not None), None)
            for selector, file in parse_entry(value or ""):
                path = Path(file) if file else Path(domain) / f"{selector}.private"
                out.append((domain, selector, path if path.is_absolute() else directory / path))
    if not tables and settings.boolean("dkim_auto_keys"):
        for domain, path in auto_key_paths(settings):
            if path.exists():
                out.append((domain, AUTO_SELECTOR, path))
    return out


#: The selector of the keys ironpost makes itself (dkim_auto_keys).
AUTO_SELECTOR = "ironpost"


def auto_key_paths(settings: _Settings) -> list[tuple[str, Path]]:
    """Where the automatic key of each of our mail domains lives:
    ``$data_directory/dkim/DOMAIN/ironpost.private`` (runtime data, not configuration)."""
    from ironpost.deliverability.records import mail_domains  # (it imports this module)

    base = Path(settings.text("data_directory")) / "dkim"
    domains, _warnings = mail_domains(settings)  # type: ignore[arg-type]
    return [(d, base / d / f"{AUTO_SELECTOR}.private") for d in domains]


def ensure_auto_keys(settings: _Settings) -> list[SigningKey]:
    """Make the missing automatic keys (RSA-2048), as the server does at start when
    ``dkim_signing_table`` is empty and ``dkim_auto_keys = yes``; returns the new ones."""
    if settings.tables("dkim_signing_table") or not settings.boolean("dkim_auto_keys"):
        return []
    made = []
    for domain, path in auto_key_paths(settings):
        if not path.exists():
            made.append(generate_key(path.parent, domain, AUTO_SELECTOR))
    return made


def load_private_keys(
    settings: _Settings, config_dir: Path | None
) -> list[tuple[SigningKey, PrivateKey]]:
    """Every key of the signing table, parsed; raises :class:`DkimKeyError` naming the file."""
    return [key_from_file(d, s, p) for d, s, p in signing_entries(settings, config_dir)]


def load_signing_keys(settings: _Settings, config_dir: Path | None) -> list[SigningKey]:
    """The signing table's keys (for ``ironpost dkim list`` and ``ironpost dns records``)."""
    return [key for key, _ in load_private_keys(settings, config_dir)]
