"""Shared fixtures live in tests/plugins/, one module per area."""

from pathlib import Path

import pytest

pytest_plugins = [
    "tests.plugins.db",
    "tests.plugins.sites",
    "tests.plugins.receivers",
]


@pytest.fixture(autouse=True)
def _private_cache_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The crawl's default cache directory (storage.cache_dir), for configs built from the
    environment and the crawl processes they start: one directory of the test session, never
    the user's ~/.cache."""
    base = tmp_path_factory.getbasetemp() / "xdg-cache"
    monkeypatch.delenv("CACHE_DIRECTORY", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(base))
    return base / "newsmon"
