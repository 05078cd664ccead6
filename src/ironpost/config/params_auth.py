"""Parameter table, auth family (issue #5): SPF, DMARC and Authentication-Results.

Every row here is ironpost's own (``origin="ironpost"``): Postfix has no built-in SPF or
DMARC. See params_smtpd.py for the table conventions. The DKIM verification limits the
inbound pipeline passes on (``dkim_max_signatures``, ``dkim_key_fetch_timeout``) are
rows of params_dkim.py. The restriction names that switch
the checks on (``reject_spf_fail``, ``reject_dmarc_policy``, ...) live in the
``smtpd_*_restrictions`` lists, not here.
"""

from __future__ import annotations

from ironpost.config.paramdef import Param, b, i, s, t

AUTH: tuple[Param, ...] = (
    s(
        "authserv_id",
        "$myhostname",
        "authserv-id of our Authentication-Results headers (incoming ones with it are removed).",
        origin="ironpost",
    ),
    t(
        "spf_check_timeout",
        "20s",
        "Deadline of one whole SPF check; past it the result is temperror.",
        lo=1,
        hi=300,
        origin="ironpost",
    ),
    b(
        "spf_received_header",
        "yes",
        "Add a Received-SPF header (RFC 7208) to inbound mail.",
        origin="ironpost",
    ),
    i(
        "dmarc_reject_code",
        "550",
        "Reply code when reject_dmarc_policy refuses a p=reject message.",
        lo=400,
        hi=599,
        origin="ironpost",
    ),
    s(
        "dmarc_reject_text",
        "Rejected by the DMARC policy of",
        "Reply text for a DMARC rejection; the From domain is appended.",
        origin="ironpost",
        expand=False,
    ),
    s(
        "dmarc_quarantine_action",
        "junk",
        "p=quarantine under reject_dmarc_policy: junk (Maildir .Junk) or header (A-R only).",
        choices=("junk", "header"),
        origin="ironpost",
    ),
)
