"""The CLI's HTTP client: the daemon's control socket by default, or ``--host URL`` with Basic auth.

Every failure becomes a ``CliError`` carrying the exit code the CLI uses: 1 when the operation failed (the
daemon's own message, already in the caller's language), 3 when the daemon cannot be reached (with how to
start it). Only this module touches httpx.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from standby import __version__, i18n

DEFAULT_DATA_DIR = Path("/var/lib/standby")
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
#: Wait requests ask the daemon to block at most this long, then ask again.
WAIT_CHUNK_SECONDS = 60.0


class CliError(Exception):
    """One line for stderr and the exit code to leave with."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED, *, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.code = code


@dataclass(frozen=True)
class Target:
    """Where the daemon is and how to talk to it."""

    data_dir: Path = DEFAULT_DATA_DIR
    host: str | None = None
    user: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    insecure: bool = False
    language: str = "en"

    @property
    def socket_path(self) -> Path:
        """The control socket of ``data_dir``."""
        return self.data_dir / "control.sock"

    def describe(self) -> str:
        """Where we try to connect, for messages."""
        return self.host if self.host else f"unix:{self.socket_path}"


def text(message_id: str, language: str, fallback: str, **args: str) -> str:
    """A catalog message, or the English ``fallback`` when the id is missing."""
    try:
        result = i18n.translate(message_id, language, **args)
    except (KeyError, ValueError):
        return fallback
    return fallback if not result or result == message_id else result


class DaemonClient:
    """Thin JSON-over-HTTP calls; use as a context manager."""

    def __init__(self, target: Target, *, timeout: float = 30.0) -> None:
        self.target = target
        headers = {"accept-language": target.language, "user-agent": f"standby-cli/{__version__}"}
        if target.host:
            auth = (target.user, target.password or "") if target.user else None
            self._http = httpx.Client(base_url=target.host.rstrip("/"), auth=auth, verify=_verify(target),
                                      headers=headers, timeout=timeout, trust_env=False)
        else:
            transport = httpx.HTTPTransport(uds=str(target.socket_path))
            self._http = httpx.Client(transport=transport, base_url="http://standby", headers=headers,
                                      timeout=timeout, trust_env=False)

    def __enter__(self) -> DaemonClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def get(self, path: str, *, params: Mapping[str, Any] | None = None, timeout: float | None = None) -> Any:
        """GET and decode JSON."""
        return self._request("GET", path, params=params, timeout=timeout)

    def post(self, path: str, *, body: Any = None, params: Mapping[str, Any] | None = None) -> Any:
        """POST (JSON body) and decode JSON."""
        return self._request("POST", path, json=body, params=params)

    def put(self, path: str, *, body: Any = None) -> Any:
        """PUT (JSON body) and decode JSON."""
        return self._request("PUT", path, json=body)

    def delete(self, path: str) -> Any:
        """DELETE and decode JSON."""
        return self._request("DELETE", path)

    def _request(self, method: str, path: str, *, timeout: float | None = None, **kwargs: Any) -> Any:
        extra: dict[str, Any] = {}
        if timeout is not None:
            extra["timeout"] = timeout
        try:
            response = self._http.request(method, path, **kwargs, **extra)
        except httpx.ConnectError as exc:
            raise self._unreachable(exc) from None
        except httpx.TimeoutException:
            raise CliError(text("DaemonTimedOut", self.target.language,
                                f"the daemon at {self.target.describe()} did not answer in time",
                                target=self.target.describe())) from None
        except (httpx.HTTPError, OSError) as exc:
            raise self._unreachable(exc) from None
        return self._decode(response)

    def _decode(self, response: httpx.Response) -> Any:
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.is_success:
            return data
        if response.status_code == 401:
            raise CliError(text("AuthenticationFailed", self.target.language,
                                "authentication failed: check --user and STANDBY_PASSWORD"), code=32769)
        if isinstance(data, dict) and "message" in data:
            code = data.get("code")
            raise CliError(str(data["message"]), code=code if isinstance(code, int) else None)
        raise CliError(f"HTTP {response.status_code}: {response.text.strip()[:200]}")

    def _unreachable(self, exc: Exception) -> CliError:
        target = self.target
        reason_id, english = _reason(exc)
        reason = text(reason_id, target.language, english) if reason_id else english
        if target.host:
            message = text("DaemonUnreachableHost", target.language,
                           f"cannot reach the standby daemon at {target.host}: {reason}",
                           target=target.host, reason=reason)
        else:
            path = str(target.socket_path)
            message = text(
                "DaemonUnreachable", target.language,
                f"cannot reach the standby daemon at {path}: {reason}; "
                f"start it with: standby serve --data-dir {target.data_dir}",
                socket=path, reason=reason, data_dir=str(target.data_dir),
            )
        return CliError(message, EXIT_UNREACHABLE)


def _reason(exc: Exception) -> tuple[str | None, str]:
    """(catalog id or None, English text) of why a connection failed."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, FileNotFoundError):
            return "CliNoSocket", "no such socket (is the daemon running?)"
        if isinstance(cause, PermissionError):
            return "CliSocketDenied", "permission denied (run as root or as the daemon's owner)"
        if isinstance(cause, ConnectionRefusedError):
            return "CliConnectionRefused", "connection refused"
        if isinstance(cause, ssl.SSLError):
            return None, f"TLS error: {getattr(cause, 'reason', None) or cause}"
        cause = cause.__cause__ or cause.__context__
    return None, str(exc) or type(exc).__name__


def _verify(target: Target) -> ssl.SSLContext | bool:
    if target.insecure:
        return False
    if target.ca_file is not None:
        try:
            return ssl.create_default_context(cafile=str(target.ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise CliError(f"cannot load CA file {target.ca_file}: {exc}", EXIT_USAGE) from None
    return True


def target_from_options(
    *, data_dir: Path | None, host: str | None, user: str | None, ca_file: Path | None, insecure: bool,
    language: str,
) -> Target:
    """Resolve options and the environment (STANDBY_DATA_DIR, _HOST, _USER, _PASSWORD, _CA_FILE)."""
    env = os.environ
    chosen_dir = data_dir or Path(env.get("STANDBY_DATA_DIR") or DEFAULT_DATA_DIR)
    chosen_host = host or env.get("STANDBY_HOST") or None
    if chosen_host and not chosen_host.startswith(("http://", "https://")):
        raise CliError(f"--host must be a URL such as https://host:5989, not {chosen_host!r}", EXIT_USAGE)
    return Target(
        data_dir=chosen_dir,
        host=chosen_host,
        user=user or env.get("STANDBY_USER") or None,
        password=env.get("STANDBY_PASSWORD"),
        ca_file=ca_file or (Path(env["STANDBY_CA_FILE"]) if env.get("STANDBY_CA_FILE") else None),
        insecure=insecure,
        language=language,
    )
