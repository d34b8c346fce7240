"""What the root command resolved (where the daemon is, language, ``--json``), shared by every verb."""

from __future__ import annotations

from dataclasses import dataclass

import typer

from standby.cli.client import DaemonClient, Target


@dataclass(frozen=True)
class CliState:
    """Stored in ``ctx.obj`` by the root callback."""

    target: Target
    json: bool = False

    @property
    def language(self) -> str:
        """``en`` or ``de``, from LANG / LC_ALL / LC_MESSAGES."""
        return self.target.language


def cli_state(ctx: typer.Context) -> CliState:
    """The root state of this invocation (sub-apps call this too)."""
    root = ctx.find_root()
    state = root.obj
    if not isinstance(state, CliState):
        raise RuntimeError("the standby root callback did not run")
    return state


def client(ctx: typer.Context, *, timeout: float = 30.0) -> DaemonClient:
    """A client for the daemon this invocation talks to."""
    return DaemonClient(cli_state(ctx).target, timeout=timeout)


def wants_json(ctx: typer.Context, flag: bool) -> bool:
    """``--json`` given on the verb or on the root command."""
    return flag or cli_state(ctx).json
