"""Storage errors.

Our hierarchy:

* StorageError
  + DatabaseError     the database cannot be opened, migrated or reached
  + ImportLineError   a line of an import file is not a valid exported item
  + DaemonLockedError another daemon already runs on this SQLite database (storage.leases)
"""

from __future__ import annotations


class StorageError(Exception):
    """Base of every error the storage package raises on purpose."""


class DatabaseError(StorageError):
    """Raised when the database cannot be opened, migrated or reached."""


class ImportLineError(StorageError):
    """Raised for a line of an import file that is not a valid exported item."""
