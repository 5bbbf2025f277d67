"""Claiming ahead only while every held execution's function version is known to run short,
and only as deep as should start within the wait bound."""

from __future__ import annotations

from sinas_executor.prefetch import PrefetchGate

QUICK = ("fn-quick", 1)
MEDIUM = ("fn-medium", 1)
SLOW = ("fn-slow", 1)


def gate() -> PrefetchGate:
    # 8 slots, what is claimed ahead should start within 0.25 s.
    gate = PrefetchGate(depth=256, max_run_seconds=0.25, slots=8, max_wait_seconds=0.25)
    gate.observe(QUICK, 0.002)
    gate.observe(MEDIUM, 0.1)
    gate.observe(SLOW, 3.0)
    return gate


def test_known_short_runs_are_claimed_ahead_up_to_the_depth() -> None:
    # 8 slots x 0.25 s / 2 ms = 1,000 would start in time: the depth caps it.
    assert gate().depth([QUICK, QUICK]) == 256


def test_the_slowest_held_version_sets_how_many_would_start_in_time() -> None:
    # 8 slots x 0.25 s / 0.1 s: 20 start within the wait bound.
    assert gate().depth([QUICK, MEDIUM]) == 20


def test_a_slow_unknown_or_non_function_run_held_stops_claiming_ahead() -> None:
    assert gate().depth([QUICK, SLOW]) == 0
    assert gate().depth([QUICK, ("fn-new", 1)]) == 0
    # A new version of a quick function is not known to be quick.
    assert gate().depth([("fn-quick", 2)]) == 0
    assert gate().depth([QUICK, None]) == 0


def test_nothing_held_means_nothing_is_known_about_what_comes_next() -> None:
    assert gate().depth([]) == 0


def test_a_version_that_slows_down_is_claimed_ahead_less_then_not_at_all() -> None:
    slowing = gate()
    depths = []
    for _ in range(30):
        slowing.observe(QUICK, 2.0)
        depths.append(slowing.depth([QUICK]))
    assert depths == sorted(depths, reverse=True)
    assert depths[0] < 256 and depths[-1] == 0


def test_depth_zero_turns_it_off() -> None:
    off = PrefetchGate(depth=0, max_run_seconds=0.25, slots=8, max_wait_seconds=0.25)
    off.observe(QUICK, 0.001)
    assert off.depth([QUICK]) == 0
