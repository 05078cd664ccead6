"""Authentication-Results (RFC 8601) and Received-SPF (RFC 7208 §9.1) header fields,
and the removal of incoming fields that would impersonate ours.

Owns: the header-section splitter the auth package reads messages with
(:func:`header_fields`), the two builders (:func:`authentication_results`,
:func:`received_spf`), and :func:`strip_forged`, which removes every incoming
Authentication-Results field whose authserv-id is ours (RFC 8601 §5) and every incoming
copy of the quarantine marker :data:`QUARANTINE_HEADER`.

Invariants:
- built fields are CRLF-terminated and folded, and never carry a CR, LF or other control
  character taken from the peer (addresses, HELO names, DKIM d= and reasons are all
  attacker-controlled); non-ASCII text appears only inside quoted values;
- :func:`strip_forged` rewrites only the header section and returns the *same object*
  when there is nothing to remove, so the common case copies no message bytes.
"""

from __future__ import annotations

import re

from ironpost.auth.types import ArcResult, DkimResult, DmarcResult, InboundResults, SpfResult

#: The marker the Maildir agent files into ``.Junk`` (DMARC ``p=quarantine``).
QUARANTINE_HEADER = "X-Ironpost-Quarantine"
QUARANTINE_FIELD = f"{QUARANTINE_HEADER}: dmarc\r\n".encode("ascii")

_AR_NAME = b"authentication-results"
_QUARANTINE_NAME = QUARANTINE_HEADER.lower().encode("ascii")

# RFC 2045 token (RFC 8601 "value"): no SPACE, CTLs or tspecials.
_TOKEN = re.compile(r"^[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+$")
# An address RFC 8601's pvalue accepts bare: dot-atom local part @ LDH domain.
_ADDRESS = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9_.-]+$")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")
_COMMENT_UNSAFE = re.compile(r"[\x00-\x1f\x7f()\\]")
MAX_TEXT = 200  # longest peer-derived text we copy into a header


# --- reading a header section -------------------------------------------------------------


def header_end(content: bytes) -> int:
    """Offset of the blank line ending the header section (len(content) if none).

    Accepts CRLF or bare-LF line ends; a message starting with a blank line has no header.
    """
    if content.startswith((b"\r\n", b"\n")):
        return 0
    ends = [i + 1 for i in (content.find(b"\n\r\n"), content.find(b"\n\n")) if i >= 0]
    return min(ends) if ends else len(content)


def header_fields(content: bytes) -> list[tuple[bytes, bytes]]:
    """``[(lowercased name, raw field including continuation lines and line end)]``.

    A line that is neither a field nor a continuation (no colon) is kept as a field with
    an empty name, so re-joining all raw fields gives the header section back unchanged.
    """
    section = content[: header_end(content)]
    fields: list[tuple[bytes, bytes]] = []
    for line in section.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and fields:
            name, raw = fields[-1]
            fields[-1] = (name, raw + line)
            continue
        colon = line.find(b":")
        name = line[:colon].strip().lower() if colon > 0 else b""
        fields.append((name, line))
    return fields


def field_value(raw: bytes) -> str:
    """The unfolded value of one raw field, decoded leniently (UTF-8, else Latin-1)."""
    value = raw.partition(b":")[2]
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        text = value.decode("latin-1")
    return re.sub(r"\r?\n(?=[ \t])", "", text).strip()


def _skip_cfws(text: str, i: int) -> int:
    """Index after whitespace and (nested) comments starting at ``i``."""
    depth = 0
    while i < len(text):
        c = text[i]
        if depth:
            if c == "\\":
                i += 1
            elif c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
        elif c == "(":
            depth = 1
        elif not c.isspace():
            break
        i += 1
    return i


def authserv_id_of(raw: bytes) -> str:
    """The authserv-id of one raw Authentication-Results field ("" if unparseable)."""
    value = field_value(raw)
    i = _skip_cfws(value, 0)
    if value[i : i + 1] == '"':
        end = value.find('"', i + 1)
        return value[i + 1 : end] if end > 0 else ""
    match = re.match(r"[^\s;()]+", value[i:])
    return match.group(0) if match else ""


def strip_forged(content: bytes, authserv_id: str) -> bytes:
    """``content`` without incoming A-R fields claiming ``authserv_id`` (case-insensitive)
    and without incoming :data:`QUARANTINE_HEADER` fields; the same object if none."""
    end = header_end(content)
    lowered = content[:end].lower()
    if _AR_NAME not in lowered and _QUARANTINE_NAME not in lowered:
        return content  # the common case: one search, no copy
    ours = authserv_id.rstrip(".").casefold()
    kept: list[bytes] = []
    removed = False
    for name, raw in header_fields(content):
        if name == _QUARANTINE_NAME or (
            name == _AR_NAME and authserv_id_of(raw).rstrip(".").casefold() == ours
        ):
            removed = True
            continue
        kept.append(raw)
    if not removed:
        return content
    return b"".join(kept) + content[end:]


# --- building fields --------------------------------------------------------------------


def _clean(text: str) -> str:
    return _UNSAFE.sub("", text)[:MAX_TEXT]


def _comment(text: str) -> str:
    return "(" + _COMMENT_UNSAFE.sub("", text)[:MAX_TEXT] + ")"


def quote_value(text: str) -> str:
    """``text`` as an RFC 8601 value: a bare token if it is one, else a quoted-string."""
    text = _clean(text)
    if _TOKEN.match(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _pvalue_address(address: str, domain: str) -> str:
    """smtp.mailfrom's pvalue: the address if plain, else its domain (RFC 8601 §2.7.4)."""
    address = _clean(address)
    if address.rpartition("@")[2].lower() == domain and _ADDRESS.match(address):
        return address
    return quote_value(domain)


def _spf_method(spf: SpfResult, sender: str) -> str:
    if spf.identity == "helo":
        return f"spf={spf.result} smtp.helo={quote_value(spf.domain)}"
    return f"spf={spf.result} smtp.mailfrom={_pvalue_address(sender, spf.domain)}"


def _dkim_method(result: DkimResult) -> str:
    parts = [f"dkim={result.result}"]
    if result.reason and result.result != "pass":
        parts.append(f"reason={quote_value(result.reason)}")
    if result.domain:
        parts.append(f"header.d={quote_value(result.domain)}")
    if result.selector:
        parts.append(f"header.s={quote_value(result.selector)}")
    if result.algorithm:
        parts.append(f"header.a={quote_value(result.algorithm)}")
    if result.header_b:
        parts.append(f"header.b={quote_value(result.header_b)}")
    return " ".join(parts)


def _dmarc_method(dmarc: DmarcResult) -> str:
    detail = f"p={dmarc.policy} dis={dmarc.disposition}"
    if dmarc.reason and dmarc.result != "pass":
        detail += f"; {dmarc.reason}"
    return f"dmarc={dmarc.result} {_comment(detail)} header.from={quote_value(dmarc.from_domain)}"


def _arc_method(arc: ArcResult) -> str:
    method = f"arc={arc.result}"
    if arc.instance:
        method += f" (i={arc.instance})"
    if arc.reason and arc.result == "fail":
        method += f" reason={quote_value(arc.reason)}"
    return method


def authentication_results(authserv_id: str, results: InboundResults, *, sender: str = "") -> bytes:
    """One ``Authentication-Results:`` field, one method per folded line (RFC 8601).

    ``sender`` (MAIL FROM) makes ``smtp.mailfrom`` the full address when it is a plain
    one; otherwise the SPF domain is given, which RFC 8601 §2.7.4 also allows.
    """
    methods: list[str] = []
    if results.spf is not None:
        methods.append(_spf_method(results.spf, sender))
    if results.dkim:
        methods.extend(_dkim_method(r) for r in results.dkim)
    elif results.spf is not None or results.dmarc is not None:
        methods.append("dkim=none")
    if results.dmarc is not None:
        methods.append(_dmarc_method(results.dmarc))
    if results.arc is not None:
        methods.append(_arc_method(results.arc))
    head = f"Authentication-Results: {quote_value(authserv_id)}"
    if not methods:
        return f"{head}; none\r\n".encode()
    return (head + ";\r\n\t" + ";\r\n\t".join(methods) + "\r\n").encode()


_SPF_COMMENTS = {
    "pass": "domain of {who} designates {ip} as permitted sender",
    "fail": "domain of {who} does not designate {ip} as permitted sender",
    "softfail": "domain of transitioning {who} does not designate {ip} as permitted sender",
    "neutral": "{ip} is neither permitted nor denied by domain of {who}",
    "none": "domain of {who} does not designate permitted sender hosts",
    "temperror": "error in processing during lookup of {who}",
    "permerror": "permanent error in processing domain of {who}",
}


def received_spf(spf: SpfResult, *, receiver: str, sender: str, helo: str) -> bytes:
    """One ``Received-SPF:`` field (RFC 7208 §9.1), with the key-value pairs of §9.1."""
    who = sender if spf.identity == "mailfrom" and sender else spf.domain
    comment = _SPF_COMMENTS.get(spf.result, "{who}").format(who=who, ip=spf.client_address)
    pairs = [
        f"client-ip={quote_value(spf.client_address)}",
        f"envelope-from={quote_value(sender)}" if sender else 'envelope-from=""',
        f"helo={quote_value(helo)}",
        f"receiver={quote_value(receiver)}",
        f"identity={spf.identity}",
    ]
    if spf.mechanism:
        pairs.append(f"mechanism={quote_value(spf.mechanism)}")
    if spf.result in ("temperror", "permerror") and spf.explanation:
        pairs.append(f"problem={quote_value(spf.explanation)}")
    first = f"Received-SPF: {spf.result} {_comment(f'{receiver}: {comment}')}"
    return (first + "\r\n\t" + ";\r\n\t".join(pairs) + "\r\n").encode("utf-8")
