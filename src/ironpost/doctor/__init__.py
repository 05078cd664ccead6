"""``ironpost doctor``: the deliverability audit (issue #6).

Owns the checks an administrator runs after provisioning and after every change: our
names and addresses (``names``), the published records (``published``), the TLS
certificate (``tlscert``), reputation on DNSBLs and the resolver (``reputation``), the
configuration against the hardening checklist (``audit``) and a live open-relay
self-test (``relay``). Each family returns :class:`Check` values; ``runner`` runs them
in a fixed order and ``check`` renders them. The doctor never changes anything.
"""

from __future__ import annotations

from ironpost.doctor.check import Check, Inputs, exit_status, render_json, render_text
from ironpost.doctor.runner import FAMILIES, Options, gather, run

__all__ = [
    "FAMILIES",
    "Check",
    "Inputs",
    "Options",
    "exit_status",
    "gather",
    "render_json",
    "render_text",
    "run",
]
