#!/usr/bin/env bash
# Install the real peers the test suite drives: swaks, Postfix (smtp-source,
# smtp-sink, a receiving MTA, and the benchmark's reference server), dnsmasq (the
# loopback DNS server serving test zones), Dovecot (SASL, LMTP), and the independent
# verifiers of issue #5: OpenDKIM's tools, libspf2's spfquery and NSD (an authoritative
# server that loads the zone `ironpost dns records` prints), and PostgreSQL (issue #8). Idempotent; apt only
# when something is missing. No service is enabled or started by the packages.
set -euo pipefail
need=()
command -v swaks >/dev/null 2>&1 || need+=(swaks)
command -v smtp-source >/dev/null 2>&1 || need+=(postfix)
command -v dnsmasq >/dev/null 2>&1 || need+=(dnsmasq-base)
command -v dovecot >/dev/null 2>&1 || need+=(dovecot-core)
[ -x /usr/lib/dovecot/lmtp ] || need+=(dovecot-lmtpd)
command -v opendkim-testmsg >/dev/null 2>&1 || need+=(opendkim-tools)
command -v spfquery >/dev/null 2>&1 || need+=(spfquery)
command -v nsd >/dev/null 2>&1 || need+=(nsd)
command -v pflogsumm >/dev/null 2>&1 || need+=(pflogsumm)
# PostgreSQL for the cluster queue engine (issue #8): the tests run their own initdb.
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    # "No configuration": the package must not configure or start a system MTA.
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    # policy-rc.d 101: maintainer scripts must not start daemons on this machine.
    created_policy=no
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
        created_policy=yes
    fi
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    [ "$created_policy" = no ] || rm -f /usr/sbin/policy-rc.d
fi
