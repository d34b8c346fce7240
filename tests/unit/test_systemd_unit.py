"""The shipped systemd unit (packaging/systemd/standby.service) starts what the CLI has, with a file limit
under which the public listeners hold a 1,008-connection flood and the peer listener keeps its reserve."""

from __future__ import annotations

import configparser
import shlex
import subprocess
import sys
from pathlib import Path

from standby.edge.limits import connection_cap, peer_reserve

UNIT = Path(__file__).resolve().parents[2] / "packaging" / "systemd" / "standby.service"
FLOOD = 1008  # the half-open connections that took a daemon at systemd's default limit (1024) down


def _service() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment, method-assign]  # systemd keys are case-sensitive
    parser.read_string(UNIT.read_text(encoding="utf-8"))
    return parser["Service"]


def test_the_file_limit_leaves_room_for_a_flood_and_the_peer_reserve() -> None:
    limit = int(_service()["LimitNOFILE"])
    cap = connection_cap(limit)
    assert cap - peer_reserve(cap) > FLOOD  # the public share alone outlasts the flood that took 1024 down
    assert connection_cap(1024) - peer_reserve(connection_cap(1024)) < FLOOD  # why the default is not enough


def test_files_are_private_and_only_the_daemon_is_stopped() -> None:
    service = _service()
    assert service["UMask"] == "0077"
    assert service["KillMode"] == "process"  # QEMU outlives a daemon restart


def test_exec_start_is_a_command_the_cli_has(tmp_path: Path) -> None:
    program, verb, *options = shlex.split(_service()["ExecStart"])
    assert Path(program).name == "standby" and verb == "serve"
    config = tmp_path / "standby.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n', encoding="utf-8")
    options = [str(config) if option.endswith(".toml") else option for option in options]
    shown = subprocess.run([sys.executable, "-m", "standby", verb, *options, "--show-config"],
                           capture_output=True, text=True, timeout=60, check=False)
    assert shown.returncode == 0, shown.stderr
    assert "[listeners.limits]" in shown.stdout
