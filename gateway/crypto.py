"""Secrets at rest: Fernet values in TimeTracker's `enc:v1:` format, key loading and rotation."""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PREFIX = "enc:v1:"
KEY_FILE_NAME = "encryption.key"

log = logging.getLogger(__name__)


class SecretError(Exception):
    """A stored secret cannot be decrypted with any configured key."""


def validate_key(variable: str, key: str) -> None:
    from gateway.errors import ConfigError

    try:
        raw = base64.urlsafe_b64decode(key.encode())
    except (binascii.Error, ValueError):
        raise ConfigError(variable, "not a Fernet key (urlsafe base64 of 32 bytes)") from None
    if len(raw) != 32:
        raise ConfigError(variable, "not a Fernet key (urlsafe base64 of 32 bytes)")


def load_or_create_primary_key(
    key: str | None, key_file: Path | None, data_dir: Path
) -> tuple[str, str]:
    """Return (key, where-it-came-from). Generates a key into data_dir when none is configured."""
    if key:
        return key, "SETTINGS_ENCRYPTION_KEY"
    if key_file is not None:
        value = key_file.read_text().strip()
        validate_key("SETTINGS_ENCRYPTION_KEY_FILE", value)
        return value, str(key_file)
    path = data_dir / KEY_FILE_NAME
    if path.is_file():
        value = path.read_text().strip()
        validate_key("SETTINGS_ENCRYPTION_KEY_FILE", value)
        return value, str(path)
    data_dir.mkdir(parents=True, exist_ok=True)
    value = Fernet.generate_key().decode()
    # O_EXCL: two processes starting together cannot both write a key; the loser reads it.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return load_or_create_primary_key(None, None, data_dir)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    log.warning(
        "Generated a new encryption key at %s (mode 0600). Back it up: stored secrets "
        "cannot be read without it. Set SETTINGS_ENCRYPTION_KEY to manage it yourself.",
        path.resolve(),
    )
    return value, str(path)


CURRENT_CACHE_SIZE = 4096  # ciphertexts remembered as current (a few hundred KiB at most)


class SecretBox:
    """Encrypts with the primary key, decrypts with the primary or any old key."""

    def __init__(self, primary: str, old: tuple[str, ...] = ()) -> None:
        self._primary = Fernet(primary.encode())
        self._all = MultiFernet([self._primary, *(Fernet(k.encode()) for k in old)])
        self._primary_key = primary
        # Ciphertexts seen to be under the primary key: every config write asks again, and
        # a Fernet decryption only to learn "still current" is most of a sync's crypto work.
        self._current: set[str] = set()

    def encrypt(self, plaintext: str) -> str:
        return PREFIX + self._primary.encrypt(plaintext.encode()).decode()

    def decrypt(self, stored: str | None) -> str | None:
        """Plaintext of a stored value; a value without the prefix is legacy plaintext."""
        if stored is None or stored == "":
            return None
        if not stored.startswith(PREFIX):
            return stored
        try:
            return self._all.decrypt(stored[len(PREFIX) :].encode()).decode()
        except (InvalidToken, UnicodeDecodeError):
            raise SecretError(
                "a stored secret cannot be decrypted with the configured keys"
            ) from None

    def needs_rewrap(self, stored: str | None) -> bool:
        """True for legacy plaintext and for values encrypted with an old key."""
        if not stored:
            return False
        if not stored.startswith(PREFIX):
            return True
        if stored in self._current:
            return False
        try:
            self._primary.decrypt(stored[len(PREFIX) :].encode())
        except InvalidToken:
            return True
        if len(self._current) >= CURRENT_CACHE_SIZE:
            self._current.clear()
        self._current.add(stored)
        return False

    def rewrap(self, stored: str) -> str:
        plaintext = self.decrypt(stored)
        assert plaintext is not None
        return self.encrypt(plaintext)

    def derive(self, purpose: bytes, length: int = 32) -> bytes:
        """A key for another purpose (session cookies), bound to the primary key."""
        hkdf = HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=purpose)
        return hkdf.derive(base64.urlsafe_b64decode(self._primary_key.encode()))


def same_secret(a: str | None, b: str | None) -> bool:
    """Constant-time equality of two strings; any text (non-ASCII too), never raising."""
    if a is None or b is None:
        return False
    return hmac.compare_digest(
        a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass")
    )
