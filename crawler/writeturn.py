"""Whose turn it is to write: the crawl processes of a round take turns storing items.

Their write transactions are serialised anyway (``storage.db.lock_writes``: SQLite's BEGIN
IMMEDIATE); waiting for that lock leaves a CPU idle while the other process writes. A process
first asks for its turn without waiting (an advisory file lock next to the SQLite file); when
it is not its turn it goes on parsing and asks again shortly. PostgreSQL has no such file:
there the transaction's advisory lock simply waits. Every crawl write (items, poll records) of
a process with turns takes one first, so SQLite's busy timeout only ever waits for the daemon's
own short transactions."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.engine import make_url


class WriteTurn:
    def __init__(self, database_url: str = "") -> None:
        self.path: Path | None = None  # None: no turns kept (no URL, PostgreSQL, in-memory)
        self.fd: int | None = None
        self.depth = 0  # how many nested takes hold the turn
        url = make_url(database_url) if database_url else None
        database = (url.database if url is not None else None) or ""
        if url is not None and url.get_backend_name() == "sqlite" and database \
                and database != ":memory:" and not database.startswith("file:"):
            self.path = Path(database).expanduser().with_name(Path(database).name + "-turn")

    def try_take(self) -> bool:
        """True when it is our turn now (or turns are not kept); never waits."""
        return self._take(blocking=False)

    def take(self) -> None:
        """Wait for our turn (no time limit: the other process's transaction ends)."""
        self._take(blocking=True)

    def _take(self, blocking: bool) -> bool:
        if self.path is None:
            return True
        if self.depth:  # already ours (a nested store, e.g. polls requeued inside a flush)
            self.depth += 1
            return True
        try:
            if self.fd is None:
                self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(self.fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError:  # an unwritable directory: the database's own lock still serialises writes
            self.path = None
            return True
        self.depth = 1
        return True

    def give_back(self) -> None:
        if self.depth > 1:
            self.depth -= 1
            return
        if self.depth == 1 and self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        self.depth = 0

    @contextmanager
    def held(self) -> Iterator[None]:
        self.take()
        try:
            yield
        finally:
            self.give_back()

    def close(self) -> None:
        self.depth = min(self.depth, 1)
        self.give_back()
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
