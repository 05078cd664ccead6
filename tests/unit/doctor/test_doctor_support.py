"""Helpers for the doctor's unit tests (no tests here): Inputs from a main.cf text and zones."""

from __future__ import annotations

import ipaddress
from typing import Any

from ironpost.config import load_texts
from ironpost.deliverability.records import build_records, options_from_settings
from ironpost.doctor.check import Inputs
from ironpost.testing.dns import FakeResolver

OUR_IP = "192.0.2.10"
BASE = """\
myhostname = mail.example.org
mydomain = example.org
myorigin = $mydomain
mydestination = localhost
virtual_mailbox_domains = example.org
inet_interfaces = 127.0.0.1
data_directory = /nonexistent/ironpost-doctor-test
queue_directory = /nonexistent/ironpost-doctor-test/queue
dns_nameservers = 127.0.0.1:5300
"""


def settings_for(extra: str = "", master: str | None = None) -> Any:
    return load_texts(
        BASE + extra, master, main_file="main.cf", master_file="master.cf", config_dir=None
    )


def make_inputs(zones: dict[str, Any], extra: str = "", **kw: Any) -> Inputs:
    loaded = settings_for(extra)
    options = options_from_settings(loaded.settings, ips=(OUR_IP,))
    values: dict[str, Any] = dict(
        settings=loaded.settings,
        config_dir=None,
        services=tuple(loaded.services),
        hostname="mail.example.org",
        addresses=(ipaddress.ip_address(OUR_IP),),
        domains=("example.org",),
        resolver=FakeResolver(zones),
        records=build_records(options),
        nameservers=("127.0.0.1:5300",),
    )
    values.update(kw)
    return Inputs(**values)


GOOD_ZONES: dict[str, Any] = {
    "mail.example.org": {"A": [OUR_IP], "TXT": [f"v=spf1 a ip4:{OUR_IP} -all"]},
    OUR_IP: {"PTR": ["mail.example.org"]},
    "example.org": {"MX": [(10, "mail.example.org")], "TXT": [f"v=spf1 mx a ip4:{OUR_IP} -all"]},
    "_dmarc.example.org": {"TXT": ["v=DMARC1; p=reject; rua=mailto:dmarc@example.org"]},
}
