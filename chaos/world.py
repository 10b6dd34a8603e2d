"""The system under test, all real and on loopback: a local control plane (etcd
without the watch cache, so a compaction means 410), a redis-server with an
append-only file, toxiproxy between the watcher and both of them, one watcher
and N projectors. Every process is started and stopped by pid."""

import signal
from pathlib import Path
from typing import Any

import redis
import yaml

from chaos.toxiproxy import Toxiproxy
from kube2redis.localcluster.cluster import LocalCluster
from projector.scripts import BREAK_CAS_ENV
from tests.procs import Proc
from tests.support.kube import Kube
from tests.support.redis_server import RedisServer

UNREACHABLE_AT_START = "kube2redis: error: API server "

RESOURCES = (
    "jobs.batch.volcano.sh",
    "podgroups.scheduling.volcano.sh",
    "queues.scheduling.volcano.sh",
)
# The smallest bound the CLI takes: an outage under load fills it within seconds.
SPOOL_MAX_BYTES = 1 << 20


class World:
    def __init__(self, workdir: Path, projectors: int, break_cas: bool = False) -> None:
        self.workdir = workdir
        self.projector_count, self.break_cas = projectors, break_cas
        self.cluster = LocalCluster(workdir / "cluster", watch_cache=False)
        self.redis = RedisServer(workdir / "redis")
        self.toxiproxy: Toxiproxy | None = None
        self.watcher: Proc | None = None
        self.projectors: list[Proc] = []
        self.exited: list[tuple[str, int, str]] = []  # unexpected exits: name, code, log tail
        self.killed: set[int] = set()  # pids a fault killed: their exits are expected
        self.restarts_api_unreachable = 0
        self._kube: Kube | None = None
        self._started = 0

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cluster.up()
        self._kube = Kube(self.cluster.kubeconfig, str(self.cluster.bin_dir / "kubectl"))
        self.redis.start()
        self.toxiproxy = Toxiproxy(self.workdir / "toxiproxy.log")
        self.redis_proxy_port = self.toxiproxy.proxy("redis", self.redis.port)
        self.api_proxy_port = self.toxiproxy.proxy("apiserver", self._api_port())
        self._write_proxied_kubeconfig()
        self.start_watcher()
        for _ in range(self.projector_count):
            self.projectors.append(self._projector())
        self.watcher_ready()
        for projector in self.projectors:
            projector.wait_ready(60)

    def stop(self) -> None:
        for proc in [*([self.watcher] if self.watcher else []), *self.projectors]:
            proc.signal(signal.SIGCONT)
            proc.stop(timeout_s=10)
        if self.toxiproxy is not None:
            self.toxiproxy.stop()
        if self.redis.proc is not None and self.redis.proc.poll() is None:
            self.redis.proc.send_signal(signal.SIGCONT)
        self.redis.stop()
        self.cluster.down(purge=False)

    @property
    def kube(self) -> Kube:
        assert self._kube is not None
        return self._kube

    def client(self) -> "redis.Redis":
        return self.redis.client()

    # ---- kube2redis processes -------------------------------------------------------------

    def start_watcher(self) -> None:
        resources = [arg for name in RESOURCES for arg in ("--resource", name)]
        self.watcher = self._proc(
            "watcher",
            [
                "watch",
                *resources,
                "--spool-dir",
                str(self.workdir / "spool"),
                "--spool-max-bytes",
                str(SPOOL_MAX_BYTES),
            ],
            {
                "KUBE2REDIS_REDIS_URL": f"redis://127.0.0.1:{self.redis_proxy_port}/0",
                "KUBE2REDIS_KUBECONFIG": str(self.workdir / "kubeconfig-proxied"),
            },
        )

    def watcher_ready(self) -> None:
        assert self.watcher is not None
        self.watcher.wait_ready(90)

    def restart_projector(self, index: int) -> None:
        self.projectors[index] = self._projector()

    def _projector(self) -> Proc:
        env = {"KUBE2REDIS_REDIS_URL": self.redis.url}
        if self.break_cas:
            env[BREAK_CAS_ENV] = "1"
        return self._proc("projector", ["project"], env)

    def _proc(self, name: str, args: list[str], env: dict[str, str]) -> Proc:
        self._started += 1
        logs = self.workdir / "logs"
        logs.mkdir(exist_ok=True)
        return Proc(
            args, logs / f"{name}-{self._started}.log", {"KUBE2REDIS_LOG_FORMAT": "text", **env}
        )

    def check_processes(self) -> None:
        """Record (and restart, as a supervisor would) a process that exited on its own."""
        if self.watcher is not None and self.watcher.proc.poll() is not None:
            self._exited("watcher", self.watcher)
            self.start_watcher()
        for i, projector in enumerate(self.projectors):
            if projector.proc.poll() is not None:
                self._exited("projector", projector)
                self.restart_projector(i)

    def _exited(self, name: str, proc: Proc) -> None:
        if proc.pid in self.killed:
            return
        tail = proc.text()[-3000:]
        last = tail.strip().splitlines()[-1] if tail.strip() else ""
        if last.startswith(UNREACHABLE_AT_START):
            # By design (DESIGN rule 6): a watcher that cannot reach the API server when
            # it starts says so in one line and exits; its supervisor starts it again.
            self.restarts_api_unreachable += 1
            return
        self.exited.append((name, proc.proc.returncode or 0, tail))

    def kill9(self, proc: Proc) -> None:
        """A fault's kill -9: the exit that follows is expected."""
        self.killed.add(proc.pid)
        proc.signal(signal.SIGCONT)
        proc.kill9()

    def heal_all(self) -> None:
        """Whatever the faults left: every process running, none paused, no toxics,
        Redis taking writes."""
        if self.redis.proc is None or self.redis.proc.poll() is not None:
            self.redis.start(timeout_s=60)
        self.redis.proc.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
        self.client().config_set("maxmemory", 0)
        if self.toxiproxy is not None:
            for proxy in ("redis", "apiserver"):
                self.toxiproxy.clear(proxy)
        for proc in [*([self.watcher] if self.watcher else []), *self.projectors]:
            proc.signal(signal.SIGCONT)
        self.check_processes()

    # ---- cluster plumbing -----------------------------------------------------------------

    def _api_port(self) -> int:
        config: dict[str, Any] = yaml.safe_load(self.cluster.kubeconfig.read_text())
        server: str = config["clusters"][0]["cluster"]["server"]
        return int(server.rsplit(":", 1)[1])

    def _write_proxied_kubeconfig(self) -> None:
        """The watcher's kubeconfig: the same cluster, reached through toxiproxy
        (the serving certificate is for 127.0.0.1, whatever the port)."""
        config: dict[str, Any] = yaml.safe_load(self.cluster.kubeconfig.read_text())
        config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{self.api_proxy_port}"
        (self.workdir / "kubeconfig-proxied").write_text(yaml.safe_dump(config))
