"""Whose turn it is to write: the crawl processes of a round take turns storing items.

Their write transactions are serialised anyway (``storage.db.lock_writes``: SQLite's BEGIN
IMMEDIATE); waiting for that lock leaves a CPU idle while the other process writes. A process
first asks for its turn without waiting (an advisory file lock next to the SQLite file); when
it is not its turn it goes on parsing and asks again shortly. PostgreSQL has no such file:
there the transaction's advisory lock simply waits."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from sqlalchemy.engine import make_url


class WriteTurn:
    def __init__(self, database_url: str) -> None:
        url = make_url(database_url)
        database = url.database or ""
        self.path: Path | None = None
        if url.get_backend_name() == "sqlite" and database and database != ":memory:" \
                and not database.startswith("file:"):
            self.path = Path(database).expanduser().with_name(Path(database).name + "-turn")
        self.fd: int | None = None
        self.held = False

    def try_take(self) -> bool:
        """True when it is our turn now (or turns are not kept); never waits."""
        if self.path is None:
            return True
        try:
            if self.fd is None:
                self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError:  # an unwritable directory: the database's own lock still serialises writes
            self.path = None
            return True
        self.held = True
        return True

    def give_back(self) -> None:
        if self.held and self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        self.held = False

    def close(self) -> None:
        self.give_back()
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
