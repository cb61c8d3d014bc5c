"""`python -m pgconductor` runs the CLI."""

from pgconductor.cli import app

app(prog_name="pgconductor")
