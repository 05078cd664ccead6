"""Parameter table, SMTP server family: smtpd_*, TLS, SASL, restrictions, reply codes.

Owns the rows the receiving side honours. Postfix names and defaults, except the
hardened defaults recorded with ``postfix_default`` and the ``origin="ironpost"``
rows (session deadline, connection cap, greet pause).
"""

from __future__ import annotations

from ironpost.config.paramdef import Param, b, code, i, lst, m, n, r, s, t

_TLS_LEVELS = ("", "none", "may", "encrypt")

SMTPD: tuple[Param, ...] = (
    s(
        "smtpd_banner",
        "$myhostname ESMTP $mail_name",
        "Text after 220 in the greeting.",
        postfix_default="$myhostname ESMTP $mail_name ($mail_version)",
    ),
    i("smtpd_recipient_limit", "1000", "Most recipients per message.", lo=1),
    i("smtpd_recipient_overshoot_limit", "1000", "Excess recipients counted as errors.", lo=1),
    t("smtpd_timeout", "300s", "Wait for a client command or data.", lo=1),
    t(
        "smtpd_starttls_timeout",
        "300s",
        "Time limit of the TLS handshake.",
        lo=1,
        postfix_default="${stress?{10}:{300}}s",
    ),
    i("smtpd_hard_error_limit", "20", "Errors before the session is dropped.", lo=1),
    i("smtpd_soft_error_limit", "10", "Errors before each reply is delayed.", lo=1),
    t("smtpd_error_sleep_time", "1s", "Delay per reply after the soft error limit."),
    i("smtpd_junk_command_limit", "100", "NOOP/RSET/VRFY/ETRN before they count as errors.", lo=1),
    i("smtpd_client_connection_count_limit", "50", "Concurrent sessions per client; 0: none."),
    i("smtpd_client_connection_rate_limit", "0", "Connections per client per time unit; 0: none."),
    i("smtpd_client_message_rate_limit", "0", "Messages per client per time unit; 0: none."),
    i("smtpd_client_recipient_rate_limit", "0", "Recipients per client per time unit; 0: none."),
    i("smtpd_client_auth_rate_limit", "0", "AUTH attempts per client per time unit; 0: none."),
    t("anvil_rate_time_unit", "60s", "Time unit of the client rate limits.", lo=1),
    n(
        "smtpd_client_event_limit_exceptions",
        "$mynetworks",
        "Clients exempt from the connection/rate limits.",
        postfix_default="${smtpd_client_connection_limit_exceptions:$mynetworks}",
    ),
    b("smtpd_helo_required", "yes", "Require HELO/EHLO before MAIL.", postfix_default="no"),
    b("smtpd_delay_reject", "yes", "Evaluate client/HELO/sender restrictions at RCPT TO."),
    r("smtpd_client_restrictions", "", "Restrictions at connect (evaluated at RCPT if delayed)."),
    r(
        "smtpd_helo_restrictions",
        "permit_mynetworks, reject_invalid_helo_hostname, reject_non_fqdn_helo_hostname",
        "Restrictions on the HELO/EHLO hostname.",
        postfix_default="",
    ),
    r(
        "smtpd_sender_restrictions",
        "reject_non_fqdn_sender",
        "Restrictions on MAIL FROM.",
        postfix_default="",
    ),
    r(
        "smtpd_relay_restrictions",
        "permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination",
        "Relay control, evaluated before smtpd_recipient_restrictions.",
        postfix_default="permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination",
    ),
    r(
        "smtpd_recipient_restrictions",
        "reject_non_fqdn_recipient, reject_unlisted_recipient",
        "Restrictions on RCPT TO (spam policy).",
        postfix_default="",
    ),
    r(
        "smtpd_data_restrictions",
        "reject_unauth_pipelining",
        "Restrictions at DATA.",
        postfix_default="",
    ),
    r("smtpd_end_of_data_restrictions", "", "Restrictions after the message content."),
    lst("smtpd_restriction_classes", "", "Names of user-defined restriction lists."),
    s("smtpd_null_access_lookup_key", "<>", "Access-table key for the null sender."),
    m("smtpd_sender_login_maps", "", "Sender address -> SASL login owner."),
    b("smtpd_reject_unlisted_recipient", "yes", "Reject unknown recipients in our domains."),
    b("smtpd_reject_unlisted_sender", "no", "Reject unknown senders in our domains."),
    # Postfix also spells "yes" as "normalize" or "reject": accepted as yes (choices of
    # a bool row are extra words meaning yes).
    b(
        "smtpd_forbid_bare_newline",
        "yes",
        "Reject bare LF line endings (SMTP smuggling defence).",
        postfix_default="no",
        choices=("normalize", "reject"),
    ),
    n("smtpd_forbid_bare_newline_exclusions", "$mynetworks", "Clients allowed to send bare LF."),
    b(
        "smtpd_forbid_unauth_pipelining",
        "yes",
        "Disconnect clients that pipeline without PIPELINING.",
    ),
    b("smtpd_peername_lookup", "yes", "Look up the client hostname (reverse DNS)."),
    lst("smtpd_discard_ehlo_keywords", "", "EHLO keywords not offered."),
    b("smtpd_per_request_deadline", "no", "Make smtpd_timeout a per-request deadline."),
    i("smtpd_min_data_rate", "500", "Minimum DATA rate (bytes/s) with per-request deadline.", lo=1),
    b("smtpd_client_port_logging", "no", "Log the client port."),
    s(
        "smtpd_reject_footer",
        "",
        "Text appended to 4xx/5xx replies ($client_address etc. expanded per reply).",
        expand=False,
    ),
    # --- ironpost-own -------------------------------------------------------------
    t("smtpd_session_deadline", "3600s", "Whole-session deadline; 0: none.", origin="ironpost"),
    i(
        "smtpd_connection_limit",
        "10000",
        "Global cap on concurrent SMTP sessions.",
        lo=1,
        origin="ironpost",
    ),
    t(
        "smtpd_greet_pause",
        "1s",
        "Wait before the 220 greeting for clients outside "
        "$mynetworks; early talkers are rejected. 0: disabled.",
        hi=60,
        origin="ironpost",
    ),
    # --- TLS --------------------------------------------------------------------------
    s(
        "smtpd_tls_security_level",
        "may",
        "Inbound TLS: none, may (offer STARTTLS), encrypt.",
        postfix_default="",
        choices=_TLS_LEVELS,
    ),
    s("smtpd_tls_cert_file", "", "PEM certificate (chain) file."),
    s("smtpd_tls_key_file", "$smtpd_tls_cert_file", "PEM private key file."),
    lst("smtpd_tls_chain_files", "", "Files holding key + certificate chain, in order."),
    i("smtpd_tls_loglevel", "0", "TLS logging verbosity.", hi=4),
    b("smtpd_tls_wrappermode", "no", "TLS from the first byte (port 465, submissions)."),
    s(
        "smtpd_tls_protocols",
        ">=TLSv1.2",
        "Protocols for opportunistic TLS.",
        postfix_default=">=TLSv1",
    ),
    s(
        "smtpd_tls_mandatory_protocols",
        ">=TLSv1.2",
        "Protocols when TLS is mandatory.",
        postfix_default=">=TLSv1",
    ),
    s(
        "smtpd_tls_ciphers",
        "medium",
        "Cipher grade for opportunistic TLS.",
        choices=("export", "low", "medium", "high", "null"),
    ),
    s(
        "smtpd_tls_mandatory_ciphers",
        "medium",
        "Cipher grade for mandatory TLS.",
        choices=("export", "low", "medium", "high", "null"),
    ),
    lst("smtpd_tls_exclude_ciphers", "", "Ciphers never used."),
    b("smtpd_tls_received_header", "yes", "Record TLS details in Received:.", postfix_default="no"),
    b("smtpd_tls_auth_only", "yes", "Offer AUTH only after STARTTLS.", postfix_default="no"),
    # --- SASL -------------------------------------------------------------------------
    b("smtpd_sasl_auth_enable", "no", "Offer SMTP AUTH."),
    s("smtpd_sasl_type", "cyrus", "SASL back-end type."),
    s("smtpd_sasl_path", "smtpd", "Back-end specific path or name."),
    s("smtpd_sasl_service", "smtp", "SASL service name."),
    s("smtpd_sasl_local_domain", "", "Realm appended to login names."),
    lst("smtpd_sasl_security_options", "noanonymous", "Mechanism filter (plaintext TLS)."),
    lst(
        "smtpd_sasl_tls_security_options",
        "$smtpd_sasl_security_options",
        "Mechanism filter under TLS.",
    ),
    b("smtpd_sasl_authenticated_header", "no", "Record the login in Received:."),
    # --- reply codes --------------------------------------------------------------
    code("reject_code", "554", 'Reply code of "reject".'),
    code("defer_code", "450", 'Reply code of "defer".', hi=499),
    code("relay_domains_reject_code", "554", "Relay denied."),
    code("unknown_local_recipient_reject_code", "550", "Unknown recipient in $mydestination."),
    code("unknown_virtual_mailbox_reject_code", "550", "Unknown virtual mailbox."),
    code("unknown_virtual_alias_reject_code", "550", "Unknown virtual alias."),
    code("unknown_relay_recipient_reject_code", "550", "Unknown relay recipient."),
    code("invalid_hostname_reject_code", "501", "Invalid HELO hostname."),
    code("non_fqdn_reject_code", "504", "Non-FQDN hostname or address."),
    code("access_map_reject_code", "554", "REJECT from an access table."),
    code("access_map_defer_code", "450", "DEFER from an access table.", hi=499),
    code("unknown_address_reject_code", "450", "Sender/recipient domain not found."),
    code("unknown_client_reject_code", "450", "Client hostname not found."),
    code("unknown_hostname_reject_code", "450", "HELO hostname not found."),
    code("maps_rbl_reject_code", "554", "Client listed in a DNSBL."),
    code("unverified_recipient_reject_code", "450", "Recipient address verification failed."),
    code("plaintext_reject_code", "450", "TLS required but the session is plaintext."),
)
