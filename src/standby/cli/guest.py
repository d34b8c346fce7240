"""``standby guest build|verify``: the test guest, built and checked on this machine (no daemon needed)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from standby.cli.client import CliError
from standby.cli.output import JsonOption, console, err_console
from standby.cli.state import wants_json
from standby.domain.errors import StandbyError

NAME = "guest"
app = typer.Typer(
    help="The test guest: kernel + busybox initramfs, workload writer, verifier.", no_args_is_help=True
)


@app.command("build")
def build(
    ctx: typer.Context,
    *,
    cache: Annotated[
        Path | None,
        typer.Option(
            "--cache", help="Cache directory [env STANDBY_GUEST_CACHE; default /var/cache/standby/guest]."
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even when the cache is current.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Build the test guest from Debian packages (cached; rebuilt only when an input changes)."""
    from standby.guest.build import build_guest

    quiet = wants_json(ctx, as_json)
    try:
        image = build_guest(
            cache, force=force, log=None if quiet else lambda m: err_console.print(m, markup=False)
        )
    except StandbyError as exc:
        raise CliError(str(exc)) from None
    data = {
        "kernel": str(image.kernel),
        "initrd": str(image.initrd),
        "kernel_version": image.kernel_version,
        "key": image.key,
        "append": image.append(),
    }
    if quiet:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        console.print(
            f"kernel  {image.kernel}\ninitrd  {image.initrd}\nappend  {image.append()} "
            "standby.writer=raw:/dev/vda:rate=100",
            markup=False,
        )


@app.command("verify")
def verify(
    ctx: typer.Context,
    image: Annotated[Path, typer.Argument(help="Disk image (qcow2, a chain's top, or raw)")],
    *,
    mode: Annotated[str, typer.Option(help="raw (records on the device) or ext4 (/records.bin).")] = "raw",
    writer: Annotated[int | None, typer.Option(help="Writer id (default: the first record's).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Check the writer's records on a disk image; exit 1 unless they form an exact prefix."""
    from standby.guest.verify import verify_image

    try:
        report = verify_image(image, mode=mode, writer=writer)
    except StandbyError as exc:
        raise CliError(str(exc)) from None
    if wants_json(ctx, as_json):
        sys.stdout.write(report.to_json() + "\n")
    else:
        verdict = "exact prefix" if report.exact_prefix else "NOT an exact prefix"
        last = "-" if report.last_seq is None else str(report.last_seq)
        console.print(
            f"{image}: {report.records} records (writer {report.writer}, last seq {last}), {verdict}; "
            f"{report.corrupt} torn/corrupt, {report.stray} stray",
            markup=False,
        )
        for problem in report.problems:
            console.print(
                f"  slot {problem.position}: {problem.status} {problem.detail}".rstrip(), markup=False
            )
    if not report.exact_prefix:
        raise CliError(f"{image}: the records are not an exact prefix")
