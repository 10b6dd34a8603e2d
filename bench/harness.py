"""What every scenario needs: the cluster, fresh Redis servers, the systems under
test started as processes, a load generator and a change-feed clock."""

import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import redis

from common.events import Entry
from common.keys import Keys
from common.kube import KubeClient, load_configuration
from kube2redis.localcluster.cluster import LocalCluster
from kube2redis.localcluster.processes import free_port
from tests.support.kube import JOBS, Kube, vcjob
from tests.support.paths import REPO
from tests.support.redis_server import RedisServer
from tests.support.waits import wait_until

SCRATCH = REPO / "bench" / "scratch"
RESULTS = REPO / "bench" / "results"
QUICK_RESULTS = RESULTS / "quick"  # not kept in git
PAYLOAD = "x" * 2800  # with the rest of the Job, about 3.5 KB per object


def fresh_scratch() -> None:
    """Empty the scratch directory of the previous run's logs, spools and Redis data.

    The built peer (bin/) and the bench cluster's state (cluster/, which a cluster
    left running by a killed run is recovered from) stay. Each run's logs stay until
    the next run starts, for reading after a failure.
    """
    SCRATCH.mkdir(parents=True, exist_ok=True)
    for entry in SCRATCH.iterdir():
        if entry.name in ("bin", "cluster"):
            continue
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "cpu": next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        ),
        "python": platform.python_version(),
        "redis": subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True, check=False
        ).stdout.split()[2],
        "kubernetes": "v1.35.4 (local control plane)",
    }


def summary(values: list[float]) -> dict[str, Any]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": values,
    }


class Redis(RedisServer):
    """A throwaway redis-server for one measurement: no AOF (the measurements are of
    kube2redis, not of Redis's fsync), removed with its data when stopped."""

    def __init__(self, name: str) -> None:
        port = free_port()
        super().__init__(SCRATCH / f"redis-{name}-{port}", ["--appendonly", "no"], port=port)
        self.start()

    def client(self, **kwargs: Any) -> "redis.Redis":
        return super().client(**{"socket_timeout": 30, **kwargs})

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.directory, ignore_errors=True)


class Cluster:
    """The local control plane, started once for the whole run."""

    def __init__(self) -> None:
        self.local = LocalCluster(SCRATCH / "cluster", watch_cache=True)
        self.local.up()
        self.kubeconfig = self.local.kubeconfig
        self.kube = Kube(self.kubeconfig, str(self.local.bin_dir / "kubectl"), self.local)

    @property
    def client(self) -> KubeClient:
        return self.kube.client

    def namespace(self, name: str) -> str:
        return self.kube.create_namespace(name)

    def delete_namespace(self, ns: str, timeout_s: float = 900.0) -> None:
        """Delete and wait until it is gone: the namespace controller deletes its
        objects one by one, and that work must not overlap the next measurement."""
        self.kube.delete_namespace(ns, wait_s=timeout_s)

    def down(self) -> None:
        self.local.down(purge=True)


def job(name: str, ns: str) -> bytes:
    return json.dumps(vcjob(name, ns, payload=PAYLOAD, app="bench")).encode()


class Load:
    """Parallel API writes; remembers when each (name, rv) was acknowledged."""

    def __init__(self, cluster: Cluster, ns: str, threads: int = 8) -> None:
        self.client = KubeClient(load_configuration(cluster.kubeconfig, None))
        self.ns, self.path = ns, JOBS.format(ns=ns)
        self.pool = ThreadPoolExecutor(threads)
        self.acked: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def _record(self, data: bytes) -> None:
        meta = json.loads(data)["metadata"]
        with self._lock:
            self.acked[(meta["name"], meta["resourceVersion"])] = time.time()

    def create(self, name: str) -> None:
        self._record(self.client.call("POST", self.path, job(name, self.ns)))

    def update(self, name: str, value: str) -> None:
        patch = json.dumps({"metadata": {"labels": {"step": value}}}).encode()
        self._record(
            self.client.call(
                "PATCH", f"{self.path}/{name}", patch, content_type="application/merge-patch+json"
            )
        )

    def delete(self, name: str) -> None:
        self.client.call("DELETE", f"{self.path}/{name}")

    def all(self, fn: Callable[[str], None], names: list[str]) -> None:
        list(self.pool.map(fn, names))


class ChangeClock:
    """Reads the change feed as it grows: when each (key, rv) and each DELETED landed."""

    def __init__(self, r: "redis.Redis", prefix: str) -> None:
        self.r, self.prefix = r, prefix.encode()
        self.seen: dict[tuple[str, str], float] = {}
        # Redis's clock when the change was applied (the change feed entry's id).
        self.applied_ms: dict[tuple[str, str], int] = {}
        self.deleted = 0
        self.last_delete_at = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last = "0-0"
        while not self._stop.is_set():
            reply = self.r.xread({Keys().changes: last}, count=1000, block=200)
            # redis-py leaves the reply's type open; without decode_responses it is this.
            rows = cast(list[tuple[bytes, list[Entry]]], reply)
            now = time.time()
            for _, entries in rows or ():
                for entry_id, f in entries:
                    last = entry_id.decode()
                    key = f[b"key"]
                    if not key.startswith(self.prefix):
                        continue
                    name = key.rsplit(b":", 1)[1].decode()
                    change = (name, f[b"rv"].decode())
                    self.seen[change] = now
                    self.applied_ms[change] = int(last.split("-", 1)[0])
                    if f[b"type"] == b"DELETED":
                        self.deleted += 1
                        self.last_delete_at = now

    def wait_deleted(self, count: int, timeout_s: float) -> bool:
        """Whether count DELETEDs landed within timeout_s."""
        try:
            wait_until(lambda: self.deleted >= count, timeout_s, f"{count} deletes", 0.02)
        except AssertionError:
            return False
        return True

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def rss_mb(pid: int) -> float:
    """Peak resident memory (VmHWM) of a process, MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


class System:
    """One system under test, mirroring namespace ns into redis_url."""

    def __init__(self, name: str, cluster: Cluster, ns: str, redis_url: str) -> None:
        self.name, self.ns = name, ns
        self.log = SCRATCH / f"{name}-{ns}.log"
        self.procs: list[subprocess.Popen[bytes]] = []
        env = {
            **os.environ,
            "KUBECONFIG": str(cluster.kubeconfig),
            "REDIS_URL": redis_url,
            "KUBE2REDIS_REDIS_URL": redis_url,
            "KUBE2REDIS_KUBECONFIG": str(cluster.kubeconfig),
            "KUBE2REDIS_LOG_FORMAT": "text",
            "KUBE2REDIS_HEALTH_HOST": "127.0.0.1",
        }
        out = self.log.open("ab")
        exe = [sys.executable, "-m", "kube2redis"]
        # What each of procs is, in the same order (the profiler names files after it).
        self.roles: list[str] = ["watcher", "projector"] if name == "kube2redis" else [name]
        self.watcher_port = free_port()
        if name == "kube2redis":
            self.procs.append(
                subprocess.Popen(
                    [
                        *exe,
                        "watch",
                        "--namespace",
                        ns,
                        "--resource",
                        "jobs.batch.volcano.sh",
                        "--spool-dir",
                        str(SCRATCH / f"spool-{ns}"),
                        "--health-port",
                        str(self.watcher_port),
                    ],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
            self.procs.append(
                subprocess.Popen(
                    [*exe, "project", "--health-port", str(free_port())],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
        elif name == "informer-go":
            port = redis_url.rsplit(":", 1)[1].split("/", maxsplit=1)[0]
            self.procs.append(
                subprocess.Popen(
                    [
                        str(SCRATCH / "bin" / "informer-go"),
                        "--kubeconfig",
                        str(cluster.kubeconfig),
                        "--redis-addr",
                        f"127.0.0.1:{port}",
                        "--namespace",
                        ns,
                    ],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
        elif name == "kopf":
            self.procs.append(
                subprocess.Popen(
                    [
                        str(Path(sys.executable).parent / "kopf"),
                        "run",
                        "--standalone",
                        "--quiet",
                        "--namespace",
                        ns,
                        str(REPO / "bench" / "peers" / "kopf_peer.py"),
                    ],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
        else:
            raise ValueError(name)

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def cpu_used(system: System) -> Iterator[dict[str, float]]:
    """The dict yielded gets each role's CPU seconds over the block when it ends."""
    used: dict[str, float] = {}
    roles = list(zip(system.roles, system.procs, strict=True))
    before = {role: cpu_seconds(proc.pid) for role, proc in roles}
    try:
        yield used
    finally:
        for role, proc in roles:
            used[role] = cpu_seconds(proc.pid) - before[role]


@contextmanager
def profiling(system: System, directory: Path | None) -> Iterator[None]:
    """py-spy on every process of the system while the block runs (nothing if no
    directory): one collapsed-stack file per role, aggregated by function."""
    if directory is None:
        yield
        return
    directory.mkdir(parents=True, exist_ok=True)
    spies = [
        subprocess.Popen(
            [
                str(Path(sys.executable).parent / "py-spy"),
                "record",
                "--pid",
                str(proc.pid),
                "--format",
                "raw",
                "--function",
                "--nonblocking",
                "--gil",  # only samples that hold the GIL: CPU, not waiting
                "--rate",
                "200",
                "--output",
                str(directory / f"{role}.collapsed"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for role, proc in zip(system.roles, system.procs, strict=True)
    ]
    try:
        yield
    finally:
        for spy in spies:
            spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        for spy in spies:
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait(5)


def build_informer_go() -> None:
    (SCRATCH / "bin").mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["go", "build", "-o", str(SCRATCH / "bin" / "informer-go"), "."],
        cwd=REPO / "bench" / "peers" / "informer-go",
        check=True,
    )


@contextmanager
def running(name: str, cluster: Cluster, ns: str, r: Redis, load: Load) -> Iterator[System]:
    """Start a system and wait until a probe object round-trips through it."""
    system = System(name, cluster, ns, r.url)
    client = r.client()
    try:
        load.create("probe")
        wait_until(
            lambda: client.exists(f"k8s:job:{ns}:probe"),
            120,
            f"{name} to mirror the probe (see {system.log})",
            0.05,
        )
        load.delete("probe")
        wait_until(
            lambda: not client.exists(f"k8s:job:{ns}:probe"), 120, "the probe's delete", 0.05
        )
        yield system
    finally:
        system.stop()
