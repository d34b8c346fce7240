"""HTTP Basic authentication for ``/cimom`` against the daemon's users.

The daemon hands in ``verify_password(user, password) -> bool`` (its config stores salted hashes, and checking
one costs a deliberate key-derivation). WBEM clients send the same credentials on every request, so a
successful check is remembered for a few minutes under a keyed digest of the pair — never the password.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable

VerifyPassword = Callable[[str, str], bool]

_MAX_CACHED = 1024


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """``(user, password)`` from an ``Authorization: Basic …`` value, or None when absent or malformed."""
    if not header:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        return None
    try:
        raw = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    user, sep, password = text.partition(":")
    if not sep or not user:
        return None
    return user, password


class BasicAuth:
    """Checks Basic credentials through ``verify`` and remembers successes for ``ttl`` seconds."""

    def __init__(
        self, verify: VerifyPassword, *, ttl: float = 300.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._verify = verify
        self._ttl = ttl
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self._cache: dict[bytes, float] = {}
        self._lock = threading.Lock()

    def _digest(self, user: str, password: str) -> bytes:
        return hmac.new(self._key, f"{user}\0{password}".encode(), hashlib.sha256).digest()

    def authenticate(self, header: str | None) -> str | None:
        """The user name when the header carries valid credentials, else None. May block (key derivation)."""
        creds = parse_basic(header)
        if creds is None:
            return None
        user, password = creds
        digest = self._digest(user, password)
        now = self._clock()
        with self._lock:
            expiry = self._cache.get(digest)
            if expiry is not None and expiry > now:
                return user
        try:
            ok = bool(self._verify(user, password))
        except Exception:  # a broken user store must read as "not authenticated", not as a 500
            ok = False
        if not ok:
            return None
        with self._lock:
            if len(self._cache) >= _MAX_CACHED:
                self._cache = {d: e for d, e in self._cache.items() if e > now}
                if len(self._cache) >= _MAX_CACHED:
                    self._cache.clear()
            self._cache[digest] = now + self._ttl
        return user
