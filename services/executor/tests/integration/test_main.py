"""`python -m sinas_executor` starts, serves health, and stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sinas_common.settings import NatsSettings


def _wait_for(path: Path, text: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while text not in path.read_text():
        assert process.poll() is None, path.read_text()
        assert time.monotonic() < deadline, path.read_text()
        time.sleep(0.1)


def test_starts_and_stops_on_sigterm(nats_settings: NatsSettings, tmp_path: Path) -> None:
    log = tmp_path / "executor.log"
    env = {
        **os.environ,
        "NATS_URL": nats_settings.url,
        "NATS_STREAM_PREFIX": nats_settings.stream_prefix,
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
