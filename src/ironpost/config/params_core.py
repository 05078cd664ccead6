"""Parameter table, core family: identity, addresses, domains, maps, queue, delivery.

Owns the rows for everything that is not the SMTP server (see ``params_smtpd``).
Names and defaults are Postfix's (3.7) except where ``postfix_default`` records
that ironpost's hardened default differs, and ``origin="ironpost"`` rows.
"""

from __future__ import annotations

from ironpost.config.paramdef import Param, b, d, i, lst, m, n, s, t, z

CORE: tuple[Param, ...] = (
    # --- identity -----------------------------------------------------------------
    s(
        "myhostname",
        "",
        "Fully-qualified host name (default: the machine's FQDN, else localhost.localdomain).",
    ),
    s("mydomain", "", "Internet domain (default: $myhostname minus its first label)."),
    s("myorigin", "$myhostname", "Domain appended to unqualified sender addresses."),
    s(
        "mail_name",
        "ironpost",
        "The name of the mail system, as used in $smtpd_banner.",
        postfix_default="Postfix",
    ),
    s(
        "syslog_name",
        "ironpost",
        "Program name prefix in log lines.",
        postfix_default="${multi_instance_name?{$multi_instance_name}:{postfix}}",
    ),
    s("maillog_file", "", "Log file; empty logs to stderr, /dev/stdout to stdout."),
    s(
        "queue_directory",
        "/var/spool/ironpost",
        "Queue location (ironpost's own format).",
        postfix_default="/var/spool/postfix",
    ),
    s(
        "data_directory",
        "/var/lib/ironpost",
        "Writable data (caches, keys).",
        postfix_default="/var/lib/postfix",
    ),
    z("queue_minfree", "0", "Free bytes required on the queue file system to accept mail."),
    s(
        "queue_engine",
        "sqlite",
        "Queue store: sqlite (one machine, under queue_directory) or postgresql (a cluster).",
        origin="ironpost",
        choices=("sqlite", "postgresql"),
    ),
    s(
        "queue_database_url",
        "",
        "PostgreSQL URL of the shared queue (queue_engine = postgresql): postgresql://...",
        origin="ironpost",
    ),
    s(
        "queue_node_name",
        "$myhostname",
        "This node's name in a PostgreSQL cluster; unique per node (its leases carry it).",
        origin="ironpost",
    ),
    t(
        "queue_lease_time",
        "60s",
        "How long a node's claim on queued mail lasts unrenewed before others take it over.",
        1,
        origin="ironpost",
    ),
    t(
        "anvil_cluster_sync_time",
        "1s",
        "How often a cluster node exchanges its anvil counts and bans through PostgreSQL.",
        1,
        origin="ironpost",
    ),
    z(
        "queue_body_file_threshold",
        "262144",
        "Message bodies this large or larger are queued in files, not in the database; 0: never.",
        origin="ironpost",
    ),
    # --- network ------------------------------------------------------------------
    lst("inet_interfaces", "all", "Addresses to listen on: all, loopback-only or a list."),
    s("inet_protocols", "all", 'IP versions: all, ipv4, ipv6 or "ipv4, ipv6".'),
    n(
        "mynetworks",
        "127.0.0.0/8 [::1]/128",
        "Trusted client networks (permit_mynetworks).",
        postfix_default="(derived from mynetworks_style)",
    ),
    s(
        "mynetworks_style",
        "host",
        "How Postfix derives mynetworks (informational in ironpost).",
        choices=("host", "subnet", "class"),
    ),
    lst("proxy_interfaces", "", "Addresses that reach us through a proxy or NAT."),
    lst(
        "dns_nameservers", "", "Resolver addresses; empty uses /etc/resolv.conf.", origin="ironpost"
    ),
    # --- domains and address classes ------------------------------------------------
    d("mydestination", "$myhostname, localhost.$mydomain, localhost", "Domains delivered locally."),
    d("relay_domains", "", "Domains this host relays to (empty: Postfix 3 default, hardened)."),
    s("relay_transport", "relay", "Default transport for relay domains."),
    m("relay_recipient_maps", "", "Valid recipients in relay domains (empty: all)."),
    d("virtual_alias_domains", "$virtual_alias_maps", "Alias-only virtual domains."),
    m("virtual_alias_maps", "", "Virtual alias (address rewriting) tables."),
    d("virtual_mailbox_domains", "$virtual_mailbox_maps", "Domains with virtual mailboxes."),
    m("virtual_mailbox_maps", "", "Virtual mailbox tables: address -> path below the base."),
    s("virtual_mailbox_base", "", "Directory prefixed to virtual mailbox paths."),
    z("virtual_mailbox_limit", "51200000", "Largest mailbox file (mbox) in bytes."),
    i("virtual_minimum_uid", "100", "Smallest uid virtual delivery accepts.", lo=1),
    m("virtual_uid_maps", "", "Owner uid of virtual mailboxes."),
    m("virtual_gid_maps", "", "Owner gid of virtual mailboxes."),
    s("virtual_transport", "virtual", "Transport for virtual mailbox domains."),
    m(
        "alias_maps",
        "",
        "Local aliases (hash: reads the text source file).",
        postfix_default="hash:/etc/aliases, nis:mail.aliases",
    ),
    m(
        "alias_database",
        "",
        "Alias databases built by newaliases.",
        postfix_default="hash:/etc/aliases",
    ),
    m(
        "local_recipient_maps",
        "proxy:unix:passwd.byname $alias_maps",
        "Valid local recipients (empty: accept all).",
    ),
    s("local_transport", "local:$myhostname", "Transport for $mydestination."),
    s("recipient_delimiter", "", "Address extension separators, e.g. + or +-."),
    lst(
        "propagate_unmatched_extensions",
        "canonical, virtual",
        "Lookups that keep an unmatched address extension.",
    ),
    lst(
        "parent_domain_matches_subdomains",
        "debug_peer_list,fast_flush_domains,mynetworks,permit_mx_backup_networks,"
        "qmqpd_authorized_clients,relay_domains,smtpd_access_maps",
        "Features where domain.tld also matches subdomains.",
    ),
    b("allow_untrusted_routing", "no", "Accept sender-routed (user@a@b, %, !) relay addresses."),
    i("virtual_alias_recursion_limit", "1000", "Most nested virtual alias expansions.", lo=1),
    i(
        "virtual_alias_expansion_limit",
        "1000",
        "Most addresses one virtual alias expands to.",
        lo=1,
    ),
    b("allow_percent_hack", "yes", "Rewrite user%domain to user@domain."),
    b("swap_bangpath", "yes", "Rewrite site!user to user@site."),
    b("append_at_myorigin", "yes", "Append @$myorigin to bare local parts."),
    b("append_dot_mydomain", "no", "Append .$mydomain to single-label domains."),
    m("canonical_maps", "", "Address mapping for headers and envelope."),
    m("sender_canonical_maps", "", "Sender address mapping."),
    m("recipient_canonical_maps", "", "Recipient address mapping."),
    m("relocated_maps", "", 'Moved users: "user has moved to" bounces.'),
    m("transport_maps", "", "Per-domain/address transport selection."),
    m("sender_bcc_maps", "", "Automatic BCC by sender."),
    m("recipient_bcc_maps", "", "Automatic BCC by recipient."),
    s("always_bcc", "", "Address that receives a copy of every message."),
    s("empty_address_recipient", "MAILER-DAEMON", "Recipient of mail to <>."),
    b("strict_rfc821_envelopes", "no", "Require <> around MAIL FROM/RCPT TO addresses."),
    b("smtputf8_enable", "yes", "Offer SMTPUTF8 (RFC 6531)."),
    b("disable_vrfy_command", "yes", "Refuse VRFY (no address harvesting).", postfix_default="no"),
    b(
        "show_user_unknown_table_name",
        "no",
        'Name the table in "user unknown" replies (never leak configuration).',
        postfix_default="yes",
    ),
    # --- message limits -----------------------------------------------------------
    z("message_size_limit", "10240000", "Largest message (bytes, envelope + content); 0: none."),
    z("header_size_limit", "102400", "Largest message header (bytes).", lo=1),
    i("line_length_limit", "2048", "Longer lines are split.", lo=1),
    i("hopcount_limit", "50", "Most Received: headers before a message is bounced.", lo=1),
    b("enable_original_recipient", "yes", "Record the original recipient (orig_to)."),
    # --- queue and scheduling -----------------------------------------------------
    t("queue_run_delay", "300s", "Time between deferred queue scans.", lo=1),
    t("minimal_backoff_time", "300s", "Smallest retry delay of a deferred message.", lo=1),
    t("maximal_backoff_time", "4000s", "Largest retry delay of a deferred message.", lo=1),
    t("maximal_queue_lifetime", "5d", "Time before an undeliverable message bounces.", unit="d"),
    t("bounce_queue_lifetime", "5d", "Queue lifetime of bounce messages.", unit="d"),
    t(
        "delay_warning_time",
        "4h",
        "Send a delay notice after this long; 0: never.",
        unit="h",
        postfix_default="0h",
    ),
    i("default_process_limit", "100", "Most processes/tasks per service.", lo=1),
    i("initial_destination_concurrency", "5", "Starting concurrency per destination.", lo=1),
    i(
        "default_destination_concurrency_limit",
        "20",
        "Most parallel deliveries per destination.",
        lo=0,
    ),
    i("default_destination_recipient_limit", "50", "Most recipients per delivery.", lo=0),
    i(
        "default_destination_concurrency_failed_cohort_limit",
        "1",
        "Failed pseudo-cohorts before a destination is marked dead; 0: never.",
        lo=0,
    ),
    s(
        "default_destination_concurrency_positive_feedback",
        "1/concurrency",
        "Window growth per successful delivery.",
    ),
    s(
        "default_destination_concurrency_negative_feedback",
        "1/concurrency",
        "Window shrink per failed delivery.",
    ),
    *(
        row
        for transport in ("smtp", "relay", "lmtp")
        for row in (
            i(
                f"{transport}_destination_concurrency_limit",
                "$default_destination_concurrency_limit",
                f"Most parallel deliveries per destination of the {transport} transport.",
                lo=0,
            ),
            i(
                f"{transport}_destination_recipient_limit",
                "$default_destination_recipient_limit",
                f"Most recipients per delivery of the {transport} transport.",
                lo=0,
            ),
        )
    ),
    t("default_destination_rate_delay", "0s", "Pause between deliveries to one destination."),
    i("qmgr_message_active_limit", "20000", "Most messages in the active queue.", lo=1),
    i("qmgr_message_recipient_limit", "20000", "Most in-memory recipients.", lo=1),
    t("transport_retry_time", "60s", "Retry interval of a failed transport.", lo=1),
    # --- bounces and notices ------------------------------------------------------
    lst("notify_classes", "resource, software", "Problems reported to the postmaster."),
    s("bounce_notice_recipient", "postmaster", "Recipient of bounce notices."),
    s("2bounce_notice_recipient", "postmaster", "Recipient of undeliverable bounces."),
    s("delay_notice_recipient", "postmaster", "Recipient of delay notices."),
    s("double_bounce_sender", "double-bounce", "Sender of postmaster notices."),
    z("bounce_size_limit", "50000", "Original message bytes returned in a bounce.", lo=1),
    # --- SMTP client (delivery) -------------------------------------------------------
    s("relayhost", "", "Smarthost for non-local mail: host, [host], [host]:port."),
    s("default_transport", "smtp", "Transport for everything else."),
    m("sender_dependent_relayhost_maps", "", "Relayhost by sender."),
    s("smtp_helo_name", "$myhostname", "Hostname sent in EHLO/HELO."),
    s("smtp_bind_address", "", "Source IPv4 address for outbound SMTP."),
    s("smtp_bind_address6", "", "Source IPv6 address for outbound SMTP."),
    s("smtp_address_preference", "any", "IP version preference.", choices=("any", "ipv4", "ipv6")),
    t("smtp_connect_timeout", "30s", "TCP connect timeout.", lo=1),
    t("smtp_helo_timeout", "300s", "Wait for greeting and EHLO reply.", lo=1),
    t("smtp_mail_timeout", "300s", "Wait for the MAIL FROM reply.", lo=1),
    t("smtp_rcpt_timeout", "300s", "Wait for an RCPT TO reply.", lo=1),
    t("smtp_data_init_timeout", "120s", "Wait for the DATA reply.", lo=1),
    t("smtp_data_xfer_timeout", "180s", "Stall limit while sending content.", lo=1),
    t("smtp_data_done_timeout", "600s", "Wait for the end-of-data reply.", lo=1),
    t("smtp_quit_timeout", "300s", "Wait for the QUIT reply.", lo=1),
    t("smtp_rset_timeout", "20s", "Wait for the RSET reply.", lo=1),
    t("smtp_connection_cache_time_limit", "2s", "Idle time of a cached SMTP session.", lo=1),
    i("smtp_mx_address_limit", "5", "Most MX addresses tried; 0: no limit."),
    i("smtp_mx_session_limit", "2", "Most sessions per delivery attempt; 0: no limit."),
    b("smtp_skip_5xx_greeting", "yes", "Try the next MX after a 5xx greeting."),
    s(
        "smtp_tls_security_level",
        "may",
        "Outbound TLS: none, may, encrypt, dane, verify, secure.",
        postfix_default="",
        choices=(
            "",
            "none",
            "may",
            "encrypt",
            "dane",
            "dane-only",
            "fingerprint",
            "verify",
            "secure",
        ),
    ),
    m("smtp_tls_policy_maps", "", "Per-destination TLS policy."),
    s("smtp_tls_CAfile", "", "Trusted CA bundle for verify/secure."),
    i("smtp_tls_loglevel", "0", "TLS logging verbosity.", hi=4),
    s(
        "smtp_tls_protocols",
        ">=TLSv1.2",
        "Protocols for opportunistic TLS.",
        postfix_default="!SSLv2, !SSLv3",
    ),
    s(
        "smtp_tls_mandatory_protocols",
        ">=TLSv1.2",
        "Protocols for mandatory TLS.",
        postfix_default="!SSLv2, !SSLv3",
    ),
    # SASL client (relayhost authentication): the same rows for smtp_ and lmtp_.
    *(
        row
        for proto in ("smtp", "lmtp")
        for row in (
            b(f"{proto}_sasl_auth_enable", "no", "Authenticate to servers (AUTH) when offered."),
            m(
                f"{proto}_sasl_password_maps",
                "",
                "username:password by server host name, next hop as written, or domain.",
            ),
            lst(
                f"{proto}_sasl_security_options",
                "noplaintext, noanonymous",
                "Mechanism properties required without TLS (noplaintext: no PLAIN/LOGIN).",
            ),
            lst(
                f"{proto}_sasl_tls_security_options",
                f"${proto}_sasl_security_options",
                "Mechanism properties required on a TLS session.",
            ),
            lst(
                f"{proto}_sasl_mechanism_filter",
                "",
                "Mechanisms that may be used (names, !name); empty: any offered.",
            ),
            b(
                f"{proto}_sasl_auth_soft_bounce",
                "yes",
                "Defer (4.7.x), not bounce, when the server rejects AUTH with 5xx.",
            ),
        )
    ),
    # --- timeouts of daemons ------------------------------------------------------
    t("daemon_timeout", "18000s", "Time limit of a daemon request.", lo=1),
    t("ipc_timeout", "3600s", "Internal communication time limit.", lo=1),
)
