"""Parameter table, dkim family (issue #5). See params_smtpd.py for the conventions.

All rows are ironpost's own (Postfix signs through a milter such as OpenDKIM); the
semantics are documented in docs/dkim.md.
"""

from __future__ import annotations

from ironpost.config.paramdef import Param, b, i, lst, m, s, t

#: RFC 6376 §5.4.1's recommended header fields (those present are signed).
SIGNED_HEADERS = (
    "from, reply-to, subject, date, to, cc, resent-date, resent-from, resent-to, resent-cc,"
    " in-reply-to, references, list-id, list-help, list-unsubscribe, list-subscribe,"
    " list-post, list-owner, list-archive, message-id, sender, mime-version, content-type,"
    " content-transfer-encoding"
)

DKIM: tuple[Param, ...] = (
    m(
        "dkim_signing_table",
        "",
        "From: domain -> 'selector[:keyfile]' items (two: RSA plus ed25519 dual signing);"
        " inline: or a text table. Empty: sign nothing.",
        origin="ironpost",
    ),
    b(
        "dkim_auto_keys",
        "yes",
        "With an empty dkim_signing_table, sign our domains' mail with keys made at first"
        " start ($data_directory/dkim/DOMAIN/ironpost.private).",
        origin="ironpost",
    ),
    s(
        "dkim_key_directory",
        "dkim",
        "Where DOMAIN/SELECTOR.private keys live (relative to the config directory,"
        " or data_directory with the embedded config).",
        origin="ironpost",
    ),
    lst(
        "dkim_signature_headers",
        SIGNED_HEADERS,
        "Header fields signed when present (RFC 6376 section 5.4).",
        origin="ironpost",
    ),
    lst(
        "dkim_oversign_headers",
        "from",
        "Header fields signed once more than present, so none can be added.",
        origin="ironpost",
    ),
    i(
        "dkim_max_signatures",
        "5",
        "Most DKIM-Signature fields verified per message; the rest get dkim=policy.",
        lo=1,
        hi=50,
        origin="ironpost",
    ),
    t(
        "dkim_key_fetch_timeout",
        "10s",
        "Time limit for a message's DKIM key lookups; past it: dkim=temperror.",
        lo=1,
        hi=120,
        origin="ironpost",
    ),
)
