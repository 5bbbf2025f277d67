"""Encryption at rest of LLM provider API keys (Fernet, keyed by SINAS_ENCRYPTION_KEY)."""

from __future__ import annotations

from typing import Protocol

from cryptography.fernet import Fernet, InvalidToken

from sinas_common.errors import Conflict

MISSING_KEY_MESSAGE = (
    "SINAS_ENCRYPTION_KEY is not set: the scheduler can't store LLM provider API keys"
)


class SecretCipher(Protocol):
    def encrypt(self, plain: str) -> str: ...

    def decrypt(self, token: str) -> str:
        """Raises ValueError when the token was not made with this key."""
        ...


class FernetCipher:
    def __init__(self, key: str) -> None:
        # Raises ValueError on a malformed key, so a bad setting fails at start.
        self._fernet = Fernet(key.encode())

    def encrypt(self, plain: str) -> str:
        return self._fernet.encrypt(plain.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken as exc:
            raise ValueError("the API key was encrypted with another key") from exc


class MissingKeyCipher:
    """Stands in when no key is configured: creating a provider is a clear error."""

    def encrypt(self, plain: str) -> str:
        raise Conflict(MISSING_KEY_MESSAGE)

    def decrypt(self, token: str) -> str:
        raise ValueError(MISSING_KEY_MESSAGE)


def generate_key() -> str:
    return Fernet.generate_key().decode()
