"""Printing for the CLI: rich tables for people, JSON for scripts, errors on stderr.

Every command that prints a table takes `--json`; `emit()` is the one switch between the two, so the JSON a
script reads always holds at least what the table shows.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click
from rich.console import Console
from rich.table import Table

stdout = Console(highlight=False, soft_wrap=False)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)  # an error stays one line

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of a table.")


def emit(data: Any, render: Callable[[Any], None], as_json: bool) -> None:
    """Print `data` as JSON (`as_json`) or through `render`, which draws it for a person."""
    if as_json:
        json.dump(data, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        render(data)


def table(title: str | None, columns: list[str], rows: list[list[str]], header: bool = True) -> Table:
    """A plain rich table: the one look every listing in isola shares."""
    t = Table(title=title, title_justify="left", show_edge=False, header_style="bold", show_header=header)
    for col in columns:
        t.add_column(col, overflow="fold")
    for row in rows:
        t.add_row(*row)
    return t
