"""The ``standby`` command.

Exit codes: 0 success, 1 the operation failed, 2 usage or configuration error, 3 the daemon cannot be
reached. Errors are one line on stderr, never a traceback. ``LANG=de_DE.UTF-8`` switches messages to German.

Adding a sub-command group is one line in ``_register_subapps``: write ``standby/cli/<name>.py`` with
``app = typer.Typer(...)`` and ``NAME = "<verb>"``, take ``as_json: JsonOption = False`` on each verb
(``cli.output``), talk to the daemon with ``cli.state.client(ctx)`` and raise ``cli.client.CliError``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from standby import __version__, i18n
from standby.cli.client import EXIT_FAILED, EXIT_USAGE, CliError, target_from_options
from standby.cli.output import JsonOption, emit, print_error, status_view
from standby.cli.state import CliState, cli_state, client, wants_json

app = typer.Typer(
    name="standby",
    help="VM replication and disaster-recovery failover for Linux/KVM.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"standby {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    *,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    data_dir: Annotated[Path | None, typer.Option(
        "--data-dir",
        help="Data directory of the local daemon [env STANDBY_DATA_DIR; default /var/lib/standby].",
    )] = None,
    host: Annotated[str | None, typer.Option("--host", help="Talk to a daemon at this URL "
                                             "(e.g. https://host:5989) instead of the local socket "
                                             "[env STANDBY_HOST].")] = None,
    user: Annotated[str | None, typer.Option("--user", help="User for --host; the password comes from "
                                             "STANDBY_PASSWORD [env STANDBY_USER].")] = None,
    ca_file: Annotated[Path | None, typer.Option("--ca-file", help="CA certificate to trust for --host "
                                                 "[env STANDBY_CA_FILE].")] = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="Do not verify the daemon's certificate.")]
    = False,
    as_json: JsonOption = False,
) -> None:
    """standby: replicate VMs, fail them over, fail them back."""
    target = target_from_options(data_dir=data_dir, host=host, user=user, ca_file=ca_file, insecure=insecure,
                                 language=i18n.language_from_env())
    ctx.obj = CliState(target=target, json=as_json)


@app.command()
def status(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Daemon version, host, uptime and counts."""
    with client(ctx) as daemon:
        data = daemon.get("/api/v1/status")
    emit(wants_json(ctx, as_json), data, lambda d: status_view(d, cli_state(ctx).language))


@app.command()
def serve(
    ctx: typer.Context,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Data directory (state, socket, "
                                                  "certificates).")] = None,
    config_file: Annotated[Path | None, typer.Option("--config", help="TOML configuration file "
                                                     "[default <data-dir>/standby.toml if present].")] = None,
    show_config: Annotated[bool, typer.Option("--show-config", help="Print the effective configuration "
                                              "as TOML and exit.")] = False,
) -> None:
    """Run the daemon in the foreground until SIGTERM or SIGINT."""
    from standby.daemon.config import load_config, to_toml
    from standby.daemon.toml_table import ConfigError

    chosen = data_dir or cli_state(ctx).target.data_dir
    try:
        config = load_config(chosen, config_file)
    except ConfigError as exc:
        raise CliError(f"configuration error: {exc}", EXIT_USAGE) from None
    if show_config:
        sys.stdout.write(to_toml(config))
        return
    from standby.daemon.logs import setup_logging
    from standby.daemon.serve import run

    setup_logging(config.log.level, config.log.format, access_log=config.log.access_log)
    code = run(config)
    if code:
        raise typer.Exit(code)


def _register_subapps() -> None:
    from standby.cli import (
        certs,
        failover,
        group,
        guest,
        jobs,
        redundancy,
        replica_server,
        replication,
        users,
        vm,
    )

    for module in (jobs, users, vm, guest, certs, failover, replication, replica_server, group, redundancy):
        app.add_typer(module.app, name=module.NAME)


_register_subapps()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app and turn every failure into one line and an exit code."""
    from standby.domain.errors import StandbyError

    try:
        app(args=argv, prog_name="standby")
    except CliError as exc:
        print_error(exc.message)
        sys.exit(exc.exit_code)
    except StandbyError as exc:
        args = {key: str(value) for key, value in exc.args_map.items()}
        print_error(i18n.error_text(exc.message_id, i18n.language_from_env(), str(exc), code=int(exc.code),
                                    **args))
        sys.exit(EXIT_FAILED)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # the promise is: never a traceback
        print_error(f"internal error: {type(exc).__name__}: {exc}")
        sys.exit(EXIT_FAILED)


if __name__ == "__main__":
    main()
