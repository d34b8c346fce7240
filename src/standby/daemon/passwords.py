"""Password hashes for the ``[users]`` table and Basic-auth checks.

Hashes use scrypt from ``hashlib`` and are stored as ``scrypt$<n>$<r>$<p>$<salt b64>$<key b64>`` so the
cost can be raised later without breaking old entries. ``standby users hash-password`` prints one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import threading
from collections import Counter
from collections.abc import Iterable, Mapping

_SCHEME = "scrypt"
_N, _R, _P = 2**14, 8, 1
_KEY_LEN = 32
_SALT_LEN = 16
_MAX_CACHED = 256


class PasswordHashError(ValueError):
    """A stored hash is not in the ``scrypt$n$r$p$salt$key`` form."""


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """Hash ``password`` with a fresh random salt (or ``salt``, for tests)."""
    salt = salt if salt is not None else os.urandom(_SALT_LEN)
    key = _derive(password, salt, _N, _R, _P)
    return "$".join((_SCHEME, str(_N), str(_R), str(_P), _b64(salt), _b64(key)))


def parse_hash(encoded: str) -> tuple[int, int, int, bytes, bytes]:
    """Split a stored hash into (n, r, p, salt, key); raises ``PasswordHashError``."""
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != _SCHEME:
        raise PasswordHashError(
            "expected 'scrypt$n$r$p$salt$key' (make one with: standby users hash-password)"
        )
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt = base64.b64decode(parts[4], validate=True)
        key = base64.b64decode(parts[5], validate=True)
    except ValueError as exc:
        raise PasswordHashError(f"malformed scrypt hash: {exc}") from None
    if n < 2 or n & (n - 1) or r < 1 or p < 1 or not salt or not key:
        raise PasswordHashError("scrypt parameters out of range")
    return n, r, p, salt, key


def verify_hash(password: str, encoded: str) -> bool:
    """Whether ``password`` matches the stored hash (constant-time compare)."""
    try:
        n, r, p, salt, key = parse_hash(encoded)
    except PasswordHashError:
        return False
    return hmac.compare_digest(_derive(password, salt, n, r, p, length=len(key)), key)


class PasswordVerifier:
    """``verify(user, password) -> bool`` against the configured users.

    scrypt costs tens of milliseconds by design; a client sends the same credentials on every request, so
    successful checks are remembered (keyed by a digest, never the password) to keep CIM round trips fast.

    An unknown user (or one whose stored hash is unusable) costs the same as a known one: the password is
    derived against a dummy hash with the parameters the configured hashes use, so the time to refuse does
    not tell which user names exist.
    """

    def __init__(self, users: Mapping[str, str]) -> None:
        self._users = {user: encoded for user, encoded in users.items() if _usable(encoded)}
        self._has_users = bool(users)
        self._dummy = dummy_hash(users.values())
        self._ok: set[bytes] = set()
        self._lock = threading.Lock()

    def __call__(self, user: str, password: str) -> bool:
        """Same as ``verify``: lets the object stand where a plain callable is expected."""
        return self.verify(user, password)

    def known(self, user: str, password: str) -> bool:
        """Whether this pair was verified before (cheap; lets async callers skip a thread hop)."""
        token = _token(user, password, self._users.get(user, self._dummy))
        with self._lock:
            return token in self._ok

    def verify(self, user: str, password: str) -> bool:
        """Whether ``user`` exists and ``password`` is theirs."""
        encoded = self._users.get(user)
        if encoded is None:
            verify_hash(password, self._dummy)  # the same work as for a real user, and always False
            return False
        token = _token(user, password, encoded)
        with self._lock:
            if token in self._ok:
                return True
        if not verify_hash(password, encoded):
            return False
        with self._lock:
            if len(self._ok) >= _MAX_CACHED:
                self._ok.clear()
            self._ok.add(token)
        return True

    @property
    def has_users(self) -> bool:
        """Whether any user is configured (without one, TCP listeners accept nobody)."""
        return self._has_users


def dummy_hash(encoded: Iterable[str]) -> str:
    """A hash no password matches, with the parameters most of ``encoded`` use (else the defaults)."""
    shapes = Counter[tuple[int, int, int, int, int]]()
    for value in encoded:
        try:
            n, r, p, salt, key = parse_hash(value)
        except PasswordHashError:
            continue
        shapes[(n, r, p, len(salt), len(key))] += 1
    n, r, p, salt_len, key_len = (shapes.most_common(1)[0][0] if shapes
                                  else (_N, _R, _P, _SALT_LEN, _KEY_LEN))
    # A random key: matching it would take a preimage of scrypt.
    return "$".join((_SCHEME, str(n), str(r), str(p), _b64(os.urandom(salt_len)), _b64(os.urandom(key_len))))


def _usable(encoded: str) -> bool:
    try:
        parse_hash(encoded)
    except PasswordHashError:
        return False
    return True


def _token(user: str, password: str, encoded: str) -> bytes:
    return hashlib.sha256(f"{user}\0{password}\0{encoded}".encode()).digest()


def _derive(password: str, salt: bytes, n: int, r: int, p: int, *, length: int = _KEY_LEN) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=256 * 1024 * 1024, dklen=length
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
