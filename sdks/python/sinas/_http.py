"""What the sync and async clients share: settings, request descriptions, retries, answers."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from typing import Any, TypeAlias
from urllib.parse import quote

import httpx

from sinas.exceptions import error_for

# A list method shadows the builtin inside its class, so list results are named here.
Documents: TypeAlias = list[dict[str, Any]]

DEFAULT_TIMEOUT = 30.0
USER_AGENT = "sinas-python/0.4.0"
# Statuses a client can wait out; a 503 means the gateway could not reach the scheduler.
RETRYABLE_STATUSES = frozenset({503})


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientSettings:
    """Where the API is and how to authenticate, after the environment fallbacks."""

    base_url: str
    credential: str | None
    timeout: float
    max_retries: int

    @classmethod
    def resolve(
        cls,
        *,
        base_url: str | None,
        api_key: str | None,
        token: str | None,
        timeout: float,
        use_env: bool,
        max_retries: int,
    ) -> ClientSettings:
        """Explicit values win; then SINAS_BASE_URL / SINAS_TOKEN / SINAS_API_KEY when use_env."""
        if use_env:
            base_url = base_url or os.environ.get("SINAS_BASE_URL")
            token = token or os.environ.get("SINAS_TOKEN")
            api_key = api_key or os.environ.get("SINAS_API_KEY")
        if not base_url:
            raise ValueError("base_url is required (or set SINAS_BASE_URL)")
        # A token takes precedence over an API key; both travel as a bearer credential.
        return cls(
            base_url=base_url.rstrip("/"),
            credential=token or api_key,
            timeout=timeout,
            max_retries=max_retries,
        )

    def headers(self) -> dict[str, str]:
        """Headers every request carries."""
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if self.credential:
            headers["Authorization"] = f"Bearer {self.credential}"
        return headers


@dataclass(frozen=True, slots=True, kw_only=True)
class Call:
    """One HTTP request the API understands.

    `idempotent` calls may be sent again after a connection error or a 503: reads, cancels,
    and submits that carry an Idempotency-Key.
    """

    method: str
    path: str
    params: dict[str, Any] = field(default_factory=dict)
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    idempotent: bool = False
    timeout: float | None = None

    def build(self, client: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        """The httpx request, with None-valued query parameters left out."""
        params = {key: value for key, value in self.params.items() if value is not None}
        extensions = {}
        if self.timeout is not None:
            extensions["timeout"] = httpx.Timeout(self.timeout).as_dict()
        return client.build_request(
            self.method,
            self.path,
            params=params,
            json=self.json,
            headers=self.headers,
            extensions=extensions,
        )


def segment(value: str) -> str:
    """A path segment with reserved characters escaped."""
    return quote(value, safe="")


def options(**values: Any) -> dict[str, Any]:
    """Only the options that were given: upstream sends no key for an unset option."""
    return {key: value for key, value in values.items() if value is not None}


def idempotency_headers(key: str | None) -> dict[str, str]:
    return {"Idempotency-Key": key} if key is not None else {}


def should_retry(call: Call, attempt: int, max_retries: int, status: int | None) -> bool:
    """The one retry predicate: idempotent calls, connection errors (status None) or a 503."""
    if not call.idempotent or attempt >= max_retries:
        return False
    return status is None or status in RETRYABLE_STATUSES


def backoff(attempt: int, response: httpx.Response | None = None) -> float:
    """Seconds before retry number `attempt + 1`: exponential with jitter, or Retry-After."""
    if response is not None:
        retry_after = response.headers.get("Retry-After", "")
        if retry_after.isdigit():
            return min(float(retry_after), 30.0)
    base: float = min(0.25 * 2**attempt, 8.0)
    return base / 2 + random.uniform(0, base / 2)


def decode(response: httpx.Response) -> Any:
    """The JSON body of a success, or the SinasAPIError for an error status."""
    if response.status_code >= 400:
        raise error_for(response)
    if response.status_code == 204 or not response.content:
        return None
    return response.json()
