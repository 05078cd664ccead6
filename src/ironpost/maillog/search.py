"""Data-subject requests over log files: find, and erase, the lines about one person.

Owns which lines are "about" an address:
1. a line that names it: in clear (any case, as a whole address, not a substring of a
   longer one) or, in pseudonymised logs, as its token under any kept key;
2. a line of one of those lines' messages (same queue id) that names nobody at all
   (``client=NAME[IP]``, ``message-id=``, ``removed``): it is that message's trace.
   A line of the same message naming someone else (another recipient's delivery) stays.
Redacted logs hold no local parts, so nothing in them can be tied to one person.

Invariant of :func:`erase`: each file is replaced atomically (temporary file, fsync,
rename, same mode) while holding the file's lock; the running server's log sink waits
for that lock and then follows the new file, so no line is lost or resurrected.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ironpost.fsutil import write_atomic
from ironpost.maillog.keys import LogKey
from ironpost.maillog.privacy import Pseudonymizer

_ATEXT = r"\w.!#$%&'*+/=?^`{|}~-"
_QUEUE_ID = re.compile(r'\]: ([0-9A-Z][0-9A-Za-z]{4,19}): |"queue_id":"([0-9A-Za-z]+)"')
_MESSAGE_ID = re.compile(r"message-id=<[^<>]*>")
#: Anything that names a person: a token, an address, a login.
_NAMES_SOMEONE = re.compile(r"u-[0-9a-f]{12}|[\w.+-]@[\w\[]|sasl_username=|to=<|from=<[^>]")


@dataclass(frozen=True, slots=True)
class LogMatch:
    path: Path
    number: int  # 1-based
    line: str


def person_pattern(address: str, keys: Sequence[LogKey]) -> re.Pattern[str]:
    """A regex matching ``address`` in clear or as its token under any of ``keys``."""
    address = address.strip().strip("<>")
    if not address:
        raise ValueError("an empty address names nobody")
    alternatives = [rf"(?<![{_ATEXT}]){re.escape(address)}(?![\w-]|\.\w)"]
    for key in keys:
        token = Pseudonymizer(key.secret).user_token(address)
        alternatives.append(rf"{re.escape(token)}(?![0-9a-f])")
    return re.compile("|".join(alternatives), re.IGNORECASE)


def _queue_id(line: str) -> str | None:
    m = _QUEUE_ID.search(line)
    if m is None:
        return None
    qid = m.group(1) or m.group(2)
    return None if qid == "NOQUEUE" else qid


def _lines(path: Path) -> Iterator[tuple[int, bytes, str]]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    yield from _split(data)


def _split(data: bytes) -> Iterator[tuple[int, bytes, str]]:
    for number, raw in enumerate(data.splitlines(keepends=True), 1):
        yield number, raw, raw.decode("utf-8", "surrogateescape").rstrip("\n")


def _queue_ids(files: Iterable[Path], pattern: re.Pattern[str]) -> set[str]:
    ids: set[str] = set()
    for path in files:
        for _, _, line in _lines(path):
            if pattern.search(line):
                qid = _queue_id(line)
                if qid is not None:
                    ids.add(qid)
    return ids


def _about(line: str, pattern: re.Pattern[str], queue_ids: set[str]) -> bool:
    if pattern.search(line):
        return True
    qid = _queue_id(line)
    if qid is None or qid not in queue_ids:
        return False
    # A message-id is the message's, not a person's, even when it looks like an address.
    return not _NAMES_SOMEONE.search(_MESSAGE_ID.sub("", line))


def find(files: Sequence[Path], address: str, keys: Sequence[LogKey]) -> list[LogMatch]:
    """Every line about ``address`` in ``files``, in file order."""
    pattern = person_pattern(address, keys)
    queue_ids = _queue_ids(files, pattern)
    return [
        LogMatch(path, number, line)
        for path in files
        for number, _, line in _lines(path)
        if _about(line, pattern, queue_ids)
    ]


def erase(files: Sequence[Path], address: str, keys: Sequence[LogKey]) -> dict[Path, int]:
    """Rewrite each of ``files`` without the lines about ``address``; lines removed per file."""
    pattern = person_pattern(address, keys)
    queue_ids = _queue_ids(files, pattern)
    removed: dict[Path, int] = {}
    for path in files:
        count = _rewrite(path, pattern, queue_ids)
        if count:
            removed[path] = count
    return removed


def _rewrite(path: Path, pattern: re.Pattern[str], queue_ids: set[str]) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return 0
    try:
        # Blocking: the server's sink only ever tries this lock, so it cannot wait on us.
        fcntl.flock(fd, fcntl.LOCK_EX)
        st = os.fstat(fd)
        chunks: list[bytes] = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        kept: list[bytes] = []
        count = 0
        for _, raw, line in _split(b"".join(chunks)):
            if _about(line, pattern, queue_ids):
                count += 1
            else:
                kept.append(raw)
        if count:
            _replace(path, b"".join(kept), st.st_mode & 0o777, st.st_uid, st.st_gid)
        return count
    finally:
        os.close(fd)  # releases the lock, after the rename


def _replace(path: Path, data: bytes, mode: int, uid: int, gid: int) -> None:
    write_atomic(path, data, mode=mode, owner=(uid, gid))
