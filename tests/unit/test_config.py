"""Daemon configuration: defaults, validation messages, TOML round trip, password hashes."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from standby.daemon.config import ConfigError, load_config, parse_config, to_toml
from standby.daemon.passwords import PasswordVerifier, hash_password, parse_hash, verify_hash

# One precomputed hash keeps the tests fast (scrypt is slow on purpose).
SECRET_HASH = hash_password("s3cret", salt=b"0123456789abcdef")


def test_defaults_resolve_inside_the_data_dir(tmp_path: Path) -> None:
    config = parse_config({}, data_dir=tmp_path)
    assert config.data_dir == tmp_path
    assert config.listeners.control.path == tmp_path / "control.sock"
    assert config.listeners.control.enabled
    assert config.listeners.https.port == 5989
    assert config.listeners.https.address == "0.0.0.0"
    assert config.listeners.https.cert_file == tmp_path / "tls" / "host.crt"
    assert config.listeners.https.key_file == tmp_path / "tls" / "host.key"
    assert config.listeners.http.port == 5988
    assert config.listeners.http.address == "127.0.0.1"
    assert config.hypervisor.accel == "auto"
    assert config.hypervisor.qemu_binary == "qemu-system-x86_64"
    assert config.log.level == "info"
    assert config.log.format == "keyvalue"
    assert config.jobs.shutdown_grace_seconds == 10.0
    assert config.replication.connection_timeout_seconds == 30.0
    assert config.replication.ca_file is None
    assert config.users == ()
    assert config.host.name
    assert config.host.fqdn
    assert config.database_path == tmp_path / "standby.db"
    assert config.lock_path == tmp_path / "standby.pid"


def test_no_data_dir_anywhere_means_var_lib_standby() -> None:
    assert parse_config({}).data_dir == Path("/var/lib/standby")


def test_command_line_data_dir_wins_over_the_file(tmp_path: Path) -> None:
    config = parse_config({"data_dir": "/elsewhere"}, data_dir=tmp_path)
    assert config.data_dir == tmp_path
    assert parse_config({"data_dir": str(tmp_path / "x")}).data_dir == tmp_path / "x"


def test_full_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "standby.toml"
    path.write_text(f"""
[host]
name = "hv1"
fqdn = "hv1.example.org"
[listeners.control]
path = "{tmp_path}/ctl.sock"
[listeners.https]
address = "::"
port = 15989
[listeners.http]
enabled = false
address = "::1"
[users]
admin = "{SECRET_HASH}"
[hypervisor]
accel = "tcg"
[log]
level = "debug"
format = "json"
[jobs]
shutdown_grace_seconds = 0
[replication]
connection_timeout_seconds = 2.5
""")
    config = load_config(tmp_path / "data", path)
    assert config.source == path
    assert config.host.name == "hv1"
    assert config.host.fqdn == "hv1.example.org"
    assert config.listeners.control.path == tmp_path / "ctl.sock"
    assert config.listeners.https.address == "::"
    assert config.listeners.https.port == 15989
    assert not config.listeners.http.enabled
    assert config.users_map == {"admin": SECRET_HASH}
    assert config.hypervisor.accel == "tcg"
    assert config.log.format == "json"
    assert config.jobs.shutdown_grace_seconds == 0.0
    assert config.replication.connection_timeout_seconds == 2.5


def test_standby_toml_in_the_data_dir_is_found(tmp_path: Path) -> None:
    (tmp_path / "standby.toml").write_text('[hypervisor]\naccel = "kvm"\n')
    config = load_config(tmp_path, None)
    assert config.hypervisor.accel == "kvm"
    assert config.source == tmp_path / "standby.toml"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"listeners": {"http": {"address": "0.0.0.0"}}}, "plain HTTP may only listen on loopback"),
        ({"listeners": {"http": {"address": "192.168.1.5"}}}, "not '192.168.1.5'"),
        ({"listeners": {"https": {"port": 70000}}}, "listeners.https.port: expected a port number 1-65535"),
        ({"listeners": {"https": {"port": "5989"}}}, "listeners.https.port: expected a port number"),
        ({"listeners": {"https": {"port": 5988}}}, "are both 5988"),
        ({"listeners": {"https": {"address": "example.org"}}}, "not an IP address"),
        ({"listeners": {"https": {"prot": 1}}}, "unknown key 'listeners.https.prot'"),
        ({"hypervisor": {"accel": "kvm:tcg"}}, "hypervisor.accel: expected one of auto, kvm, tcg"),
        ({"log": {"level": "loud"}}, "log.level: expected one of"),
        ({"log": {"format": "xml"}}, "log.format"),
        ({"jobs": {"shutdown_grace_seconds": -1}}, "must be at least 0"),
        ({"jobs": {"purge_interval_seconds": True}}, "expected a number"),
        ({"replication": {"connection_timeout_seconds": 0}}, "must be at least 0.1"),
        ({"users": {"admin": "plaintext"}}, "users.admin: expected 'scrypt$n$r$p$salt$key'"),
        ({"users": {"admin": 5}}, "users.admin: expected a string"),
        ({"listeners": {"control": {"enabled": "yes"}}}, "expected true or false"),
        ({"host": "hv1"}, "host: expected a table"),
        ({"colour": "blue"}, "unknown key 'colour'"),
    ],
)
def test_bad_values_get_one_clear_message(raw: dict[str, object], expected: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, data_dir=tmp_path)
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_loopback_http_addresses_are_accepted(tmp_path: Path) -> None:
    for address in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        config = parse_config({"listeners": {"http": {"address": address}}}, data_dir=tmp_path)
        assert config.listeners.http.address == address
    # A disabled HTTP listener may name any address.
    parse_config({"listeners": {"http": {"enabled": False, "address": "0.0.0.0"}}}, data_dir=tmp_path)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r"nope\.toml: no such configuration file"):
        load_config(tmp_path, missing)
    broken = tmp_path / "broken.toml"
    broken.write_text("[listeners\n")
    with pytest.raises(ConfigError, match=r"broken\.toml: not valid TOML"):
        load_config(tmp_path, broken)
    wrong = tmp_path / "wrong.toml"
    wrong.write_text("[listeners.https]\nport = 0\n")
    with pytest.raises(ConfigError, match=r"wrong\.toml: listeners\.https\.port"):
        load_config(tmp_path, wrong)


def test_to_toml_round_trips(tmp_path: Path) -> None:
    raw = {
        "host": {"name": "hv 1", "fqdn": 'quote"d.example'},
        "users": {"admin": SECRET_HASH, "with.dot": SECRET_HASH},
        "log": {"format": "json"},
        "replication": {"ca_file": str(tmp_path / "ca.pem")},
    }
    config = parse_config(raw, data_dir=tmp_path)
    text = to_toml(config)
    again = parse_config(tomllib.loads(text))
    assert again == config
    assert f'data_dir = "{tmp_path}"' in text
    assert "[listeners.https]" in text


def test_to_toml_marks_unset_optional_values(tmp_path: Path) -> None:
    text = to_toml(parse_config({}, data_dir=tmp_path))
    assert "# ca_file is not set" in text
    assert parse_config(tomllib.loads(text)).replication.ca_file is None


def test_password_hash_round_trip() -> None:
    n, r, p, salt, key = parse_hash(SECRET_HASH)
    assert (n, r, p) == (2**14, 8, 1)
    assert salt == b"0123456789abcdef"
    assert len(key) == 32
    assert verify_hash("s3cret", SECRET_HASH)
    assert not verify_hash("S3cret", SECRET_HASH)
    assert not verify_hash("s3cret", "scrypt$garbage")
    assert hash_password("x") != hash_password("x")  # fresh salt each time


def test_verifier_checks_users_and_remembers_successes() -> None:
    verifier = PasswordVerifier({"admin": SECRET_HASH})
    assert verifier.has_users
    assert not verifier.known("admin", "s3cret")
    assert verifier.verify("admin", "s3cret")
    assert verifier.known("admin", "s3cret")
    assert verifier("admin", "s3cret")
    assert not verifier.verify("admin", "wrong")
    assert not verifier.known("admin", "wrong")
    assert not verifier.verify("nobody", "s3cret")
    assert not PasswordVerifier({}).has_users


def test_replica_verify_writes_is_off_by_default_and_round_trips(tmp_path: Path) -> None:
    assert parse_config({}, data_dir=tmp_path).replica.verify_writes is False
    config = parse_config({"replica": {"verify_writes": True}}, data_dir=tmp_path)
    assert config.replica.verify_writes is True
    assert parse_config(tomllib.loads(to_toml(config))) == config
    with pytest.raises(ConfigError, match="verify_writes"):
        parse_config({"replica": {"verify_writes": "yes"}}, data_dir=tmp_path)
    with pytest.raises(ConfigError, match="verify"):
        parse_config({"replica": {"verify": True}}, data_dir=tmp_path)
