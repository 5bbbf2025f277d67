"""One callback attempt: check the URL again, resolve once, POST to the validated address.

DNS is asked exactly once per attempt and the connection goes to an address that passed the
address rule, while TLS verifies and `Host` names the URL's host, so a rebinding answer can't
steer the request anywhere else. Redirects are never followed.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from importlib import metadata
from typing import Protocol

import aiohttp

from sinas_common.callback_policy import CallbackPolicy, CallbackTarget, IPAddress, Resolver
from sinas_common.errors import CallbackUrlRejected
from sinas_common.timeconv import utcnow
from sinas_notifier.models import CallbackClaim, DeliveryOutcome
from sinas_notifier.signing import WebhookSigner

logger = logging.getLogger(__name__)


def product_version() -> str:
    try:
        return metadata.version("sinas-runtime")
    except metadata.PackageNotFoundError:
        return "0"


USER_AGENT = f"sinas-runtime-notifier/{product_version()}"


@dataclass(frozen=True, slots=True, kw_only=True)
class PinnedRequest:
    """A POST aimed at one validated address, carrying the URL's host for Host and TLS."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    # The name TLS sends and verifies; None for a URL that names an address itself.
    sni_hostname: str | None = None
    body: bytes = b""


def pinned_request(
    target: CallbackTarget,
    address: IPAddress,
    *,
    claim: CallbackClaim,
    signer: WebhookSigner,
    timestamp: int,
) -> PinnedRequest:
    """The request for `claim` sent to `address`; the body is the claim's payload, unchanged."""
    host = f"[{address}]" if address.version == 6 else str(address)
    headers = {
        "host": target.host_header,
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "authorization": f"Bearer {claim.access_token}",
        **signer.headers(claim.webhook_id, timestamp, claim.payload_json),
    }
    return PinnedRequest(
        url=f"https://{host}:{target.port}{target.target}",
        headers=headers,
        sni_hostname=None if target.literal_address is not None else target.host,
        body=claim.payload_json,
    )


class CallbackSender(Protocol):
    """Sends one request and returns the response status; raises on no response."""

    async def send(self, request: PinnedRequest) -> int: ...


class CallbackDeliverer:
    """Makes the one attempt for a claimed callback and says what happened."""

    def __init__(
        self,
        *,
        policy: CallbackPolicy,
        resolver: Resolver,
        sender: CallbackSender,
        signer: WebhookSigner | None,
        timeout_seconds: float,
        clock: Callable[[], datetime] = utcnow,
        wall_seconds: Callable[[], float] = time.time,
    ) -> None:
        self._policy = policy
        self._resolver = resolver
        self._sender = sender
        self._signer = signer
        self._timeout = timeout_seconds
        self._clock = clock
        self._wall_seconds = wall_seconds

    async def deliver(self, claim: CallbackClaim) -> DeliveryOutcome:
        """Never raises for a delivery problem: every failure is an outcome."""
        attempted_at = self._clock()

        def failed(error: str, code: int | None = None) -> DeliveryOutcome:
            return DeliveryOutcome(
                execution_id=claim.execution_id,
                batch_id=claim.batch_id,
                sent=False,
                response_code=code,
                error=error,
                attempted_at=attempted_at,
            )

        if self._signer is None:
            return failed("no callback signing secret is configured")
        try:
            target = self._policy.check_url(claim.callback_url)
            addresses = await asyncio.wait_for(
                self._policy.resolve(target, self._resolver), self._timeout
            )
        except CallbackUrlRejected as exc:
            return failed(exc.message)
        except TimeoutError:
            return failed(f"resolving the callback host timed out after {self._timeout:g} s")
        request = pinned_request(
            target,
            addresses[0],
            claim=claim,
            signer=self._signer,
            timestamp=int(self._wall_seconds()),
        )
        try:
            status = await self._sender.send(request)
        except Exception as exc:
            logger.info(
                "callback got no response",
                extra={"action": "deliver", "callback": claim.key},
            )
            return failed(describe_failure(exc, self._timeout))
        if 200 <= status < 300:
            return DeliveryOutcome(
                execution_id=claim.execution_id,
                batch_id=claim.batch_id,
                sent=True,
                response_code=status,
                error="",
                attempted_at=attempted_at,
            )
        return failed(f"callback answered HTTP {status}", status)


def describe_failure(exc: BaseException, timeout_seconds: float) -> str:
    """The recorded error text for an attempt that got no response."""
    if isinstance(exc, TimeoutError):
        return f"callback timed out after {timeout_seconds:g} s"
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLError):
            return f"TLS error: {cause}"
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"connection failed: {exc}"
    return f"callback request failed: {type(exc).__name__}: {exc}"
