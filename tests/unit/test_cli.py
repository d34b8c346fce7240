"""The ``standby`` command without a daemon: exit codes, one-line errors, German, --version, config checks.

Each case runs the real console entry point in a subprocess, so exit codes and stderr are exactly what a
user sees.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from standby.daemon.passwords import verify_hash


def run_cli(*args: str, env: dict[str, str] | None = None, stdin: str | None = None
            ) -> subprocess.CompletedProcess[str]:
    """Run ``python -m standby ARGS`` with a clean language environment."""
    base = {k: v for k, v in os.environ.items()
            if k not in ("LANG", "LC_ALL", "LC_MESSAGES", "LANGUAGE") and not k.startswith("STANDBY_")}
    base.update(env or {})
    return subprocess.run([sys.executable, "-m", "standby", *args], capture_output=True, text=True,
                          env=base, input=stdin, timeout=60, check=False)


@pytest.fixture
def empty_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="sbc-", dir="/tmp") as folder:
        yield Path(folder)


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == "standby 0.1.0"


def test_help_lists_the_verbs() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for verb in ("serve", "status", "jobs", "users"):
        assert verb in result.stdout


def test_daemon_down_exits_3_with_one_readable_line(empty_dir: Path) -> None:
    result = run_cli("--data-dir", str(empty_dir), "status")
    assert result.returncode == 3
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("standby: cannot reach the standby daemon at")
    assert str(empty_dir / "control.sock") in lines[0]
    assert f"standby serve --data-dir {empty_dir}" in lines[0]
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_daemon_down_in_german(empty_dir: Path) -> None:
    result = run_cli("--data-dir", str(empty_dir), "jobs", "list", env={"LANG": "de_DE.UTF-8"})
    assert result.returncode == 3
    line = result.stderr.strip()
    assert "ist nicht erreichbar" in line
    assert "Socket nicht vorhanden" in line
    assert "starten Sie ihn mit: standby serve" in line


def test_data_dir_from_the_environment(empty_dir: Path) -> None:
    result = run_cli("jobs", "show", "X", "--json", env={"STANDBY_DATA_DIR": str(empty_dir)})
    assert result.returncode == 3
    assert str(empty_dir / "control.sock") in result.stderr


def test_a_socket_nobody_listens_on_is_refused(empty_dir: Path) -> None:
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(empty_dir / "control.sock"))  # bound, never listening
    try:
        result = run_cli("--data-dir", str(empty_dir), "status")
    finally:
        sock.close()
    assert result.returncode == 3
    assert "connection refused" in result.stderr


def test_unreachable_remote_host_exits_3(empty_dir: Path) -> None:
    result = run_cli("--host", "https://127.0.0.1:1", "--user", "u", "status",
                     env={"STANDBY_PASSWORD": "p"})
    assert result.returncode == 3
    assert "cannot reach the standby daemon at https://127.0.0.1:1" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("jobs", "show"),  # missing argument
        ("jobs", "wait", "X", "--timeout", "-1"),
        ("no-such-verb",),
        ("status", "--bogus"),
    ],
)
def test_usage_errors_exit_2(args: tuple[str, ...], empty_dir: Path) -> None:
    result = run_cli("--data-dir", str(empty_dir), *args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr


def test_host_must_be_a_url() -> None:
    result = run_cli("--host", "example.org", "status")
    assert result.returncode == 2
    expected = "standby: --host must be a URL such as https://host:5989, not 'example.org'"
    assert result.stderr.strip() == expected


def test_show_config_prints_loadable_toml(empty_dir: Path) -> None:
    result = run_cli("serve", "--data-dir", str(empty_dir / "d"), "--show-config")
    assert result.returncode == 0, result.stderr
    config = tomllib.loads(result.stdout)
    assert config["data_dir"] == str(empty_dir / "d")
    assert config["listeners"]["control"]["path"] == str(empty_dir / "d" / "control.sock")
    assert config["listeners"]["https"]["port"] == 5989
    assert config["listeners"]["http"]["address"] == "127.0.0.1"
    assert not (empty_dir / "d").exists()  # --show-config changes nothing


def test_bad_config_is_one_line_and_exit_2(empty_dir: Path) -> None:
    bad = empty_dir / "bad.toml"
    bad.write_text('[listeners.http]\naddress = "0.0.0.0"\n')
    result = run_cli("serve", "--data-dir", str(empty_dir), "--config", str(bad))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"standby: configuration error: {bad}: listeners.http.address")
    assert "loopback" in lines[0]


def test_missing_config_file(empty_dir: Path) -> None:
    result = run_cli("serve", "--data-dir", str(empty_dir), "--config", str(empty_dir / "none.toml"))
    assert result.returncode == 2
    assert "no such configuration file" in result.stderr


def test_a_busy_port_is_one_line_and_exit_1(empty_dir: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        config = empty_dir / "c.toml"
        config.write_text(f"[listeners.http]\nport = {port}\n[listeners.https]\nenabled = false\n")
        result = run_cli("serve", "--data-dir", str(empty_dir / "d"), "--config", str(config))
    assert result.returncode == 1
    assert f"standby: cannot listen on 127.0.0.1:{port}: address already in use" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (empty_dir / "d" / "standby.pid").exists()
    assert not (empty_dir / "d" / "control.sock").exists()


def test_hash_password_from_stdin() -> None:
    result = run_cli("users", "hash-password", "--stdin", stdin="correct horse\n")
    assert result.returncode == 0, result.stderr
    encoded = result.stdout.strip()
    assert encoded.startswith("scrypt$")
    assert verify_hash("correct horse", encoded)
    assert not verify_hash("correct horse\n", encoded)


def test_hash_password_prints_a_toml_line() -> None:
    result = run_cli("users", "hash-password", "--stdin", "--user", "admin", stdin="pw\n")
    assert result.returncode == 0
    parsed = tomllib.loads(result.stdout)
    assert verify_hash("pw", parsed["admin"])


def test_empty_password_is_refused() -> None:
    result = run_cli("users", "hash-password", "--stdin", stdin="\n")
    assert result.returncode == 2
    assert result.stderr.strip() == "standby: the password must not be empty"


def test_unusable_data_dir_is_one_line_and_exit_1() -> None:
    result = run_cli("serve", "--data-dir", "/proc/standby-test")
    assert result.returncode == 1
    assert result.stderr.startswith("standby: cannot use the data directory /proc/standby-test: ")
    assert len(result.stderr.strip().splitlines()) == 1
