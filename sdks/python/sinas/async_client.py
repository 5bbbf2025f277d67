"""AsyncSinasClient: the asyncio client, with the same surface as SinasClient."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

import httpx

from sinas import _calls
from sinas._http import (
    DEFAULT_TIMEOUT,
    Call,
    ClientSettings,
    Documents,
    backoff,
    decode,
    should_retry,
)
from sinas.exceptions import SinasConnectionError, SinasTimeoutError

Send = Callable[[Call], Awaitable[Any]]


class AsyncSinasClient:
    """An asyncio Sinas API client; every method of SinasClient, awaited.

    Args:
        base_url: the gateway, e.g. ``http://127.0.0.1:8000``; else ``SINAS_BASE_URL``.
        api_key: an API key; else ``SINAS_API_KEY``.
        token: a bearer token (JWT), preferred over an API key; else ``SINAS_TOKEN``.
        timeout: seconds per request.
        use_env: read the environment fallbacks; False for a client built from a request.
        max_retries: extra attempts for idempotent calls on connection errors and 503.
        transport: an httpx transport, for tests and proxies.

    Use it as an async context manager, or call :meth:`close`, to release its connections.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        use_env: bool = True,
        *,
        max_retries: int = 3,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._settings = ClientSettings.resolve(
            base_url=base_url,
            api_key=api_key,
            token=token,
            timeout=timeout,
            use_env=use_env,
            max_retries=max_retries,
        )
        self._http = httpx.AsyncClient(
            base_url=self._settings.base_url,
            headers=self._settings.headers(),
            timeout=timeout,
            transport=transport,
        )
        self.functions = AsyncFunctions(self._send, timeout)
        self.agents = AsyncAgents(self._send, timeout)
        self.batches = AsyncBatches(self._send)
        self.executions = AsyncExecutions(self._send)
        self.chats = AsyncChats(self._send)
        self.auth = AsyncAuth(self._send)

    @property
    def base_url(self) -> str:
        return self._settings.base_url

    async def close(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncSinasClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _send(self, call: Call) -> Any:
        attempt = 0
        while True:
            try:
                response = await self._http.send(call.build(self._http))
            except httpx.TransportError as exc:
                if not should_retry(call, attempt, self._settings.max_retries, None):
                    raise SinasConnectionError(f"{call.method} {call.path}: {exc}") from exc
                await asyncio.sleep(backoff(attempt))
            else:
                if not should_retry(
                    call, attempt, self._settings.max_retries, response.status_code
                ):
                    return decode(response)
                await asyncio.sleep(backoff(attempt, response))
            attempt += 1


class AsyncFunctions:
    """Run functions: ``client.functions``."""

    def __init__(self, send: Send, request_timeout: float) -> None:
        self._send = send
        self._request_timeout = request_timeout

    async def enqueue(
        self,
        namespace: str,
        name: str,
        input: Mapping[str, Any] | None = None,
        *,
        trigger_id: str | None = None,
        delay_seconds: int | None = None,
        callback_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Enqueue one execution; returns ``{"execution_id", "status": "queued"}``.

        With ``idempotency_key`` a retry answers the original execution (and the SDK may
        retry it on connection errors itself).
        """
        call = _calls.enqueue_function(
            namespace,
            name,
            input,
            trigger_id=trigger_id,
            delay_seconds=delay_seconds,
            callback_url=callback_url,
            idempotency_key=idempotency_key,
        )
        result: dict[str, Any] = await self._send(call)
        return result

    async def execute(
        self,
        namespace: str,
        name: str,
        input: Mapping[str, Any] | None = None,
        *,
        timeout: int | None = None,
        trigger_id: str | None = None,
    ) -> dict[str, Any]:
        """Run and wait up to ``timeout`` s: ``{"status", "execution_id", "result", "error"}``."""
        call = _calls.execute_function(
            namespace,
            name,
            input,
            timeout=timeout,
            trigger_id=trigger_id,
            request_timeout=self._request_timeout,
        )
        result: dict[str, Any] = await self._send(call)
        return result

    async def submit_batch(
        self,
        namespace: str,
        name: str,
        inputs: Sequence[Mapping[str, Any]],
        *,
        trigger_id_prefix: str | None = None,
        delay_seconds: int | None = None,
        callback_url: str | None = None,
        batch_callback_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Submit one batch; returns ``{"batch_id", "execution_ids", "total", "status"}``.

        ``callback_url`` receives one callback per child, ``batch_callback_url`` one summary.
        """
        call = _calls.submit_function_batch(
            namespace,
            name,
            inputs,
            trigger_id_prefix=trigger_id_prefix,
            delay_seconds=delay_seconds,
            callback_url=callback_url,
            batch_callback_url=batch_callback_url,
            idempotency_key=idempotency_key,
        )
        result: dict[str, Any] = await self._send(call)
        return result


class AsyncAgents:
    """Run agents: ``client.agents``."""

    def __init__(self, send: Send, request_timeout: float) -> None:
        self._send = send
        self._request_timeout = request_timeout

    async def enqueue(
        self,
        namespace: str,
        name: str,
        message: str | None = None,
        input: Mapping[str, Any] | None = None,
        *,
        trigger_id: str | None = None,
        delay_seconds: int | None = None,
        callback_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """One run in a fresh chat; returns ``{"execution_id", "chat_id", "status"}``."""
        call = _calls.enqueue_agent(
            namespace,
            name,
            message,
            input,
            trigger_id=trigger_id,
            delay_seconds=delay_seconds,
            callback_url=callback_url,
            idempotency_key=idempotency_key,
        )
        result: dict[str, Any] = await self._send(call)
        return result

    async def invoke(
        self,
        namespace: str,
        name: str,
        message: str | None = None,
        input: Mapping[str, Any] | None = None,
        *,
        timeout: int | None = None,
    ) -> dict[str, Any]:
        """Run and wait: ``{"reply", "chat_id", "execution_id", "usage"}``.

        Raises SinasAPIError with status 504 when the run outlasts ``timeout`` (it goes on),
        502 when it failed.
        """
        call = _calls.invoke_agent(
            namespace, name, message, input, timeout=timeout, request_timeout=self._request_timeout
        )
        result: dict[str, Any] = await self._send(call)
        return result

    async def submit_batch(
        self,
        namespace: str,
        name: str,
        inputs: Sequence[Mapping[str, Any]],
        *,
        trigger_id_prefix: str | None = None,
        delay_seconds: int | None = None,
        callback_url: str | None = None,
        batch_callback_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Runs in fresh chats, each input ``{"input_variables", "message"}``.

        Returns ``{"batch_id", "execution_ids", "chat_ids", "total", "status"}``.
        """
        call = _calls.submit_agent_batch(
            namespace,
            name,
            inputs,
            trigger_id_prefix=trigger_id_prefix,
            delay_seconds=delay_seconds,
            callback_url=callback_url,
            batch_callback_url=batch_callback_url,
            idempotency_key=idempotency_key,
        )
        result: dict[str, Any] = await self._send(call)
        return result


class AsyncBatches:
    """Follow and cancel batches: ``client.batches``."""

    def __init__(self, send: Send) -> None:
        self._send = send

    async def get(self, batch_id: str) -> dict[str, Any]:
        """The aggregate: counts, ``status``, times and the batch callback's outcome."""
        result: dict[str, Any] = await self._send(_calls.get_batch(batch_id))
        return result

    async def list(self, *, limit: int = 100, offset: int = 0) -> Documents:
        """The caller's batches, newest first."""
        result: Documents = await self._send(_calls.list_batches(limit=limit, offset=offset))
        return result

    async def list_executions(
        self, batch_id: str, *, status: str | None = None, limit: int = 100, offset: int = 0
    ) -> Documents:
        """One page of children in batch order, as a list (``status`` in either case)."""
        page = await self._send(
            _calls.list_batch_executions(batch_id, status=status, limit=limit, offset=offset)
        )
        executions: Documents = page["executions"]
        return executions

    async def iter_executions(
        self, batch_id: str, *, status: str | None = None, page_size: int = 100
    ) -> AsyncIterator[dict[str, Any]]:
        """Every child in batch order, fetching pages as it goes."""
        offset: int | None = 0
        while offset is not None:
            page = await self._send(
                _calls.list_batch_executions(
                    batch_id, status=status, limit=page_size, offset=offset
                )
            )
            for execution in page["executions"]:
                yield execution
            offset = page.get("next_offset")

    async def cancel(self, batch_id: str) -> dict[str, Any]:
        """Cancel the children not yet running: ``{"batch_id", "status", "cancelled_children"}``."""
        result: dict[str, Any] = await self._send(_calls.cancel_batch(batch_id))
        return result

    async def wait(
        self, batch_id: str, timeout: float = 300.0, *, poll_interval: float = 1.0
    ) -> dict[str, Any]:
        """Poll until the batch finishes; its final aggregate. SinasTimeoutError past timeout."""
        deadline = time.monotonic() + timeout
        while True:
            document = await self.get(batch_id)
            if _calls.batch_finished(document):
                return document
            if time.monotonic() >= deadline:
                raise SinasTimeoutError(f"batch {batch_id} still {document.get('status')}")
            await asyncio.sleep(poll_interval)


class AsyncExecutions:
    """Read and steer executions: ``client.executions``."""

    def __init__(self, send: Send) -> None:
        self._send = send

    async def get(self, execution_id: str) -> dict[str, Any]:
        """The execution document (``status`` upper-case: PENDING, RUNNING, COMPLETED, ...)."""
        result: dict[str, Any] = await self._send(_calls.get_execution(execution_id))
        return result

    async def list(
        self,
        function_name: str | None = None,
        status: str | None = None,
        skip: int | None = None,
        limit: int = 100,
        *,
        trigger_id: str | None = None,
        batch_id: str | None = None,
        offset: int = 0,
    ) -> Documents:
        """Executions newest first; ``skip`` is upstream's name for ``offset``."""
        call = _calls.list_executions(
            function_name=function_name,
            status=status,
            trigger_id=trigger_id,
            batch_id=batch_id,
            limit=limit,
            offset=_calls.offset_of(skip, offset),
        )
        result: Documents = await self._send(call)
        return result

    async def wait(
        self, execution_id: str, timeout: float = 300.0, *, poll_interval: float = 0.5
    ) -> dict[str, Any]:
        """Poll until the execution finishes or awaits input. SinasTimeoutError past timeout."""
        deadline = time.monotonic() + timeout
        while True:
            document = await self.get(execution_id)
            if _calls.execution_finished(document):
                return document
            if time.monotonic() >= deadline:
                raise SinasTimeoutError(f"execution {execution_id} still {document['status']}")
            await asyncio.sleep(poll_interval)

    async def continue_execution(self, execution_id: str, input: Any) -> dict[str, Any]:
        """Answer a paused ``input()``; the resumed execution document."""
        result: dict[str, Any] = await self._send(_calls.continue_execution(execution_id, input))
        return result

    async def cancel(self, execution_id: str) -> dict[str, Any]:
        """Cancel an execution that has not started; ``{"execution_id", "cancelled", ...}``."""
        result: dict[str, Any] = await self._send(_calls.cancel_execution(execution_id))
        return result


class AsyncChats:
    """Agent transcripts: ``client.chats``."""

    def __init__(self, send: Send) -> None:
        self._send = send

    async def get(self, chat_id: str) -> dict[str, Any]:
        """One chat with its ordered ``messages``."""
        result: dict[str, Any] = await self._send(_calls.get_chat(chat_id))
        return result

    async def list(self, *, limit: int = 100, offset: int = 0) -> Documents:
        """The caller's chats, newest first."""
        result: Documents = await self._send(_calls.list_chats(limit=limit, offset=offset))
        return result


class AsyncAuth:
    """Who am I: ``client.auth``."""

    def __init__(self, send: Send) -> None:
        self._send = send

    async def get_me(self) -> dict[str, Any]:
        """``{"id", "email", "roles", "created_at", "last_login_at"}``."""
        result: dict[str, Any] = await self._send(_calls.get_me())
        return result
