"""``ironpost privacy find|erase`` against a real run's queue and maillog, server running."""

from __future__ import annotations

import json
import time

from mta_harness import Mta
from test_pflogsumm import _send, _wait, run_session

from ironpost.maillog.keys import KEY_FILE, load_keys
from ironpost.maillog.privacy import Pseudonymizer


def _find(mta: Mta, address: str) -> dict:  # type: ignore[type-arg]
    result = mta.cli("privacy", "find", address, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def _erase_and_check(mta: Mta, needle: str) -> None:
    found = _find(mta, "alice@example.test")
    # The deferred message (to dave@slow.test) is still queued; three messages' lines.
    assert [m["recipients"] for m in found["queue"]] == [["dave@slow.test"]]
    texts = [x["text"] for x in found["log"]]
    assert sum(f"from=<{needle}" in t for t in texts) == 3
    assert any(": client=" in t for t in texts) and any(": removed" in t for t in texts)
    assert not any("bob@" in t or "nobody@hard.test" in t for t in texts)

    erased = mta.cli("privacy", "erase", "alice@example.test")
    assert erased.returncode == 0, erased.stderr
    assert "erased 1 queue entry and " in erased.stdout
    assert _find(mta, "alice@example.test") == {
        "address": "alice@example.test",
        "queue": [],
        "log": [],
    }
    log = mta.maillog
    assert needle not in log
    assert log.count("status=bounced") == 1  # bob's bounced mail is not alice's
    # The running server follows the rewritten file: its next lines are not lost.
    _send(mta, "bob@example.test", "bob@example.test")
    assert _wait(lambda: mta.maillog.count("status=sent") >= 4)


def test_find_and_erase_in_a_clear_log(mta_factory, smtp_sink) -> None:  # type: ignore[no-untyped-def]
    mta = run_session(mta_factory, smtp_sink, "off")
    _erase_and_check(mta, "alice@example.test")


def test_find_and_erase_in_a_pseudonymised_log(mta_factory, smtp_sink) -> None:  # type: ignore[no-untyped-def]
    mta = run_session(mta_factory, smtp_sink, "pseudonymize")
    [key] = load_keys(mta.data / KEY_FILE)
    token = Pseudonymizer(key.secret).address("alice@example.test")
    assert token in mta.maillog and "alice@" not in mta.maillog
    _erase_and_check(mta, token)
    time.sleep(0.2)
    assert token not in mta.maillog
