"""`newsmon serve`: the HTTP API and web page."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
