"""Fixture HTTP server serving the fixture sites (owned by the crawler tests)."""
