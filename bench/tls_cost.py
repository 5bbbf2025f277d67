"""What internal mutual TLS costs: the drain phase with `INTERNAL_TLS=mtls` and with `off`.

Pairs of repetitions, each pair running both modes back to back in alternating order (so a
drifting host does not favour one), each repetition on a fresh stack, database and NATS
server, exactly as `ours.py` runs its drain: 10 batches of 1,000 no-op jobs stored with no
executor, then one executor starts. The figure is the median drain rate per mode and the
cost of TLS as 1 - mtls / off.

    python bench/run.py --tls-cost [--repeat N] [--quick]
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass

from load import Gateway
from ours import Environment, Repetition, Sizes
from rows import Rows

logger = logging.getLogger(__name__)

MODES = ("mtls", "off")


class DrainRepetition(Repetition):
    """Only the drain phase of `ours.py`, with internal TLS in the given mode."""

    def __init__(self, env: Environment, sizes: Sizes, number: int, *, mode: str) -> None:
        super().__init__(env, sizes, number)
        for settings in self.stack.config.role_env.values():
            settings["INTERNAL_TLS"] = mode

    async def _phases(self) -> None:
        gateway = Gateway(self.stack.gateway_url, self.stack.config.admin_key)
        rows = await Rows.connect(self.stack.config.database_url)
        try:
            await gateway.create_noop("drain")
            await self._drain(gateway, rows)
        finally:
            await gateway.close()
            await rows.close()

    def _service_memory(self) -> None:
        """Not a figure of this comparison."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsCost:
    drains: dict[str, list[float]]

    def median(self, mode: str) -> float:
        return statistics.median(self.drains[mode])

    @property
    def cost(self) -> float:
        """The share of drain throughput that mutual TLS takes (negative: none measurable)."""
        return 1.0 - self.median("mtls") / self.median("off")

    def render(self) -> str:
        lines = [
            "| internal TLS | drain jobs/s, median | each repetition |",
            "|---|---|---|",
        ]
        for mode in MODES:
            each = ", ".join(f"{rate:,.0f}" for rate in self.drains[mode])
            lines.append(f"| {mode} | {self.median(mode):,.0f} | {each} |")
        lines.append(f"\nmutual TLS costs {100 * self.cost:.1f}% of drain throughput")
        return "\n".join(lines)


def measure_tls_cost(env: Environment, sizes: Sizes, pairs: int) -> TlsCost:
    drains: dict[str, list[float]] = {mode: [] for mode in MODES}
    number = 0
    for pair in range(pairs):
        # mtls first in even pairs, off first in odd ones.
        order = MODES if pair % 2 == 0 else tuple(reversed(MODES))
        for mode in order:
            repetition = DrainRepetition(env, sizes, number, mode=mode)
            figures = repetition.run()
            number += 1
            drains[mode].append(figures["drain_per_s"])
            logger.info(
                "drain", extra={"mode": mode, "pair": pair + 1, "per_s": figures["drain_per_s"]}
            )
    return TlsCost(drains=drains)


def run_tls_cost(env: Environment, sizes: Sizes, pairs: int) -> str:
    return measure_tls_cost(env, sizes, pairs).render()
