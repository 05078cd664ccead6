"""A DNS server on loopback that answers nothing: every query gets REFUSED at once.

The ironpost that tests start points ``dns_nameservers`` here unless the test serves its
own zones (``dns_server``). Then every lookup an ironpost makes on its own (SPF, DKIM,
DMARC, the client's PTR, MX of remote domains) is a TEMPFAIL at once, instead of after a
timeout, and never leaves loopback. TEMPFAIL rather than NXDOMAIN: mail to remote domains
stays deferred in the queue (never bounced), as a test that looks at the queue expects.
One server per test process, started on first use, on a daemon thread.
"""

from __future__ import annotations

import socket
import threading

import dns.message
import dns.rcode

_lock = threading.Lock()
_address: str | None = None


def _serve(sock: socket.socket) -> None:
    while True:
        data, peer = sock.recvfrom(4096)
        try:
            query = dns.message.from_wire(data)
        except Exception:
            continue
        reply = dns.message.make_response(query)
        reply.set_rcode(dns.rcode.REFUSED)
        sock.sendto(reply.to_wire(), peer)


def null_dns() -> str:
    """``127.0.0.1:PORT`` of this process's REFUSED server."""
    global _address
    with _lock:
        if _address is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
            threading.Thread(target=_serve, args=(sock,), daemon=True).start()
            _address = f"127.0.0.1:{sock.getsockname()[1]}"
        return _address
