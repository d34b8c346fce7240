"""Typed reads from a parsed TOML table, with messages that name the key (``listeners.https.port: …``)."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from pathlib import Path

from standby.domain.errors import InvalidParameter


class ConfigError(InvalidParameter):
    """The configuration cannot be used; the message names the file and key."""


class TomlTable:
    """Typed reads from one TOML table; ``finish`` rejects keys nobody read (catches typos)."""

    def __init__(self, data: Mapping[str, object], where: str) -> None:
        self._data = data
        self._where = where
        self._seen: set[str] = set()

    def keys(self) -> list[str]:
        return list(self._data)

    def _name(self, key: str) -> str:
        return f"{self._where}.{key}" if self._where else key

    def _get(self, key: str) -> object:
        self._seen.add(key)
        return self._data.get(key)

    def table(self, key: str) -> TomlTable:
        value = self._get(key)
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"{self._name(key)}: expected a table ([{self._name(key)}])")
        return TomlTable(value, self._name(key))

    def string(self, key: str, default: str | None) -> str | None:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            raise ConfigError(f"{self._name(key)}: expected a string, got {_show(value)}")
        return value

    def path(self, key: str, default: Path | None) -> Path | None:
        value = self.string(key, None)
        if value is None:
            return default
        if not value:
            raise ConfigError(f"{self._name(key)}: empty path")
        return Path(value).expanduser().absolute()

    def boolean(self, key: str, default: bool) -> bool:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ConfigError(f"{self._name(key)}: expected true or false, got {_show(value)}")
        return value

    def number(self, key: str, default: float, *, low: float) -> float:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{self._name(key)}: expected a number, got {_show(value)}")
        if value < low:
            raise ConfigError(f"{self._name(key)}: must be at least {low:g}, got {value}")
        return float(value)

    def port(self, key: str, default: int) -> int:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
            raise ConfigError(f"{self._name(key)}: expected a port number 1-65535, got {_show(value)}")
        return value

    def address(self, key: str, default: str) -> str:
        value = self.string(key, None)
        if value is None:
            return default
        if value != "localhost":
            try:
                ipaddress.ip_address(value)
            except ValueError:
                raise ConfigError(f"{self._name(key)}: not an IP address: {value!r}") from None
        return value

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.string(key, None)
        if value is None:
            return default
        if value not in choices:
            raise ConfigError(f"{self._name(key)}: expected one of {', '.join(choices)}; got {value!r}")
        return value

    def finish(self) -> None:
        unknown = sorted(set(self._data) - self._seen)
        if unknown:
            raise ConfigError(f"unknown key {self._name(unknown[0])!r}")


def _show(value: object) -> str:
    return json.dumps(value, default=str)
