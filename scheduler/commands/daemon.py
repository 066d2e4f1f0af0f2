"""`newsmon run`: the daemon."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
