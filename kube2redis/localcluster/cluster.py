"""The local control plane: etcd, kube-apiserver and kube-controller-manager as
local processes on loopback, with the real Volcano CRDs installed.

State lives in one directory: certs/, etcd/ (data), logs/, kubeconfig and
state.json (the pids and ports we started, so `down` stops exactly those).
"""

import base64
import json
import logging
import os
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import msgspec

from common.errors import Kube2RedisError
from kube2redis.localcluster import certs
from kube2redis.localcluster.processes import (
    Process,
    alive,
    free_port,
    reap_exited,
    start,
    stop,
)

log = logging.getLogger(__name__)

VOLCANO_MODULE = "volcano.sh/volcano"
VOLCANO_VERSION = "v1.15.1"
VOLCANO_CRD_DIRS = ("config/crd/volcano/bases", "config/crd/jobflow/bases")
KWOK_MODULE = "sigs.k8s.io/kwok"
KWOK_VERSION = "v0.8.0"
# kwok's own stage definitions: nodes come up and stay Ready (lease heartbeats);
# pods are created, run and complete with per-pod delays set by annotations
# (`pod-complete.stage.kwok.x-k8s.io/delay`), or fail when labelled
# `pod-container-running-failed.stage.kwok.x-k8s.io=true`.
KWOK_STAGES = (
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/general/pod-create.yaml",
    "kustomize/stage/pod/general/pod-init-container-running.yaml",
    "kustomize/stage/pod/general/pod-init-container-completed.yaml",
    "kustomize/stage/pod/general/pod-ready.yaml",
    "kustomize/stage/pod/general/pod-complete.yaml",
    "kustomize/stage/pod/general/pod-delete.yaml",
    "kustomize/stage/pod/chaos/pod-container-running-failed.yaml",
)
FAKE_NODES = 4
CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl")
VOLCANO = ("vc-scheduler", "vc-controller-manager", "kwok")
# Stop order: dependents first.
STOP_ORDER = (
    "kwok",
    "vc-controller-manager",
    "vc-scheduler",
    "kube-controller-manager",
    "kube-apiserver",
    "etcd",
)
REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "deploy" / "localcluster" / "build.sh"


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kube2redis"


def default_state_dir() -> Path:
    return default_cache_dir() / "localcluster" / "state"


def default_bin_dir() -> Path:
    override = os.environ.get("KUBE2REDIS_LOCALCLUSTER_BIN")
    return Path(override) if override else default_cache_dir() / "localcluster" / "bin"


class State(msgspec.Struct):
    processes: dict[str, Process]
    apiserver_port: int
    etcd_port: int


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    pid: int
    port: int
    healthy: bool
    detail: str


class LocalClusterError(Kube2RedisError):
    pass


class Kubectl(Protocol):
    """Runs kubectl against one cluster (LocalCluster.kubectl, the tests' Kube.kubectl)."""

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]: ...


def install_volcano_crds(kubectl: Kubectl, volcano_dir: Path, timeout_s: float = 60.0) -> None:
    """Apply every Volcano CRD from volcano_dir and wait until each one is served."""
    files = sorted(f for d in VOLCANO_CRD_DIRS for f in (volcano_dir / d).glob("*.yaml"))
    if not files:
        raise LocalClusterError(f"no CRDs under {volcano_dir}/{{{','.join(VOLCANO_CRD_DIRS)}}}")
    args = ["apply", "--server-side", "--force-conflicts"]
    for f in files:
        args += ["-f", str(f)]
    kubectl(*args)
    # The files are named {group}_{plural}.yaml.
    names = sorted(f.stem.split("_", 1)[1] + "." + f.stem.split("_", 1)[0] for f in files)
    deadline = time.monotonic() + timeout_s
    _wait_established(kubectl, names, deadline)
    # Established is not served: each CRD's storage (and watch cache) still starts
    # and answers 429 "storage is (re)initializing" until it has.
    every_kind = ",".join(names)
    while time.monotonic() < deadline:
        listed = kubectl("get", every_kind, "-A", "--request-timeout=5s", check=False)
        if listed.returncode == 0:
            return
        time.sleep(0.2)
    raise LocalClusterError(f"CRDs not served after {timeout_s:.0f}s: {', '.join(names)}")


def _wait_established(kubectl: Kubectl, names: list[str], deadline: float) -> None:
    # Not `kubectl wait --for=condition=Established`: it fails at once, instead of
    # waiting, on a CRD whose status has no conditions yet ("accessor error: <nil>"),
    # which is what a CRD looks like for a moment right after it is created.
    pending = names
    while time.monotonic() < deadline:
        # Every CRD: a List whatever the count (naming a single one returns it bare).
        result = kubectl("get", "crd", "-o", "json", check=False)
        if result.returncode == 0:
            items = json.loads(result.stdout).get("items", [])
            established = {
                item["metadata"]["name"]
                for item in items
                if any(
                    c.get("type") == "Established" and c.get("status") == "True"
                    for c in (item.get("status") or {}).get("conditions") or []
                )
            }
            pending = [n for n in pending if n not in established]
            if not pending:
                return
        time.sleep(0.2)
    raise LocalClusterError(f"CRDs not established in time: {', '.join(pending)}")


class LocalCluster:
    """Manage one local control plane rooted at state_dir."""

    def __init__(
        self,
        state_dir: Path | None = None,
        bin_dir: Path | None = None,
        watch_cache: bool = True,
        volcano: bool = False,
    ) -> None:
        # volcano=True also runs Volcano's scheduler and controllers, and kwok with
        # simulated nodes, so Volcano Jobs are scheduled, run and complete.
        self.volcano = volcano
        # watch_cache=False sends every watch to etcd: compaction then means 410 at once,
        # where the cache would serve an old resourceVersion from memory for ~75 s.
        self.watch_cache = watch_cache
        self.state_dir = state_dir or default_state_dir()
        self.bin_dir = bin_dir or default_bin_dir()
        self.certs = self.state_dir / "certs"
        self.kubeconfig = self.state_dir / "kubeconfig"
        self._state_file = self.state_dir / "state.json"

    # ---- state ----------------------------------------------------------------------------

    def load_state(self) -> State | None:
        try:
            return msgspec.json.decode(self._state_file.read_bytes(), type=State)
        except (OSError, msgspec.DecodeError):
            return None

    def _save(self, state: State) -> None:
        self._state_file.write_bytes(msgspec.json.format(msgspec.json.encode(state)))

    def running(self) -> bool:
        state = self.load_state()
        return bool(state) and all(alive(p) for p in state.processes.values())  # type: ignore[union-attr]

    # ---- build ----------------------------------------------------------------------------

    def ensure_binaries(self) -> None:
        """Build the binaries if missing (the build is idempotent and cached)."""
        needed = CONTROL_PLANE + (VOLCANO if self.volcano else ())
        if all((self.bin_dir / b).is_file() for b in needed):
            return
        if shutil.which("go") is None:
            raise LocalClusterError(
                f"no control-plane binaries in {self.bin_dir} and no Go toolchain to build them; "
                "install Go >= 1.25, or set KUBE2REDIS_TEST_KUBECONFIG to a cluster's kubeconfig, "
                "or run where Docker is available"
            )
        if not BUILD_SCRIPT.is_file():
            raise LocalClusterError(
                f"no binaries in {self.bin_dir}: run `make localcluster` in a kube2redis checkout"
            )
        env = {**os.environ, "KUBE2REDIS_LOCALCLUSTER_BIN": str(self.bin_dir)}
        result = subprocess.run(["bash", str(BUILD_SCRIPT)], env=env, check=False)
        if result.returncode != 0:
            raise LocalClusterError(f"building the control plane failed: {BUILD_SCRIPT}")

    def volcano_dir(self) -> Path:
        """Volcano's module directory in the Go module cache (downloaded if needed)."""
        return self.module_dir(VOLCANO_MODULE, VOLCANO_VERSION)

    def module_dir(self, module: str, version: str) -> Path:
        """A module's directory in the Go module cache (downloaded if needed)."""
        if shutil.which("go") is None:
            raise LocalClusterError(f"{module} is read from the Go module cache: install Go")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            ["go", "mod", "download", "-json", f"{module}@{version}"],
            capture_output=True,
            text=True,
            check=False,
            cwd=self.state_dir,
            env={**os.environ, "GOFLAGS": "-mod=mod"},
        )
        info = json.loads(result.stdout or "{}")
        if result.returncode != 0 or "Dir" not in info:
            raise LocalClusterError(
                f"go mod download {module}@{version} failed: "
                f"{info.get('Error') or result.stderr.strip()}"
            )
        return Path(info["Dir"])

    # ---- up / down ------------------------------------------------------------------------

    def up(self, timeout_s: float = 120.0) -> bool:
        """Start everything; False (and no change) if it is already running."""
        if self.running():
            return False
        old = self.load_state()
        if old is not None:
            log.warning("state dir %s was left by a run that died; recovering", self.state_dir)
            for proc in old.processes.values():
                stop(proc)
        self.ensure_binaries()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        certs.generate(self.certs)
        etcd_port, apiserver_port = free_port(), free_port()
        state = State(processes={}, apiserver_port=apiserver_port, etcd_port=etcd_port)
        self._write_kubeconfig(apiserver_port)
        try:
            state.processes["etcd"] = self._start_etcd(etcd_port)
            self._save(state)
            self._wait(lambda: self._etcd_healthy(etcd_port), "etcd", state, timeout_s)
            state.processes["kube-apiserver"] = self._start_apiserver(apiserver_port, etcd_port)
            self._save(state)
            self._wait(self._apiserver_ready, "kube-apiserver", state, timeout_s)
            state.processes["kube-controller-manager"] = self._start_controller_manager()
            self._save(state)
            self.install_crds()
            if self.volcano:
                self._start_volcano(state, timeout_s)
        except BaseException:
            for proc in state.processes.values():
                stop(proc)
            raise
        return True

    def down(self, purge: bool = False) -> list[str]:
        """Stop the processes recorded in the state dir; wipe it with purge."""
        state = self.load_state()
        stopped: list[str] = []
        if state is not None:
            for name in STOP_ORDER:
                proc = state.processes.get(name)
                if proc is None:
                    continue
                if alive(proc):
                    stopped.append(f"{name} (pid {proc.pid})")
                stop(proc)
            self._state_file.unlink(missing_ok=True)
        reap_exited()
        if purge and self.state_dir.exists():
            shutil.rmtree(self.state_dir)
        return stopped

    def status(self) -> list[ComponentStatus]:
        state = self.load_state()
        if state is None:
            return []
        rows = []
        for name, proc in state.processes.items():
            running = alive(proc)
            healthy, detail = running, "running" if running else "not running"
            if running and name == "kube-apiserver":
                healthy = self._apiserver_ready()
                detail = "ready" if healthy else "not ready"
            elif running and name == "etcd":
                healthy = self._etcd_healthy(proc.port)
                detail = "healthy" if healthy else "unhealthy"
            rows.append(ComponentStatus(name, proc.pid, proc.port, healthy, detail))
        return rows

    def env(self) -> str:
        return f"export KUBECONFIG={self.kubeconfig}"

    # ---- components -----------------------------------------------------------------------

    def _bin(self, name: str) -> str:
        return str(self.bin_dir / name)

    def _start_etcd(self, port: int) -> Process:
        peer = free_port()
        argv = [
            self._bin("etcd"),
            "--name=local",
            f"--data-dir={self.state_dir / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{port}",
            f"--advertise-client-urls=http://127.0.0.1:{port}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=local=http://127.0.0.1:{peer}",
            # Test data only: fsync would make every write wait on the disk.
            "--unsafe-no-fsync",
            "--log-level=warn",
        ]
        return start("etcd", argv, self.state_dir / "logs" / "etcd.log", port)

    def apiserver_argv(self, port: int, etcd_port: int) -> list[str]:
        c = self.certs
        return [
            self._bin("kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={c}",
            f"--tls-cert-file={c / 'apiserver.crt'}",
            f"--tls-private-key-file={c / 'apiserver.key'}",
            f"--client-ca-file={c / 'ca.crt'}",
            f"--service-account-key-file={c / 'sa.pub'}",
            f"--service-account-signing-key-file={c / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--authorization-mode=Node,RBAC",
            "--allow-privileged=true",
            "--profiling=false",
            f"--watch-cache={'true' if self.watch_cache else 'false'}",
            "--v=1",
        ]

    def _start_apiserver(self, port: int, etcd_port: int) -> Process:
        argv = self.apiserver_argv(port, etcd_port)
        return start("kube-apiserver", argv, self.state_dir / "logs" / "kube-apiserver.log", port)

    def _start_controller_manager(self) -> Process:
        c = self.certs
        controllers = [
            "garbage-collector-controller",
            "namespace-controller",
            "serviceaccount-controller",
            "serviceaccount-token-controller",
            "root-ca-certificate-publisher-controller",
            # Lifts the not-ready taint that admission puts on every new Node
            # (kwok's simulated ones included) once the node reports Ready.
            "node-lifecycle-controller",
        ]
        if self.volcano:
            # With kwok's nodes, Deployments pinned to a node roll out (what
            # manifests/volcano/install.sh waits for is tested that way).
            controllers += ["deployment-controller", "replicaset-controller"]
        argv = [
            self._bin("kube-controller-manager"),
            f"--kubeconfig={self.kubeconfig}",
            f"--controllers={','.join(controllers)}",
            f"--service-account-private-key-file={c / 'sa.key'}",
            f"--root-ca-file={c / 'ca.crt'}",
            "--leader-elect=false",
            "--secure-port=0",
            "--v=1",
        ]
        log_path = self.state_dir / "logs" / "kube-controller-manager.log"
        return start("kube-controller-manager", argv, log_path)

    def _start_volcano(self, state: State, timeout_s: float) -> None:
        """Volcano's scheduler and controllers, kwok and its fake nodes; waits until
        the scheduler has created the default queue."""
        logs = self.state_dir / "logs"
        kube = f"--kubeconfig={self.kubeconfig}"
        self.kubectl("create", "namespace", "volcano-system", check=False)
        loopback = "127.0.0.1"
        state.processes["vc-scheduler"] = start(
            "vc-scheduler",
            [
                self._bin("vc-scheduler"),
                kube,
                "--leader-elect=false",
                "--schedule-period=1s",
                f"--listen-address={loopback}:{free_port()}",
                f"--healthz-address={loopback}:{free_port()}",
                "-v=2",
            ],
            logs / "vc-scheduler.log",
        )
        state.processes["vc-controller-manager"] = start(
            "vc-controller-manager",
            [
                self._bin("vc-controller-manager"),
                kube,
                "--leader-elect=false",
                "--controllers=job-controller,pg-controller,queue-controller,gc-controller",
                f"--listen-address={loopback}:{free_port()}",
                f"--healthz-address={loopback}:{free_port()}",
                "-v=2",
            ],
            logs / "vc-controller-manager.log",
        )
        stages = self._write_kwok_stages()
        state.processes["kwok"] = start(
            "kwok",
            [
                self._bin("kwok"),
                kube,
                f"--config={stages}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                f"--server-address={loopback}:{free_port()}",
                "--node-lease-duration-seconds=40",
            ],
            logs / "kwok.log",
        )
        self._save(state)
        self._create_fake_nodes()
        self._wait(
            lambda: self.kubectl("get", "queue", "default", check=False).returncode == 0,
            "vc-scheduler",
            state,
            timeout_s,
        )

    def _write_kwok_stages(self) -> Path:
        root = self.module_dir(KWOK_MODULE, KWOK_VERSION)
        path = self.state_dir / "kwok-stages.yaml"
        path.write_text("\n---\n".join((root / stage).read_text() for stage in KWOK_STAGES))
        return path

    def _create_fake_nodes(self) -> None:
        """Nodes kwok manages: realistic capacity, no kubelet behind them."""
        nodes = [
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": f"kwok-node-{i}",
                    "annotations": {
                        "kwok.x-k8s.io/node": "fake",
                        "node.alpha.kubernetes.io/ttl": "0",
                    },
                    "labels": {
                        "type": "kwok",
                        "kubernetes.io/hostname": f"kwok-node-{i}",
                        "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64",
                    },
                },
                "status": {
                    "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"},
                    "allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"},
                },
            }
            for i in range(FAKE_NODES)
        ]
        manifest = self.state_dir / "fake-nodes.json"
        manifest.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": nodes}))
        self.kubectl("apply", "-f", str(manifest))

    def restart_apiserver(self, timeout_s: float = 60.0) -> None:
        """Stop kube-apiserver and start it again on the same port (tests use this)."""
        state = self.load_state()
        if state is None:
            raise LocalClusterError("local cluster is not running")
        # A short grace: kube-apiserver otherwise waits out its open watches.
        old = state.processes["kube-apiserver"]
        stop(old, timeout_s=3.0)
        state.processes["kube-apiserver"] = start(old.name, old.argv, Path(old.log), old.port)
        self._save(state)
        self._wait(self._apiserver_ready, "kube-apiserver", state, timeout_s)

    def install_crds(self) -> None:
        """Apply every Volcano CRD from the module cache and wait until served."""
        install_volcano_crds(self.kubectl, self.volcano_dir())

    # ---- clients and probes ---------------------------------------------------------------

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self._bin("kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise LocalClusterError(f"kubectl {' '.join(args[:2])}: {result.stderr.strip()}")
        return result

    def _ssl(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.certs / "ca.crt"))
        ctx.load_cert_chain(str(self.certs / "admin.crt"), str(self.certs / "admin.key"))
        return ctx

    def _apiserver_ready(self) -> bool:
        state = self.load_state()
        if state is None:
            return False
        url = f"https://127.0.0.1:{state.apiserver_port}/readyz"
        try:
            with urllib.request.urlopen(url, context=self._ssl(), timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    @staticmethod
    def _etcd_healthy(port: int) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                return bool(json.loads(resp.read()).get("health") == "true")
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def _etcd_call(self, path: str, body: dict[str, object]) -> dict[str, object]:
        state = self.load_state()
        if state is None:
            raise LocalClusterError("local cluster is not running")
        req = urllib.request.Request(
            f"http://127.0.0.1:{state.etcd_port}{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
            result: dict[str, object] = json.loads(resp.read())
            return result

    def compact_etcd(self) -> int:
        """Compact etcd up to its current revision (through etcd's gRPC gateway);
        watches from any older resourceVersion then get 410 Gone."""
        header = self._etcd_call("/v3/kv/range", {"key": base64.b64encode(b"/").decode()})
        revision = int(header["header"]["revision"])  # type: ignore[index]
        self._etcd_call("/v3/kv/compaction", {"revision": str(revision), "physical": True})
        return revision

    def _wait(self, ready: "object", name: str, state: State, timeout_s: float) -> None:
        assert callable(ready)
        deadline = time.monotonic() + timeout_s
        proc = state.processes[name]
        while time.monotonic() < deadline:
            if ready():
                return
            if not alive(proc):
                tail = Path(proc.log).read_text(errors="replace").splitlines()[-5:]
                raise LocalClusterError(f"{name} exited during start; log tail: {' | '.join(tail)}")
            time.sleep(0.2)
        raise LocalClusterError(f"{name} not ready after {timeout_s:.0f}s; see {proc.log}")

    def _write_kubeconfig(self, port: int) -> None:
        c = self.certs
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "local",
                    "cluster": {
                        "server": f"https://127.0.0.1:{port}",
                        "certificate-authority": str(c / "ca.crt"),
                    },
                }
            ],
            "users": [
                {
                    "name": "admin",
                    "user": {
                        "client-certificate": str(c / "admin.crt"),
                        "client-key": str(c / "admin.key"),
                    },
                }
            ],
            "contexts": [
                {"name": "kube2redis-local", "context": {"cluster": "local", "user": "admin"}}
            ],
            "current-context": "kube2redis-local",
        }
        self.kubeconfig.write_text(json.dumps(config, indent=2))
        self.kubeconfig.chmod(0o600)
