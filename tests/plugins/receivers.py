"""Alert receivers for the daemon tests (owned by the alert tests)."""
