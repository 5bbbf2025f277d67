"""Claiming ahead only while every held execution's function version is known to run short."""

from __future__ import annotations

from sinas_executor.prefetch import PrefetchGate

QUICK = ("fn-quick", 1)
SLOW = ("fn-slow", 1)


def gate() -> PrefetchGate:
    gate = PrefetchGate(depth=64, max_run_seconds=0.25)
    gate.observe(QUICK, 0.002)
    gate.observe(SLOW, 3.0)
    return gate


def test_known_short_runs_are_claimed_ahead() -> None:
    assert gate().depth([QUICK, QUICK]) == 64


def test_a_slow_unknown_or_non_function_run_held_stops_claiming_ahead() -> None:
    assert gate().depth([QUICK, SLOW]) == 0
    assert gate().depth([QUICK, ("fn-new", 1)]) == 0
    # A new version of a quick function is not known to be quick.
    assert gate().depth([("fn-quick", 2)]) == 0
    assert gate().depth([QUICK, None]) == 0


def test_nothing_held_means_nothing_is_known_about_what_comes_next() -> None:
    assert gate().depth([]) == 0


def test_a_version_that_slows_down_stops_being_claimed_ahead() -> None:
    slowing = gate()
    for _ in range(30):
        slowing.observe(QUICK, 2.0)
    assert slowing.depth([QUICK]) == 0


def test_depth_zero_turns_it_off() -> None:
    off = PrefetchGate(depth=0, max_run_seconds=0.25)
    off.observe(QUICK, 0.001)
    assert off.depth([QUICK]) == 0
