"""`newsmon crawl` and `newsmon status`: one crawl round now, and the health of every source."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
