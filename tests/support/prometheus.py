"""A real Prometheus (Debian's /usr/bin/prometheus) for tests: started on a free
loopback port with a config the test writes, queried over its HTTP API, stopped by pid."""

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from kube2redis.localcluster.processes import free_port
from tests.support.ci import unavailable

PROMETHEUS = shutil.which("prometheus")


class PromError(AssertionError):
    """Prometheus answered a query with an error."""


class Prometheus:
    def __init__(self, directory: Path, config: dict[str, Any]) -> None:
        if not PROMETHEUS:
            unavailable("prometheus (apt-get install prometheus)")
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log = directory / "prometheus.log"
        config_file = directory / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config))
        argv = [
            str(PROMETHEUS),
            f"--config.file={config_file}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--storage.tsdb.retention.time=1h",
        ]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout_s: float = 30.0) -> "Prometheus":
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self._url("/-/ready"), timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(
            f"prometheus not ready in {timeout_s}s:\n{self.log.read_text()[-3000:]}"
        )

    def api(self, path: str, **params: str | float) -> Any:
        """The ``data`` of an API answer; PromError with Prometheus's words if it failed."""
        query = urllib.parse.urlencode({k: str(v) for k, v in params.items()})
        try:
            with urllib.request.urlopen(self._url(f"/api/v1/{path}?{query}"), timeout=30) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
        if body.get("status") != "success":
            raise PromError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def _url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"
