"""``standby users hash-password``: make a password hash for the ``[users]`` table of the configuration."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from standby.cli.client import EXIT_USAGE, CliError
from standby.daemon.passwords import hash_password

NAME = "users"
app = typer.Typer(help="Users of the daemon's HTTPS and CIM-XML listeners.", no_args_is_help=True)


@app.command("hash-password")
def hash_password_cmd(
    user: Annotated[str | None, typer.Option("--user", help="Print a ready TOML line 'USER = \"hash\"'.")]
    = None,
    stdin: Annotated[bool, typer.Option("--stdin", help="Read the password from the first line of stdin.")]
    = False,
) -> None:
    """Print a scrypt hash of a password (asked twice, not echoed, unless --stdin)."""
    if stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    if not password:
        raise CliError("the password must not be empty", EXIT_USAGE)
    encoded = hash_password(password)
    typer.echo(f'{user} = "{encoded}"' if user else encoded)
