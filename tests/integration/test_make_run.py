"""`make run` on this machine: the example job reaches Redis; Ctrl-C leaves nothing behind."""

import os
import signal
import subprocess
from pathlib import Path

import redis

from kube2redis.localcluster.processes import free_port
from tests.support.ci import unavailable
from tests.support.kube import Kube
from tests.support.paths import REPO
from tests.support.redis_server import REDIS_SERVER
from tests.support.waits import wait_until


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_make_run_mirrors_the_example_job_and_stops_cleanly(kube: Kube, tmp_path: Path) -> None:
    if not REDIS_SERVER:
        unavailable("redis-server is not installed")
    run_dir = tmp_path / "run"
    redis_port = free_port()
    env = {
        **os.environ,
        "KUBECONFIG": str(kube.kubeconfig),
        "KUBE2REDIS_RUN_DIR": str(run_dir),
        "KUBE2REDIS_REDIS_PORT": str(redis_port),
        "KUBE2REDIS_WATCHER_HEALTH_PORT": str(free_port()),
        "KUBE2REDIS_PROJECTOR_HEALTH_PORT": str(free_port()),
    }
    env.pop("KUBE2REDIS_REDIS_URL", None)
    log = (tmp_path / "make-run.log").open("wb")
    make = subprocess.Popen(
        ["make", "--no-print-directory", "run"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        r = redis.Redis(port=redis_port, socket_timeout=2)

        def mirrored() -> bool:
            try:
                return bool(r.hget("k8s:job:default:simple-job", "rv"))
            except redis.ConnectionError:
                return False

        wait_until(mirrored, 180, "simple-job in Redis", interval_s=0.5)
        ctl = subprocess.run(
            [
                str(REPO / ".venv/bin/supervisorctl"),
                "-c",
                str(REPO / "deploy/supervisord.conf"),
                "pid",
                "all",
            ],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        pids = [int(p) for p in ctl.stdout.split() if p.isdigit() and p != "0"]
        pids.append(int((run_dir / "supervisord.pid").read_text()))
        assert len(pids) == 4, ctl.stdout  # redis, watcher, projector, supervisord
        os.killpg(make.pid, signal.SIGINT)  # Ctrl-C in the terminal
        make.wait(90)
        wait_until(lambda: not any(_alive(p) for p in pids), 30, "every process gone")
        assert "stopped." in (tmp_path / "make-run.log").read_text()
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait(10)
        log.close()
        kube.kubectl(
            "delete",
            "-n",
            "default",
            "job.batch.volcano.sh/simple-job",
            "--ignore-not-found",
            check=False,
        )
