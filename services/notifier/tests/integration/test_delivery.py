"""One attempt against a real HTTPS receiver: answers, redirects, timeouts, TLS, rebinding."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from sinas_common.callback_policy import CallbackPolicy, SystemResolver
from sinas_common.settings import CallbackPolicySettings
from sinas_devstack.callback_receiver import (
    CallbackReceiver,
    ReceiverCertificates,
    StallingListener,
)
from sinas_devstack.embedded import free_port
from sinas_notifier.delivery import USER_AGENT, CallbackDeliverer
from sinas_notifier.models import CallbackClaim
from sinas_notifier.sender import HttpsSender, ssl_context
from sinas_notifier.signing import WebhookSigner, parse_signing_secret

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
ATTEMPTED_AT = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


class ScriptedResolver:
    """Answers each lookup with the next scripted list: what a rebinding DNS server does."""

    def __init__(self, *answers: list[str]) -> None:
        self._answers = list(answers)
        self.asked: list[tuple[str, int]] = []

    async def resolve(self, host: str, port: int) -> list[str]:
        self.asked.append((host, port))
        return self._answers.pop(0)


def policy(port: int, *, hosts: str = "localhost", allow_private: bool = True) -> CallbackPolicy:
    return CallbackPolicy.from_settings(
        CallbackPolicySettings.model_validate(
            {
                "CALLBACK_URL_HOSTS": hosts,
                "CALLBACK_URL_PORTS": str(port),
                "CALLBACK_ALLOW_PRIVATE_NETWORKS": allow_private,
            }
        )
    )


_SENDERS: list[HttpsSender] = []


def _opened(sender: HttpsSender) -> HttpsSender:
    _SENDERS.append(sender)
    return sender


@pytest.fixture(autouse=True)
async def _close_senders() -> AsyncIterator[None]:
    """Senders keep connections open for reuse: each test's are closed after it."""
    yield
    while _SENDERS:
        await _SENDERS.pop().close()


def deliverer(
    certificates: ReceiverCertificates,
    pol: CallbackPolicy,
    *,
    resolver: object | None = None,
    timeout: float = 10.0,
    ca: bool = True,
) -> CallbackDeliverer:
    return CallbackDeliverer(
        policy=pol,
        resolver=resolver or SystemResolver(),  # type: ignore[arg-type]
        sender=_opened(
            HttpsSender(
                ssl_context(str(certificates.ca_file) if ca else None), timeout_seconds=timeout
            )
        ),
        signer=WebhookSigner(parse_signing_secret(SECRET)),
        timeout_seconds=timeout,
        clock=lambda: ATTEMPTED_AT,
    )


def claim(url: str) -> CallbackClaim:
    execution_id = str(uuid.uuid4())
    return CallbackClaim(
        execution_id=execution_id,
        callback_url=url,
        webhook_id=f"msg_{execution_id}",
        access_token="token-abc",
        payload_json=json.dumps({"execution_id": execution_id, "n": 1.10}).encode(),
    )


async def test_success_posts_the_exact_signed_body(
    receiver: CallbackReceiver, certificates: ReceiverCertificates
) -> None:
    path = f"/ok/{uuid.uuid4()}?a=1&b=two"
    one = claim(receiver.url(path))
    before = int(time.time())
    outcome = await deliverer(certificates, policy(receiver.port)).deliver(one)

    assert outcome.sent is True
    assert outcome.response_code == 200
    assert outcome.error == ""
    assert outcome.attempted_at == ATTEMPTED_AT
    [request] = receiver.requests_to(path.split("?")[0])
    assert request.method == "POST"
    assert request.target == path
    assert request.body == one.payload_json
    headers = request.headers
    assert headers["host"] == f"localhost:{receiver.port}"
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == USER_AGENT
    assert headers["authorization"] == "Bearer token-abc"
    assert headers["webhook-id"] == one.webhook_id
    timestamp = int(headers["webhook-timestamp"])
    assert before <= timestamp <= int(time.time())
    signer = WebhookSigner(parse_signing_secret(SECRET))
    assert headers["webhook-signature"] == signer.signature(one.webhook_id, timestamp, request.body)


async def test_server_error_is_failed_with_its_code(
    receiver: CallbackReceiver, certificates: ReceiverCertificates
) -> None:
    path = f"/status/500/{uuid.uuid4()}"
    outcome = await deliverer(certificates, policy(receiver.port)).deliver(
        claim(receiver.url(path))
    )
    assert (outcome.sent, outcome.response_code) == (False, 500)
    assert outcome.error == "callback answered HTTP 500"
    assert len(receiver.requests_to(path)) == 1


async def test_redirect_is_not_followed(
    receiver: CallbackReceiver, certificates: ReceiverCertificates
) -> None:
    path = f"/status/302/{uuid.uuid4()}"
    outcome = await deliverer(certificates, policy(receiver.port)).deliver(
        claim(receiver.url(path))
    )
    assert (outcome.sent, outcome.response_code) == (False, 302)
    assert len(receiver.requests_to(path)) == 1
    assert receiver.requests_to("/elsewhere") == []


async def test_a_hanging_receiver_times_out_after_one_attempt(
    receiver: CallbackReceiver, certificates: ReceiverCertificates
) -> None:
    path = f"/hang/15/{uuid.uuid4()}"
    started = time.monotonic()
    outcome = await deliverer(certificates, policy(receiver.port), timeout=2.0).deliver(
        claim(receiver.url(path))
    )
    assert time.monotonic() - started < 14
    assert (outcome.sent, outcome.response_code) == (False, None)
    assert outcome.error == "callback timed out after 2 s"
    assert len(receiver.requests_to(path)) == 1


async def test_a_stalled_tls_handshake_times_out(certificates: ReceiverCertificates) -> None:
    listener = StallingListener().start()
    try:
        outcome = await deliverer(certificates, policy(listener.port), timeout=1.0).deliver(
            claim(f"https://localhost:{listener.port}/x")
        )
    finally:
        listener.stop()
    assert (outcome.sent, outcome.response_code) == (False, None)
    assert "timed out" in outcome.error
    assert listener.connections == 1


async def test_a_refused_connection_is_a_connection_failure(
    certificates: ReceiverCertificates,
) -> None:
    port = free_port()  # nothing listens there
    outcome = await deliverer(certificates, policy(port)).deliver(
        claim(f"https://localhost:{port}/x")
    )
    assert (outcome.sent, outcome.response_code) == (False, None)
    assert outcome.error.startswith("connection failed: ")


async def test_untrusted_certificate_is_a_tls_failure(
    receiver: CallbackReceiver, certificates: ReceiverCertificates
) -> None:
    path = f"/ok/{uuid.uuid4()}"
    outcome = await deliverer(certificates, policy(receiver.port), ca=False).deliver(
        claim(receiver.url(path))
    )
    assert (outcome.sent, outcome.response_code) == (False, None)
    assert outcome.error.startswith("TLS error")
    assert receiver.requests_to(path) == []


async def test_connects_to_the_validated_address_with_the_urls_name(
    receiver: CallbackReceiver, certificates: ReceiverCertificates
) -> None:
    # "localhost" is looked up once, through our resolver; TLS still verifies "localhost".
    resolver = ScriptedResolver(["127.0.0.1"], ["10.9.9.9"])
    path = f"/ok/{uuid.uuid4()}"
    outcome = await deliverer(certificates, policy(receiver.port), resolver=resolver).deliver(
        claim(receiver.url(path))
    )
    assert outcome.sent is True
    assert resolver.asked == [("localhost", receiver.port)]
    [request] = receiver.requests_to(path)
    assert request.headers["host"] == f"localhost:{receiver.port}"


async def test_dns_rebinding_to_a_private_address_is_refused_without_a_post(
    receiver: CallbackReceiver, certificates: ReceiverCertificates
) -> None:
    # Public at submit time, loopback at delivery time.
    strict = policy(receiver.port, allow_private=False)
    resolver = ScriptedResolver(["93.184.216.34"], ["127.0.0.1"])
    url = receiver.url(f"/ok/{uuid.uuid4()}")
    target = strict.check_url(url)
    assert [str(a) for a in await strict.resolve(target, resolver)] == ["93.184.216.34"]

    outcome = await deliverer(certificates, strict, resolver=resolver).deliver(claim(url))
    assert (outcome.sent, outcome.response_code) == (False, None)
    assert outcome.error.endswith("resolves to 127.0.0.1, which is loopback")
    assert receiver.requests_to(target.target) == []


async def test_policy_is_checked_again_at_delivery(
    receiver: CallbackReceiver, certificates: ReceiverCertificates
) -> None:
    tightened = policy(receiver.port, hosts="hooks.example.com")
    outcome = await deliverer(certificates, tightened).deliver(claim(receiver.url("/ok/p")))
    assert (outcome.sent, outcome.response_code) == (False, None)
    assert "not in the allowed callback hosts" in outcome.error


async def test_connections_are_reused_only_for_the_same_address_and_name(
    receiver: CallbackReceiver, certificates: ReceiverCertificates
) -> None:
    send = deliverer(certificates, policy(receiver.port, hosts="localhost,127.0.0.1"))
    run = uuid.uuid4()
    by_name = [await send.deliver(claim(receiver.url(f"/reuse/{run}/{i}"))) for i in range(3)]
    assert all(outcome.sent for outcome in by_name)
    named = receiver.requests_to(f"/reuse/{run}/")
    # Keep-alive: one TLS handshake serves every callback to the same host.
    assert len({request.connection for request in named}) == 1
    # The same address under another name (here the literal address) gets its own connection,
    # so no request travels over a TLS session made for another name.
    literal = claim(receiver.url(f"/reuse/{run}/literal", host="127.0.0.1"))
    await send.deliver(literal)
    [other] = receiver.requests_to(f"/reuse/{run}/literal")
    assert other.connection not in {request.connection for request in named}
