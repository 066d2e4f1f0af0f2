"""Fetching and parsing: source definitions, spiders, parsing, matching, identity and item pipelines."""
