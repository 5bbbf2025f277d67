"""Runs one peer's benchmark script in its own virtualenv and returns its figures.

Smoke check by hand (not part of `make test`), from the repository root:

    .venv/bin/python bench/peers/runner.py --peer arq [--peer celery ...] [--quick]

It installs the peer virtualenvs on first use (under .bench/venvs), starts an embedded
PostgreSQL (sinas_devstack) and a Redis, gives each peer a fresh database or an empty Redis,
and prints each peer's figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

PEERS = ("celery", "arq", "procrastinate")
_SCRIPTS = {name: Path(__file__).resolve().parent / f"{name}_bench.py" for name in PEERS}


class PeerRunError(RuntimeError):
    """A peer script failed or printed no figures; the message carries its stderr."""


def run_peer(
    name: str,
    python: Path,
    *,
    redis_url: str | None,
    database_url: str | None,
    work_dir: Path,
    timeout: float,
    quick: bool = False,
) -> dict[str, float]:
    """Runs `<name>_bench.py` with `python`; returns the JSON figures it prints last.

    celery and arq need `redis_url` (a Redis of their own: the script empties it first),
    procrastinate needs `database_url` (libpq URL of a fresh database). `quick` runs a tenth
    of the counts. Progress lines go to `work_dir/<name>.stderr.log` as they come.
    """
    if name not in _SCRIPTS:
        raise ValueError(f"unknown peer {name!r}; expected one of {PEERS}")
    work_dir.mkdir(parents=True, exist_ok=True)
    # absolute(), not resolve(): the venv's python is a symlink that must stay inside the venv.
    command = [str(python.absolute()), str(_SCRIPTS[name]), "--work-dir", str(work_dir.absolute())]
    if name == "procrastinate":
        if database_url is None:
            raise ValueError("procrastinate needs database_url")
        command += ["--database-url", database_url]
    else:
        if redis_url is None:
            raise ValueError(f"{name} needs redis_url")
        command += ["--redis-url", redis_url]
    if quick:
        command.append("--quick")
    logger.info("running peer", extra={"peer": name})
    log_path = work_dir / f"{name}.stderr.log"
    with log_path.open("w") as log:
        # stderr goes to the file as it comes, so a long run can be followed with `tail -f`.
        try:
            done = subprocess.run(
                command,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                timeout=timeout,
                cwd=str(work_dir),
            )
        except subprocess.TimeoutExpired as error:
            # The script's workers notice their parent is gone and stop themselves.
            raise PeerRunError(f"{name} ran past {timeout} s:\n{log_path.read_text()}") from error
    stderr = log_path.read_text()
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise PeerRunError(f"{name} exited with {done.returncode}:\n{stderr}")
    try:
        figures = json.loads(lines[-1])
    except json.JSONDecodeError as error:
        raise PeerRunError(f"{name} printed no figures:\n{done.stdout}\n{stderr}") from error
    return {key: float(value) for key, value in figures.items()}


def _smoke(peers: list[str], quick: bool, timeout: float) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from peers.environments import ensure_peer_environments, start_redis
    from sinas_devstack.embedded import EmbeddedPostgres
    from sinas_devstack.supervisor import ensure_database

    pythons = ensure_peer_environments()
    with tempfile.TemporaryDirectory(prefix="peers-") as scratch:
        root = Path(scratch)
        root.chmod(0o755)  # pgserver's own system user must reach its data folder
        postgres = EmbeddedPostgres(root / "pg", ephemeral=True)
        admin_url = postgres.start()
        failed = 0
        try:
            for name in peers:
                redis = start_redis(root / f"redis-{name}") if name != "procrastinate" else None
                database_url = None
                if name == "procrastinate":
                    url = ensure_database(admin_url, f"peer_{secrets.token_hex(4)}")
                    database_url = url.replace("postgresql+psycopg://", "postgresql://", 1)
                try:
                    figures = run_peer(
                        name,
                        pythons[name],
                        redis_url=redis.url if redis else None,
                        database_url=database_url,
                        work_dir=root / name,
                        timeout=timeout,
                        quick=quick,
                    )
                    print(json.dumps({name: figures}, sort_keys=True), flush=True)
                except PeerRunError as error:
                    failed += 1
                    print(f"{name} failed: {error}", file=sys.stderr, flush=True)
                finally:
                    if redis is not None:
                        redis.stop()
        finally:
            postgres.stop()
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--peer", action="append", choices=PEERS, help="repeatable; all if none")
    parser.add_argument("--quick", action="store_true", help="a tenth of the counts")
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    return _smoke(args.peer or list(PEERS), args.quick, args.timeout)


if __name__ == "__main__":
    raise SystemExit(main())
