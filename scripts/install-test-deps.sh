#!/usr/bin/env bash
# Install the real peers the test suite drives: swaks, Postfix (smtp-source,
# smtp-sink, and the benchmark's reference server). Idempotent; apt only when
# something is missing.
set -euo pipefail
need=()
command -v swaks >/dev/null 2>&1 || need+=(swaks)
command -v smtp-source >/dev/null 2>&1 || need+=(postfix)
if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    # "No configuration": the package must not configure or start a system MTA.
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
