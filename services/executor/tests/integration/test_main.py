"""`python -m sinas_executor` starts, serves health, and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sinas_common.jobstream import ensure_job_stream
from sinas_common.nats_connect import connect_nats
from sinas_common.settings import NatsSettings
from sinas_devstack.pytest_plugin import NatsSettingsAs


def _wait_for(path: Path, text: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while text not in path.read_text():
        assert process.poll() is None, path.read_text()
        assert time.monotonic() < deadline, path.read_text()
        time.sleep(0.1)


async def _create_job_stream(settings: NatsSettings) -> None:
    client = await connect_nats(settings, name="test-scheduler")
    await ensure_job_stream(client.jetstream(), settings)
    await client.close()


def test_starts_and_stops_on_sigterm(
    nats_settings: NatsSettings,
    nats_settings_as: NatsSettingsAs,
    internal_pki: dict[str, dict[str, str]],
    tmp_path: Path,
) -> None:
    # The scheduler's user creates the stream the executor's may only consume from.
    asyncio.run(_create_job_stream(nats_settings))
    executor = nats_settings_as("executor")
    log = tmp_path / "executor.log"
    env = {
        **os.environ,
        **internal_pki["executor"],
        "NATS_URL": executor.url,
        "NATS_STREAM_PREFIX": executor.stream_prefix,
        "NATS_USER": executor.user,
        "NATS_PASSWORD": executor.password.get_secret_value(),
        "EXECUTOR_GRPC_BIND": "127.0.0.1:0",
        "SCHEDULER_ADDR": "127.0.0.1:1",
        "SHUTDOWN_GRACE_SECONDS": "5",
    }
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "sinas_executor"], env=env, stderr=sink, stdout=sink
        )
        try:
            _wait_for(log, '"executor started"', process)
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=60) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert '"executor stopped"' in log.read_text()


def test_bad_setting_stops_the_start(tmp_path: Path) -> None:
    env = {**os.environ, "EXECUTOR_CONCURRENCY": "0"}
    result = subprocess.run(
        [sys.executable, "-m", "sinas_executor"], env=env, capture_output=True, timeout=60
    )
    assert result.returncode != 0
    assert b"EXECUTOR_CONCURRENCY" in result.stderr
