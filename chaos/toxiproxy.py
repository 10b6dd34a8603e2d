"""Toxiproxy (github.com/Shopify/toxiproxy/v2, built from the Go module proxy by
`make toxiproxy`): a real TCP fault proxy between the watcher and Redis, and
between the watcher and the API server."""

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from kube2redis.localcluster.processes import free_port

VERSION = "v2.5.0"


def binary() -> Path:
    """Where `make toxiproxy` puts toxiproxy's server (KUBE2REDIS_TOXIPROXY overrides)."""
    configured = os.environ.get("KUBE2REDIS_TOXIPROXY")
    if configured:
        return Path(configured)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "kube2redis" / "toxiproxy" / "server"


class Toxiproxy:
    """One toxiproxy server on loopback, stopped by pid."""

    def __init__(self, log: Path) -> None:
        path = binary()
        if not path.exists():
            raise RuntimeError(f"toxiproxy not built at {path}: run `make toxiproxy`")
        self.port = free_port()
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(path), "-host", "127.0.0.1", "-port", str(self.port)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                self._call("GET", "/version")
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        raise RuntimeError("toxiproxy did not start")

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=data, method=method
        )
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
            is_json = response.headers.get_content_type() == "application/json"
        return json.loads(raw) if is_json and raw.strip() else raw.decode()

    def proxy(self, name: str, upstream_port: int) -> int:
        """A proxy to 127.0.0.1:upstream_port; the port it listens on."""
        listen = free_port()
        self._call(
            "POST",
            "/proxies",
            {
                "name": name,
                "listen": f"127.0.0.1:{listen}",
                "upstream": f"127.0.0.1:{upstream_port}",
                "enabled": True,
            },
        )
        return listen

    def toxic(self, proxy: str, kind: str, attributes: dict[str, int], stream: str) -> None:
        """Add a toxic: latency {latency, jitter}, reset_peer {timeout},
        timeout {timeout} (0: the connection goes silent and stays open)."""
        self._call(
            "POST",
            f"/proxies/{proxy}/toxics",
            {
                "name": f"{kind}-{stream}",
                "type": kind,
                "stream": stream,
                "toxicity": 1.0,
                "attributes": attributes,
            },
        )

    def clear(self, proxy: str) -> None:
        """Remove every toxic of a proxy."""
        for toxic in self._call("GET", f"/proxies/{proxy}/toxics") or []:
            self._call("DELETE", f"/proxies/{proxy}/toxics/{toxic['name']}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
