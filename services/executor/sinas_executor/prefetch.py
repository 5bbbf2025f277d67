"""When to claim executions ahead of free slots: only while every execution held belongs to a
function version whose recent runs are short, and only as many as should start soon.

A claimed execution shows RUNNING (it can no longer be cancelled as queued) and its token ages
while it waits for a slot, so claiming ahead is only worth it, and only harmless, for short
runs. Durations are kept per function version, so a history of quick functions never lets a
slow one be claimed ahead; one whose duration is unknown is never claimed ahead of it. The
depth is also capped so that, at the slowest held version's pace, what is claimed ahead starts
within `max_wait_seconds`: deep for no-op runs (bigger claims, fewer round trips), shallow for
runs of a tenth of a second.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

# (function id, version); None for work that is not a function run (agent runs).
RunKey = tuple[str, int]

# Weight of the newest run in each version's moving average of run durations.
SMOOTHING = 0.1
# Versions remembered; the least recently run is forgotten first.
REMEMBERED_VERSIONS = 1024


class PrefetchGate:
    def __init__(
        self, *, depth: int, max_run_seconds: float, slots: int, max_wait_seconds: float
    ) -> None:
        self._depth = depth
        self._max_run_seconds = max_run_seconds
        self._slots = slots
        self._max_wait_seconds = max_wait_seconds
        self._mean_seconds: OrderedDict[RunKey, float] = OrderedDict()

    def observe(self, key: RunKey | None, seconds: float) -> None:
        """Records how long one run of `key` took."""
        if key is None:
            return
        mean = self._mean_seconds.pop(key, None)
        self._mean_seconds[key] = seconds if mean is None else mean + SMOOTHING * (seconds - mean)
        while len(self._mean_seconds) > REMEMBERED_VERSIONS:
            self._mean_seconds.popitem(last=False)

    def depth(self, held: Iterable[RunKey | None]) -> int:
        """How many executions may be claimed beyond the slots, given those held now."""
        keys = list(held)
        if self._depth == 0 or not keys:
            return 0
        slowest = 0.0
        for key in keys:
            mean = None if key is None else self._mean_seconds.get(key)
            if mean is None or mean > self._max_run_seconds:
                return 0
            slowest = max(slowest, mean)
        if slowest <= 0:
            return self._depth
        return min(self._depth, int(self._slots * self._max_wait_seconds / slowest))
