"""The client channel that follows its certificate files: when it looks, what it replaces."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sinas_common.reloading_channel import ReloadingChannel
from sinas_common.tls import TlsFiles


class RecordingChannel:
    """Stands in for a grpc.aio channel: counts calls per method, records closes."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.calls: list[str] = []
        self.closed_with: list[float | None] = []

    def unary_unary(self, method: str, **_: Any) -> Any:
        def invoke(request: object, **__: Any) -> tuple[int, str]:
            self.calls.append(method)
            return self.number, method

        return invoke

    async def close(self, grace: float | None = None) -> None:
        self.closed_with.append(grace)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def files(tmp_path: Path) -> TlsFiles:
    for name in ("ca.crt", "tls.crt", "tls.key"):
        (tmp_path / name).write_text("-----BEGIN one-----\n")
    return TlsFiles(ca=tmp_path / "ca.crt", cert=tmp_path / "tls.crt", key=tmp_path / "tls.key")


async def test_files_are_looked_at_once_per_interval_and_a_change_makes_a_new_channel(
    tmp_path: Path,
) -> None:
    made: list[RecordingChannel] = []

    def factory() -> Any:
        made.append(RecordingChannel(len(made)))
        return made[-1]

    clock = Clock()
    channel = ReloadingChannel(factory, files(tmp_path), check_seconds=10, clock=clock)
    method = channel.unary_unary("/svc/Method")

    assert method(b"") == (0, "/svc/Method")
    (tmp_path / "tls.crt").write_text("-----BEGIN two, and longer-----\n")
    clock.now = 9.0
    assert method(b"") == (0, "/svc/Method")  # not looked at yet
    clock.now = 10.0
    assert method(b"") == (1, "/svc/Method")  # renewed: a new channel
    clock.now = 30.0
    assert method(b"") == (1, "/svc/Method")  # unchanged since: the same one
    assert len(made) == 2

    await channel.close()
    assert made[0].closed_with and made[1].closed_with == [None]


async def test_files_caught_half_swapped_keep_the_loaded_channel(tmp_path: Path) -> None:
    made: list[RecordingChannel] = []

    def factory() -> Any:
        if made:
            raise ValueError("INTERNAL_TLS_KEY_FILE is not a PEM file")
        made.append(RecordingChannel(0))
        return made[-1]

    clock = Clock()
    channel = ReloadingChannel(factory, files(tmp_path), check_seconds=1, clock=clock)
    (tmp_path / "tls.key").write_text("half written")
    clock.now = 5.0

    assert channel.unary_unary("/svc/Method")(b"") == (0, "/svc/Method")
    await channel.close()
