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
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, cast

import redis

from common.events import Entry
from common.keys import Keys
from common.kube import KubeClient, KubeError, load_configuration
from kube2redis.localcluster.cluster import LocalCluster
from kube2redis.localcluster.processes import free_port

ROOT = Path(__file__).resolve().parents[1]
SCRATCH = ROOT / "bench" / "scratch"
RESULTS = ROOT / "bench" / "results"
QUICK_RESULTS = RESULTS / "quick"  # not kept in git
JOBS = "/apis/batch.volcano.sh/v1alpha1/namespaces/{ns}/jobs"
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


class Redis:
    """A throwaway redis-server for one measurement."""

    def __init__(self, name: str) -> None:
        self.port = free_port()
        self.dir = SCRATCH / f"redis-{name}-{self.port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = self.client()
        for _ in range(100):
            try:
                client.ping()
            except redis.ConnectionError:
                time.sleep(0.05)
            else:
                return
        raise RuntimeError("redis-server did not start")

    def client(self) -> "redis.Redis":
        return redis.Redis(port=self.port, socket_timeout=30)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


class Cluster:
    """The local control plane, started once for the whole run."""

    def __init__(self) -> None:
        self.local = LocalCluster(SCRATCH / "cluster", watch_cache=True)
        self.local.up()
        self.kubeconfig = self.local.kubeconfig
        self.client = KubeClient(load_configuration(self.kubeconfig, None))

    def namespace(self, name: str) -> str:
        ns = f"{name}-{int(time.time() * 1000) % 10**8}"
        self.client.call(
            "POST", "/api/v1/namespaces", json.dumps({"metadata": {"name": ns}}).encode()
        )
        return ns

    def delete_namespace(self, ns: str, timeout_s: float = 900.0) -> None:
        """Delete and wait until it is gone: the namespace controller deletes its
        objects one by one, and that work must not overlap the next measurement."""
        with suppress(KubeError):
            self.client.call("DELETE", f"/api/v1/namespaces/{ns}")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                self.client.get(f"/api/v1/namespaces/{ns}")
            except KubeError as exc:
                if exc.status == 404:
                    return
                raise
            time.sleep(0.5)
        raise RuntimeError(f"namespace {ns} still terminating after {timeout_s:.0f} s")

    def down(self) -> None:
        self.local.down(purge=True)


def job(name: str, ns: str) -> bytes:
    return json.dumps(
        {
            "apiVersion": "batch.volcano.sh/v1alpha1",
            "kind": "Job",
            "metadata": {
                "name": name,
                "namespace": ns,
                "labels": {"app": "bench"},
                "annotations": {"bench/payload": PAYLOAD},
            },
            "spec": {
                "schedulerName": "volcano",
                "queue": "default",
                "minAvailable": 1,
                "tasks": [
                    {
                        "name": "worker",
                        "replicas": 1,
                        "template": {
                            "spec": {
                                "restartPolicy": "Never",
                                "containers": [
                                    {
                                        "name": "main",
                                        "image": "busybox",
                                        "command": ["sh", "-c", "echo hi"],
                                        "resources": {"requests": {"cpu": "100m"}},
                                    }
                                ],
                            }
                        },
                    }
                ],
            },
        }
    ).encode()


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
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.deleted >= count:
                return True
            time.sleep(0.02)
        return False

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
                        str(ROOT / "bench" / "peers" / "kopf_peer.py"),
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
        cwd=ROOT / "bench" / "peers" / "informer-go",
        check=True,
    )


@contextmanager
def running(name: str, cluster: Cluster, ns: str, r: Redis, load: Load) -> Iterator[System]:
    """Start a system and wait until a probe object round-trips through it."""
    system = System(name, cluster, ns, r.url)
    client = r.client()
    try:
        load.create("probe")
        deadline = time.monotonic() + 120
        while not client.exists(f"k8s:job:{ns}:probe"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} never mirrored the probe; see {system.log}")
            time.sleep(0.05)
        load.delete("probe")
        while client.exists(f"k8s:job:{ns}:probe") and time.monotonic() < deadline:
            time.sleep(0.05)
        yield system
    finally:
        system.stop()
