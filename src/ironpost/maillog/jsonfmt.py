"""The JSON-lines format (``maillog_format = json``): one object per event.

Owns the object's shape: ``ts`` (RFC 3339, UTC, milliseconds), ``host``, ``service``
(the full syslog tag, e.g. ``ironpost/submission/smtpd``), ``pid``, ``queue_id`` (null
for NOQUEUE and for lines about no message), ``event`` and ``text`` (the line's text,
already scrubbed by the privacy setting), plus the ``key=value`` fields Postfix lines
carry (``from``, ``to``, ``orig_to``, ``relay``, ``delay``, ``delays``, ``dsn``,
``status``, ``size``, ``nrcpt``, ``client``, ``message-id`` …; ``<>`` removed, numbers
as numbers) and, for a delivery, ``detail`` (the text in parentheses after the status).
Invariant: the parsed fields come from ``text`` itself, so they never hold more personal
data than the text line does.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

_QUEUE_ID = re.compile(r"([0-9A-Z][0-9A-Za-z]{4,19}): ")
_FIELD = re.compile(r"(?:^|(?<=[ ,]))([a-z_-]+)=(<[^<>]*>|[^,\s]+)")
_DETAIL = re.compile(r", status=\w+ \((.*)\)$")
_NUMBERS = frozenset({"size", "nrcpt", "delay"})

# (prefix of the text after the queue id, event); first match wins.
_EVENTS = (
    ("connect from ", "connect"),
    ("disconnect from ", "disconnect"),
    ("reject: ", "reject"),
    ("reject_warning: ", "reject_warning"),
    ("warning: ", "warning"),
    ("client=", "client"),
    ("message-id=", "message-id"),
    ("from=<", "queued"),
    ("to=<", "delivery"),
    ("removed", "removed"),
    ("uid=", "pickup"),
    ("sender non-delivery notification", "bounce"),
    ("sender delivery status notification", "notice"),
    ("sender delay notification", "delay-notice"),
)


def event_of(rest: str) -> str:
    for prefix, event in _EVENTS:
        if rest.startswith(prefix):
            return event
    return "other"


def fields_of(text: str) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for key, value in _FIELD.findall(text):
        if key in fields:
            continue
        if value.startswith("<") and value.endswith(">"):
            value = value[1:-1]
        if key in _NUMBERS:
            try:
                fields[key] = float(value) if key == "delay" else int(value)
                continue
            except ValueError:
                pass
        fields[key] = value
    return fields


def json_line(now: float, host: str, tag: str, pid: int, text: str) -> str:
    queue_id: str | None = None
    rest = text
    m = _QUEUE_ID.match(text)
    if m is not None:
        rest = text[m.end() :]
        if m.group(1) != "NOQUEUE":
            queue_id = m.group(1)
    event = event_of(rest)
    record: dict[str, Any] = {
        "ts": datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")[:-6] + "Z",
        "host": host,
        "service": tag,
        "pid": pid,
        "queue_id": queue_id,
        "event": event,
        "text": text,
    }
    if "=" in rest:
        for key, value in fields_of(rest).items():
            record.setdefault(key, value)
        if event == "delivery":
            d = _DETAIL.search(rest)
            if d is not None:
                record["detail"] = d.group(1)
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
