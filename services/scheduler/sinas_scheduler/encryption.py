"""Encryption at rest of the secrets the scheduler stores (MultiFernet, SINAS_ENCRYPTION_KEY)."""

from __future__ import annotations

from typing import Protocol

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

MISSING_KEY_MESSAGE = (
    "SINAS_ENCRYPTION_KEY is not set: the scheduler stores its token-signing keys and the LLM "
    "provider API keys encrypted with it and can't start without one"
)
# What a PEM-encoded key stored before encryption at rest starts with.
PLAINTEXT_PEM_PREFIX = "-----BEGIN "


class WrongEncryptionKey(ValueError):
    """A stored secret was encrypted with a key that SINAS_ENCRYPTION_KEY no longer lists."""


def parse_keys(value: str) -> list[str]:
    """SINAS_ENCRYPTION_KEY's Fernet keys, comma-separated, the one that encrypts first."""
    return [key.strip() for key in value.split(",") if key.strip()]


class SecretCipher(Protocol):
    def encrypt(self, plain: str) -> str: ...

    def decrypt(self, token: str) -> str:
        """Raises WrongEncryptionKey when no configured key made the token."""
        ...


class FernetCipher:
    """The first key encrypts, every key decrypts: to rotate, put a new key first and restart
    (the scheduler re-encrypts what it stores under it), then drop the old key."""

    def __init__(self, keys: str) -> None:
        parsed = parse_keys(keys)
        if not parsed:
            raise ValueError(MISSING_KEY_MESSAGE)
        # Fernet raises ValueError on a malformed key, so a bad setting fails at start.
        fernets = [Fernet(key.encode()) for key in parsed]
        self._primary = fernets[0]
        self._all = MultiFernet(fernets)

    def encrypt(self, plain: str) -> str:
        return self._primary.encrypt(plain.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._all.decrypt(token.encode()).decode()
        except InvalidToken as exc:
            raise WrongEncryptionKey(WrongEncryptionKey.__doc__) from exc

    def reseal(self, stored: str) -> str | None:
        """`stored` encrypted under the first key, or None when it already is. A PEM stored
        before encryption at rest is encrypted; a token of an older key re-encrypted."""
        if stored.startswith(PLAINTEXT_PEM_PREFIX):
            return self.encrypt(stored)
        try:
            self._primary.decrypt(stored.encode())
            return None
        except InvalidToken:
            pass
        try:
            return self._all.rotate(stored.encode()).decode()
        except InvalidToken as exc:
            raise WrongEncryptionKey(WrongEncryptionKey.__doc__) from exc


def generate_key() -> str:
    return Fernet.generate_key().decode()
