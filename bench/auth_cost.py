"""S6, authentication on: what DKIM signing and SPF/DKIM/DMARC verification cost per message.

Owns the S6 procedure (issue #7). The accept benchmark's main.cf, load and Maildir, with the
authentication work switched on stage by stage:

* **plain**: the shared `MAIN_CF` (all mail from $mynetworks, nothing signed or checked);
* **sign**: plus ``dkim_signing_table`` with a freshly generated 2048-bit RSA key for
  bench.test; every message is our own (from 127.0.0.1, From: sender@bench.test), so signed;
* **verify**: ``mynetworks = 127.0.0.1/32``; every message comes from 127.0.0.41, a stranger,
  From: sender@remote.test, pre-signed by remote.test's key; ironpost checks SPF, DKIM and
  DMARC against a loopback dnsmasq serving remote.test's records (and its PTR);
* **both**: the sign and verify settings together, half the sessions our own mail (signed),
  half strangers' (checked): a mail server's usual mix.

Postfix has no built-in signer or verifier (it signs through a milter such as OpenDKIM, which
is not installed here and would add its own cost), so Postfix runs the plain stage only, from
the same main.cf text as ironpost's plain stage.

The load is a small asyncio SMTP client (smtp-source cannot bind a source address), one
connection per session reused for many messages, no pipelining, the same client for every run,
so the stages' differences are the server's. Measured per run: accepted (messages / client
wall time) and end to end (to the last Maildir delivery, from ``new/``'s mtime). The cost of a
stage is 1e6/rate(stage) - 1e6/rate(plain) in µs per message.

Invariant: a figure counts only when every message got its 250 and was delivered, and a
sample delivery shows the stage did its work (a DKIM-Signature for sign, spf=pass, dkim=pass
and dmarc=pass for verify).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

from common import (
    MAIN_CF,
    RECIPIENT,
    REPO,
    SENDER,
    BenchError,
    machine_info,
    maildir_new,
)
from harness import (
    Rounds,
    figures_table,
    fresh_instance,
    load_fields,
    median,
    new_parser,
    parse_addresses,
    preflight,
    ratio,
    work_dir,
    write_result,
)
from ironpost_instance import IRONPOST

sys.path.insert(0, str(REPO / "tests" / "integration"))
from dns_server import DnsServer, start_dns_server  # tests/integration

STAGES = ("plain", "sign", "verify", "both")
STAGE_NAMES = {
    "plain": "plain (S1)",
    "sign": "DKIM signing",
    "verify": "SPF+DKIM+DMARC verification",
    "both": "signing and verification (half each)",
}
OWN_SOURCE = "127.0.0.1"
STRANGER = "127.0.0.41"
REMOTE = "remote.test"
REMOTE_SENDER = f"sender@{REMOTE}"
DNS_ADDRESS = "127.0.0.49"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    # Its options keep their own help texts (some none): the shared helpers' would change --help.
    p = new_parser(__doc__)
    p.add_argument("--messages", type=int, default=20_000, help="messages per run (20000)")
    p.add_argument("--sessions", type=int, default=50, help="parallel SMTP sessions (50)")
    p.add_argument("--size", type=int, default=4096, help="message size in bytes (4096)")
    p.add_argument("--rounds", type=int, default=3, help="rounds; medians (3, 1 with --quick)")
    p.add_argument("--quick", action="store_true", help="1,000 messages, 1 round")
    p.add_argument("--only", choices=("postfix", "ironpost"), help="one server only")
    p.add_argument("--ironpost-bin", type=Path, default=IRONPOST)
    p.add_argument("--postfix-addr", default="127.0.0.40:2525")
    p.add_argument("--ironpost-addr", default="127.0.0.42:2525")
    p.add_argument("--timeout", type=float, default=900.0, help="per-run limit in seconds")
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--keep", action="store_true")
    p.add_argument("--output", type=Path, default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.messages, args.rounds = min(args.messages, 1000), 1
    parse_addresses(p, args, "postfix_addr", "ironpost_addr", loopback=False)
    return args


# --- configuration and messages ----------------------------------------------------------


def stage_main_cf(stage: str, key_path: Path, dns: str) -> str:
    """The main.cf template of a stage (`MAIN_CF` plus the stage's lines)."""
    text = MAIN_CF + f"dns_nameservers = {dns}\n"  # Postfix ignores it; no lookup leaves loopback
    if stage in ("verify", "both"):
        text = text.replace("mynetworks = 127.0.0.0/8", f"mynetworks = {OWN_SOURCE}/32")
    if stage in ("sign", "both"):
        # Doubled braces: the template goes through str.format (common.render_main_cf).
        text += f"dkim_signing_table = inline:{{{{ bench.test=sel:{key_path} }}}}\n"
    return text


def message(sender: str, size: int, n: int = 0) -> bytes:
    head = (
        f"From: {sender}\r\nTo: {RECIPIENT}\r\nSubject: bench {n}\r\n"
        f"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <bench{n}@{sender.split('@')[1]}>"
        "\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n"
    ).encode()
    line = b"x" * 76 + b"\r\n"
    lines = max(1, (size - len(head)) // len(line))
    return head + line * lines


def prepare_keys(base: Path, size: int) -> tuple[Path, bytes, dict[str, dict[str, list[Any]]]]:
    """Our signing key, the stranger's pre-signed message, and remote.test's DNS records.

    The stranger's message is signed once, here: the client only replays it, so its cost is
    not in the figures (a real sender signs on its own machine).
    """
    import dkim

    from ironpost.auth.dkim_keys import generate_key, txt_record

    own = generate_key(base / "keys" / "bench.test", "bench.test", "sel")
    remote = generate_key(base / "keys" / REMOTE, REMOTE, "sel")
    body = message(REMOTE_SENDER, size, 1)
    signature = dkim.sign(
        body,
        b"sel",
        REMOTE.encode(),
        remote.private_path.read_bytes(),
        include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
    )
    zones: dict[str, dict[str, list[Any]]] = {
        f"mx.{REMOTE}": {"A": [STRANGER]},  # and, through dnsmasq, its PTR
        REMOTE: {"TXT": [f"v=spf1 ip4:{STRANGER} -all"]},
        f"_dmarc.{REMOTE}": {"TXT": ["v=DMARC1; p=reject"]},
        f"sel._domainkey.{REMOTE}": {"TXT": [txt_record(remote)]},
    }
    return own.private_path, signature + body, zones


# --- the load: a small asyncio SMTP client -------------------------------------------------


async def _reply(reader: asyncio.StreamReader, want: str) -> None:
    while True:
        line = await reader.readline()
        if not line:
            raise BenchError(f"connection closed, expected {want}")
        if line[3:4] != b"-":
            break
    if not line.startswith(want.encode()):
        raise BenchError(f"expected {want}, got {line.decode(errors='replace').strip()}")


async def _session(
    host: str, port: int, source: str, envelope: str, data: bytes, left: list[int]
) -> None:
    """One connection, reused until the shared count ``left`` runs out."""
    reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
    try:
        await _reply(reader, "220")
        writer.write(b"EHLO mx.remote.test\r\n" if source == STRANGER else b"EHLO bench\r\n")
        await _reply(reader, "250")
        while left[0] > 0:
            left[0] -= 1
            writer.write(f"MAIL FROM:<{envelope}>\r\n".encode())
            await _reply(reader, "250")
            writer.write(f"RCPT TO:<{RECIPIENT}>\r\n".encode())
            await _reply(reader, "250")
            writer.write(b"DATA\r\n")
            await _reply(reader, "354")
            writer.write(data + b".\r\n")
            await _reply(reader, "250")
        writer.write(b"QUIT\r\n")
        await _reply(reader, "221")
    finally:
        writer.close()


async def _load(host: str, port: int, stage: str, args: argparse.Namespace, foreign: bytes) -> None:
    own = message(SENDER, args.size)
    left = [args.messages]
    sessions = []
    for n in range(args.sessions):
        stranger = stage == "verify" or (stage == "both" and n % 2 == 1)
        source, envelope, data = (
            (STRANGER, REMOTE_SENDER, foreign) if stranger else (OWN_SOURCE, SENDER, own)
        )
        sessions.append(_session(host, port, source, envelope, data, left))
    await asyncio.gather(*sessions)


def run_stage(server: Any, stage: str, args: argparse.Namespace, foreign: bytes) -> dict[str, Any]:
    new_dir = maildir_new(server.root)
    wall0 = time.time()
    t0 = time.perf_counter()
    try:
        asyncio.run(_load(server.host, server.port, stage, args, foreign))
    except (OSError, BenchError) as exc:
        raise BenchError(f"{server.name} {stage}: client: {exc}") from exc
    accept_s = time.perf_counter() - t0
    deadline = t0 + args.timeout
    count = 0
    while time.perf_counter() < deadline:
        count = len(os.listdir(new_dir)) if new_dir.is_dir() else 0
        if count >= args.messages:
            break
        time.sleep(0.25)
    if count != args.messages:
        raise BenchError(f"{server.name} {stage}: {count}/{args.messages} delivered")
    e2e_s = new_dir.stat().st_mtime - wall0
    check_sample(server.name, stage, new_dir)
    return {
        "server": server.name,
        "stage": stage,
        "messages": args.messages,
        "accept_seconds": round(accept_s, 3),
        "e2e_seconds": round(e2e_s, 3),
        "accepted_rate": round(args.messages / accept_s, 1),
        "e2e_rate": round(args.messages / e2e_s, 1),
    }


def check_sample(name: str, stage: str, new_dir: Path) -> None:
    """A delivered message shows the stage's work (for 'both', either half's)."""
    texts = [p.read_bytes()[:8192] for p in sorted(new_dir.iterdir())[:4]]
    signed = any(b"DKIM-Signature:" in t and b"Authentication-Results" not in t for t in texts)
    checked = any(all(v in t for v in (b"spf=pass", b"dkim=pass", b"dmarc=pass")) for t in texts)
    if stage == "sign" and not signed:
        raise BenchError(f"{name} sign: delivered mail is not DKIM-signed")
    if stage == "verify" and not checked:
        raise BenchError(f"{name} verify: no spf/dkim/dmarc=pass in delivered mail")


# --- summary -------------------------------------------------------------------------------


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def med(server: str, stage: str, metric: str) -> float | None:
        return median([r[metric] for r in runs if r["server"] == server and r["stage"] == stage])

    rows: list[dict[str, Any]] = []
    for metric, label in (("accepted_rate", "accepted"), ("e2e_rate", "end to end")):
        postfix = med("postfix", "plain", metric)
        plain = med("ironpost", "plain", metric)
        for stage in STAGES:
            value = med("ironpost", stage, metric)
            rows.append(
                {
                    "mode": STAGE_NAMES[stage],
                    "metric": label,
                    "unit": "msg/s",
                    "postfix": postfix,  # Postfix plain: it has no built-in signer/verifier
                    "ironpost": value,
                    "ratio": ratio(value, postfix),
                }
            )
            if stage == "plain" or value is None or plain is None:
                continue
            rows.append(
                {
                    "mode": STAGE_NAMES[stage],
                    "metric": f"{label} cost over plain",
                    "unit": "us/msg",
                    "postfix": None,
                    "ironpost": 1e6 / value - 1e6 / plain,
                    "ratio": None,
                }
            )
            # Issue #7's S6 target: no more than a 2x slowdown against S1, i.e. >= 0.5.
            rows.append(
                {
                    "mode": STAGE_NAMES[stage],
                    "metric": f"{label} rate / plain rate",
                    "unit": "x",
                    "postfix": None,
                    "ironpost": value / plain,
                    "ratio": value / plain,
                    "target": 0.5,
                }
            )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    def num(v: float | None, row: dict[str, Any]) -> str:
        return "-" if v is None else (f"{v:.2f}" if row["unit"] == "x" else f"{v:.0f}")

    # The unit column flush right, as this table always had it.
    return figures_table(rows, lambda r: f"{r['metric']}, {r['mode']}", num, left=(0,))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # An unusable ironpost is an error here, not a skip: S6 measures ironpost's stages
    # (--only postfix still runs Postfix's plain stage alone).
    if (lineup := preflight("auth_cost.py", args, may_skip=False, suggest_only=False)) is None:
        return 2
    plan = [("postfix", "plain")] if "postfix" in lineup.servers else []
    plan += [("ironpost", s) for s in STAGES] if "ironpost" in lineup.servers else []

    base = work_dir("ironpost-s6-", args.workdir)
    key_path, foreign, zones = prepare_keys(base, args.size)
    dns: DnsServer = start_dns_server(zones, base / "dns", address=DNS_ADDRESS)
    machine = machine_info()
    print(
        f"{machine['cpu_model']}, {machine['nproc']} CPUs, Python {machine['python']}, "
        f"Postfix {machine['postfix']}, ironpost {machine['ironpost']}\n"
        f"load: {args.messages} messages x {args.size} bytes over {args.sessions} sessions "
        f"(asyncio client, connection reuse), {args.rounds} round(s); work dir {base}"
    )
    runs: list[dict[str, Any]] = []
    with Rounds(args, lineup, base, on_exit=dns.stop) as rounds:
        for rnd, order in rounds.order(plan):
            for name, stage in order:
                template = stage_main_cf(stage, key_path, dns.nameserver)
                with fresh_instance(name, args, base, f"{name}-{stage}-", template) as server:
                    server.start()
                    run = run_stage(server, stage, args, foreign)
                runs.append(run)
                print(
                    f"  round {rnd} {name:8} {stage:7} accepted {run['accepted_rate']:7.0f}"
                    f" msg/s  end to end {run['e2e_rate']:7.0f} msg/s",
                    flush=True,
                )
    if rounds.code:
        return rounds.code

    rows = summarise(runs)
    print("\nPostfix runs the plain stage only: it has no built-in DKIM signer or SPF/DMARC")
    print("verifier (an OpenDKIM milter, not installed here, would add its own cost).\n")
    print(table(rows))
    write_result(
        "auth_cost",
        rounds.started,
        machine,
        args.output,
        load=load_fields(args, tool="asyncio SMTP client (bench/auth_cost.py), connection reuse"),
        servers=lineup.servers,
        ironpost_skipped=None,
        summary=rows,
        runs=runs,
        main_cf={s: stage_main_cf(s, Path("KEY"), "DNS") for s in STAGES},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
