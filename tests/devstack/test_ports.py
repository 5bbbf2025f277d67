"""Ports for a stack's services: each handed out once, even when the kernel repeats itself."""

from __future__ import annotations

import socket
from collections.abc import Iterator

from sinas_devstack.embedded import (
    LOWEST_CHOSEN_PORT,
    PortAllocator,
    ephemeral_range_start,
    free_port,
)


def test_a_port_the_kernel_picks_again_is_not_handed_out_twice() -> None:
    picks: Iterator[int] = iter([5001, 5001, 5002, 5001, 5003])
    allocate = PortAllocator(probe=lambda: next(picks))
    assert [allocate(), allocate(), allocate()] == [5001, 5002, 5003]


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", ports[-1]))


def test_free_ports_lie_below_the_ephemeral_range() -> None:
    # A port from the ephemeral range can become an outgoing connection's source port before
    # the service told to listen on it binds (the JS SDK's callback receiver once lost its
    # port that way).
    start = ephemeral_range_start()
    assert all(LOWEST_CHOSEN_PORT <= free_port() < start for _ in range(50))
