"""kube2redis processes started by tests, stopped by pid."""

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from kube2redis.localcluster.processes import free_port

KUBE2REDIS = [sys.executable, "-m", "kube2redis"]


class Proc:
    """One `kube2redis ...` process with its log in a file."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.args, self.log = args, log
        self.health_port = free_port()
        full_env = {
            **os.environ,
            "KUBE2REDIS_HEALTH_PORT": str(self.health_port),
            "KUBE2REDIS_HEALTH_HOST": "127.0.0.1",
            "KUBE2REDIS_LOG_FORMAT": "text",
            **(env or {}),
        }
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [*KUBE2REDIS, *args], stdout=out, stderr=subprocess.STDOUT, env=full_env
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def http(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.health_port}{path}", timeout=2
            ) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError as exc:
            return 0, str(exc)

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def kill9(self) -> None:
        self.signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout_s: float = 20.0) -> int:
        """SIGTERM and wait; SIGKILL if it does not exit in time. Returns the exit code."""
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill9()
            return -9

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"process exited early:\n{self.text()[-3000:]}")
            if self.http("/readyz")[0] == 200:
                return
            time.sleep(0.1)
        raise AssertionError(
            f"not ready after {timeout_s}s: {self.http('/readyz')}\n{self.text()[-3000:]}"
        )


def run(
    args: list[str], env: dict[str, str] | None = None, timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run a short kube2redis command to completion."""
    return subprocess.run(
        [*KUBE2REDIS, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout_s,
        check=False,
    )


class ProcFactory:
    """Starts kube2redis processes and stops every one of them (by pid) at the end."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[Proc] = []

    def start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Proc:
        proc = Proc(args, self.directory / f"{name}-{len(self.started)}.log", env)
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.started:
            proc.stop(timeout_s=10)
