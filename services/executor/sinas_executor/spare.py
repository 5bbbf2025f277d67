"""The next worker, made ahead: its namespaces and network ready before its run is known.

Most of an isolated worker's start is pasta configuring its network. So once a worker
starts, the pool has the zygote fork the next one up to that point
(`worker.begin_sandbox`); it then waits for the spec of a run and its channel. A spawn made
for the same preparation (uid, network, limits) takes it; any other is forked afresh.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from dataclasses import dataclass
from typing import Any

# The parts of a spawn message that are a run's own: everything else is the preparation.
RUN_FIELDS = frozenset({"op", "id", "slot", "scratch"})
_CLAIM_BUFFER = 1 << 16


def preparation(message: dict[str, Any]) -> dict[str, Any]:
    """What a spare is made for: a spawn message without its run's own fields."""
    return {name: value for name, value in message.items() if name not in RUN_FIELDS}


@dataclass(slots=True, kw_only=True)
class Spare:
    """The zygote's record of its spare: a child waiting on `socket` for its run."""

    pid: int
    socket: socket.socket
    preparation: dict[str, Any]

    def claim(self, spec: dict[str, Any], channel_fd: int) -> bool:
        """Hands the spare its run's spec and channel; False when it is gone."""
        try:
            socket.send_fds(self.socket, [json.dumps(spec).encode()], [channel_fd])
        except OSError:
            return False
        finally:
            self.socket.close()
        return True

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.socket.close()


def channel_pair() -> tuple[socket.socket, socket.socket]:
    """The zygote's end and the spare's end of a spare's claim channel."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def await_claim(ours: socket.socket) -> tuple[dict[str, Any], int] | None:
    """In the spare: its run's spec and channel, or None when the zygote closed its end
    (the spare was discarded, or the zygote ended)."""
    try:
        data, fds, _flags, _address = socket.recv_fds(ours, _CLAIM_BUFFER, 1)
    except OSError:
        return None
    finally:
        ours.close()
    if not data or len(fds) != 1:
        for fd in fds:
            os.close(fd)
        return None
    return json.loads(data), fds[0]
