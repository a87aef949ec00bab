"""Werkzeug-compatible password hashes (`scrypt:N:r:p$salt$hex`, `pbkdf2:sha256:iter$salt$hex`)."""

from __future__ import annotations

import hashlib
import secrets
import string

from gateway.crypto import same_secret

_SALT_CHARS = string.ascii_letters + string.digits
# Refuse absurd parameters from a tampered hash rather than burn CPU/memory on them.
_MAX_SCRYPT_N = 1 << 20
_MAX_PBKDF2_ITERATIONS = 5_000_000


def _derive(method: str, salt: str, password: str) -> str | None:
    kind, *params = method.split(":")
    pw, salt_b = password.encode(), salt.encode()
    if kind == "scrypt":
        try:
            n, r, p = (int(x) for x in params) if params else (2**15, 8, 1)
        except ValueError:
            return None
        if not (1 < n <= _MAX_SCRYPT_N and 0 < r <= 32 and 0 < p <= 16):
            return None
        maxmem = 132 * n * r * p  # Werkzeug's bound, so the same hashes verify
        return hashlib.scrypt(pw, salt=salt_b, n=n, r=r, p=p, maxmem=maxmem).hex()
    if kind == "pbkdf2":
        digest = params[0] if params else "sha256"
        try:
            iterations = int(params[1]) if len(params) > 1 else 600_000
        except ValueError:
            return None
        if (
            digest not in {"sha256", "sha512", "sha1"}
            or not 0 < iterations <= _MAX_PBKDF2_ITERATIONS
        ):
            return None
        return hashlib.pbkdf2_hmac(digest, pw, salt_b, iterations).hex()
    return None


def check_password(stored: str | None, password: str) -> bool:
    """Constant-time check of a password against a Werkzeug-format hash."""
    if not stored or stored.count("$") < 2:
        return False
    method, salt, expected = stored.split("$", 2)
    derived = _derive(method, salt, password)
    if derived is None:
        return False
    return same_secret(derived, expected)


def hash_password(password: str) -> str:
    """Werkzeug's default format, so TimeTracker accepts passwords the gateway sets."""
    salt = "".join(secrets.choice(_SALT_CHARS) for _ in range(16))
    method = "scrypt:32768:8:1"
    derived = _derive(method, salt, password)
    assert derived is not None
    return f"{method}${salt}${derived}"
