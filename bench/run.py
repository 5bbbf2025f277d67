"""`make bench`: our system and its peers (Celery, arq, procrastinate) on this machine, one table.

One embedded PostgreSQL serves the whole run; every system gets a fresh database per
repetition (procrastinate and the floor run on the same server), each repetition of ours and
of the floor a NATS server of its own, and repetitions interleave the systems so that a noisy
minute does not land on one of them only. Peers run in virtualenvs of their own through
`bench/peers`; Celery and arq get a fresh Redis per repetition. The floor (`floor.py`) is our
shape with none of our logic: the reference for what these hops cost on this machine.

    python bench/run.py [--repeat N] [--only ours|floor|celery|arq|procrastinate ...] [--quick]
    python bench/run.py --scale-out     # only the 1 vs 2 executor figure (scale_out.py)
    python bench/run.py --tls-cost      # only drains with internal mTLS on and off (tls_cost.py)

Ours also times worker start (fork to ready) for each sandbox network (`worker_start.py`).

Results: bench/results/<YYYY-MM-DD>.json and .md; the table is also printed.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from floor import FloorSizes, run_floor
from ours import Environment, Sizes, run_ours
from report import FLOOR, OURS, PEERS, render, write_results
from rows import libpq_url
from worker_start import measure_worker_start

from sinas_common.logs import configure_logging
from sinas_devstack.callback_receiver import CallbackReceiver, ReceiverCertificates
from sinas_devstack.embedded import EmbeddedPostgres
from sinas_devstack.supervisor import ensure_database

logger = logging.getLogger("bench")

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
PEER_TIMEOUT_SECONDS = 3600.0

PeerRunner = Callable[[str, int], dict[str, float]]


def parse_options(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="repetitions; medians are shown")
    parser.add_argument(
        "--only",
        action="append",
        choices=(OURS, FLOOR, *PEERS),
        help="run only this system (repeatable); all of them by default",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smaller counts everywhere: a fast check"
    )
    parser.add_argument(
        "--scale-out", action="store_true", help="only the 1 vs 2 executor figure (scale_out.py)"
    )
    parser.add_argument(
        "--tls-cost",
        action="store_true",
        help="only the drain with internal mTLS on and off, --repeat pairs (tls_cost.py)",
    )
    parser.add_argument(
        "--results", type=Path, default=BENCH_DIR / "results", help="where results are written"
    )
    return parser.parse_args(argv)


def peer_runner(admin_url: str, work_dir: Path, *, quick: bool) -> PeerRunner:
    """Imported here, not at the top, so that `--only ours` needs nothing from bench/peers."""
    from peers.environments import ensure_peer_environments, start_redis
    from peers.runner import run_peer

    pythons = ensure_peer_environments(REPO / ".bench" / "venvs")

    def run(name: str, number: int) -> dict[str, float]:
        peer_dir = work_dir / f"{name}-{number}"
        peer_dir.mkdir(parents=True, exist_ok=True)
        database_url = redis = None
        if name == "procrastinate":
            database_url = libpq_url(ensure_database(admin_url, f"bench_{name}_{number}"))
        else:
            redis = start_redis(peer_dir / "redis")
        try:
            return run_peer(
                name,
                pythons[name],
                redis_url=None if redis is None else redis.url,
                database_url=database_url,
                work_dir=peer_dir,
                timeout=PEER_TIMEOUT_SECONDS,
                quick=quick,
            )
        finally:
            if redis is not None:
                redis.stop()

    return run


@contextlib.contextmanager
def bench_environment() -> Iterator[Environment]:
    """One embedded PostgreSQL and one callback receiver for the whole run; the work folder is
    removed after a run that succeeded and kept (and logged) after one that failed."""
    root = Path(tempfile.mkdtemp(prefix="sinas-bench-"))
    # The embedded PostgreSQL may run as its own system user, which must reach its folder.
    root.chmod(0o755)
    postgres = EmbeddedPostgres(root / "postgres", ephemeral=True)
    certificates = ReceiverCertificates.create(root / "certs")
    receiver = CallbackReceiver(certificates).start()
    try:
        yield Environment(
            admin_url=postgres.start(),
            work_dir=root,
            certificates=certificates,
            receiver=receiver,
        )
    except BaseException:
        logger.error("benchmark failed; logs kept", extra={"work_dir": str(root)})
        raise
    finally:
        receiver.stop()
        postgres.stop()
    shutil.rmtree(root, ignore_errors=True)


def run_tls_comparison(options: argparse.Namespace) -> None:
    from tls_cost import run_tls_cost

    sizes = Sizes.quick() if options.quick else Sizes()
    with bench_environment() as env:
        sys.stdout.write(run_tls_cost(env, sizes, options.repeat) + "\n")


def run_all(options: argparse.Namespace) -> dict[str, list[dict[str, float]]]:
    systems = [s for s in (OURS, FLOOR, *PEERS) if options.only is None or s in options.only]
    sizes = Sizes.quick() if options.quick else Sizes()
    runs: dict[str, list[dict[str, float]]] = {system: [] for system in systems}
    with bench_environment() as env:
        admin_url, root = env.admin_url, env.work_dir
        peers = (
            peer_runner(admin_url, root, quick=options.quick) if set(systems) & set(PEERS) else None
        )
        floor_sizes = FloorSizes.quick() if options.quick else FloorSizes()
        for number in range(options.repeat):
            for system in systems:
                logger.info("running", extra={"system": system, "repetition": number + 1})
                if system == OURS:
                    figures = run_ours(env, sizes, number)
                    # Worker start (fork to ready) for each sandbox network, on the same pool
                    # code as the executor's: the target is the `isolated` p50.
                    figures.update(measure_worker_start(20 if options.quick else 100))
                elif system == FLOOR:
                    figures = run_floor(admin_url, root, number, floor_sizes)
                else:
                    assert peers is not None
                    figures = peers(system, number)
                logger.info("figures", extra={"system": system, "figures": figures})
                runs[system].append(figures)
    return runs


def main(argv: list[str] | None = None) -> None:
    configure_logging("bench")
    options = parse_options(argv)
    if options.scale_out:
        from scale_out import main as scale_out

        scale_out()
        return
    if options.tls_cost:
        run_tls_comparison(options)
        return
    runs = run_all(options)
    settings = {
        "repeat": options.repeat,
        "only": options.only or [OURS, FLOOR, *PEERS],
        "quick": options.quick,
    }
    json_path, md_path = write_results(options.results, runs, settings)
    sys.stdout.write(render(runs, settings) + "\n")
    sys.stdout.write(f"Written: {json_path} and {md_path}\n")


if __name__ == "__main__":
    main()
