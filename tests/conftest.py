"""Shared fixtures live in tests/plugins/, one module per area."""

pytest_plugins = [
    "tests.plugins.db",
    "tests.plugins.sites",
    "tests.plugins.receivers",
]
