"""`python -m scheduler` is `newsmon`."""

from scheduler.cli import cli

cli()
