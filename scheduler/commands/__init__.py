"""The `newsmon` commands, one module per area; each module lists its commands in COMMANDS."""

from __future__ import annotations

import click

from scheduler.commands import backfill, crawling, daemon, doctor, history, matching, serve, setup, sources

REGISTRY: list[click.Command] = [
    *setup.COMMANDS,
    *daemon.COMMANDS,
    *crawling.COMMANDS,
    *history.COMMANDS,
    *matching.COMMANDS,
    *serve.COMMANDS,
    *doctor.COMMANDS,
    *sources.COMMANDS,
    *backfill.COMMANDS,
]
