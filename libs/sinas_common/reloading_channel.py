"""A client channel that follows its certificate files, so a renewed certificate needs no restart.

grpcio's client credentials are read once, when a channel is made. This channel checks the
service's TLS files at most every `check_seconds` as calls are made; once they changed (a
renewal: cert-manager rewrote the Secret, the kubelet swapped the mounted files), calls go to
a new channel with the new certificate, and the old one closes after a grace period, so calls
already under way finish on it. Stubs made on this channel keep working across the swap.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import grpc

from sinas_common.tls import TlsFiles

logger = logging.getLogger(__name__)

Fingerprint = tuple[tuple[int, int, int], ...]
# How long calls under way on a replaced channel may go on before it closes.
REPLACED_CHANNEL_GRACE_SECONDS = 60.0


class _ReloadingMultiCallable:
    """Stands where a stub keeps a method: each call goes to the channel current at that time."""

    def __init__(self, owner: ReloadingChannel, kind: str, args: tuple[Any, ...], kwargs: Any):
        self._owner = owner
        self._kind = kind
        self._args = args
        self._kwargs = kwargs
        self._bound: tuple[grpc.aio.Channel, Any] | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        channel = self._owner.current()
        if self._bound is None or self._bound[0] is not channel:
            method = getattr(channel, self._kind)(*self._args, **self._kwargs)
            self._bound = (channel, method)
        return self._bound[1](*args, **kwargs)


class ReloadingChannel(grpc.aio.Channel):  # type: ignore[misc]
    """A grpc.aio channel that is made anew from `factory` when the TLS files change."""

    def __init__(
        self,
        factory: Callable[[], grpc.aio.Channel],
        files: TlsFiles,
        *,
        check_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._factory = factory
        self._files = files
        self._check_seconds = check_seconds
        self._clock = clock
        self._channel = factory()
        self._seen: Fingerprint | None = self._fingerprint()
        self._checked_at = clock()
        # Replaced channels still finishing their calls, and the tasks that close them.
        self._replaced: set[grpc.aio.Channel] = set()
        self._closing: set[asyncio.Task[None]] = set()

    def _fingerprint(self) -> Fingerprint | None:
        try:
            return self._files.fingerprint()
        except OSError:
            return None

    def current(self) -> grpc.aio.Channel:
        """The channel to call now: a new one once the files changed and read as valid."""
        now = self._clock()
        if now - self._checked_at < self._check_seconds:
            return self._channel
        self._checked_at = now
        seen = self._fingerprint()
        if seen is None or seen == self._seen:
            return self._channel
        try:
            replacement = self._factory()
        except ValueError:
            # Mid-rotation (one file swapped, not yet the other): keep the loaded certificate.
            logger.warning(
                "internal TLS files unreadable; keeping the loaded certificate",
                extra={"action": "tls_reload_failed"},
            )
            return self._channel
        replaced, self._channel, self._seen = self._channel, replacement, seen
        self._close_later(replaced)
        logger.info("internal TLS client certificate reloaded", extra={"action": "tls_reload"})
        return self._channel

    def _close_later(self, channel: grpc.aio.Channel) -> None:
        self._replaced.add(channel)

        async def close_after_grace() -> None:
            await channel.close(grace=REPLACED_CHANNEL_GRACE_SECONDS)
            self._replaced.discard(channel)

        task = asyncio.get_running_loop().create_task(close_after_grace())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def unary_unary(self, *args: Any, **kwargs: Any) -> Any:
        return _ReloadingMultiCallable(self, "unary_unary", args, kwargs)

    def unary_stream(self, *args: Any, **kwargs: Any) -> Any:
        return _ReloadingMultiCallable(self, "unary_stream", args, kwargs)

    def stream_unary(self, *args: Any, **kwargs: Any) -> Any:
        return _ReloadingMultiCallable(self, "stream_unary", args, kwargs)

    def stream_stream(self, *args: Any, **kwargs: Any) -> Any:
        return _ReloadingMultiCallable(self, "stream_stream", args, kwargs)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return self._channel.get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        await self._channel.wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        await self._channel.channel_ready()

    async def close(self, grace: float | None = None) -> None:
        for task in list(self._closing):
            task.cancel()
        await asyncio.gather(
            self._channel.close(grace), *(channel.close(grace) for channel in self._replaced)
        )
        self._replaced.clear()

    async def __aenter__(self) -> ReloadingChannel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
