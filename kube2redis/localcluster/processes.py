"""Start and stop the processes we own, by pid, never by name."""

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import msgspec

# Popen objects of the children this process started: kept so they are reaped
# (and not reported as leaked) when stop() ends them.
_children: dict[int, "subprocess.Popen[bytes]"] = {}


class Process(msgspec.Struct):
    """A process we started: enough to tell it is still ours and to stop it."""

    name: str
    pid: int
    argv: list[str]
    log: str
    port: int = 0


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(name: str, argv: list[str], log_path: Path, port: int = 0) -> Process:
    """Start argv in its own session with output to log_path."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _children[proc.pid] = proc
    return Process(name=name, pid=proc.pid, argv=argv, log=str(log_path), port=port)


def alive(proc: Process) -> bool:
    """True if the pid is running and still runs our binary (pids get reused)."""
    child = _children.get(proc.pid)
    if child is not None:
        # Started by this process: the kernel's answer beats reading /proc, whose
        # cmdline can read empty or stale while a fresh child is still exec'ing.
        return child.poll() is None
    try:
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{proc.pid}/stat").read_text()
    except OSError:
        return False
    # A zombie (state Z) has exited; it only waits for its parent to reap it.
    if stat.rpartition(")")[2].split()[0] == "Z":
        return False
    return bool(cmdline) and cmdline[0].decode(errors="replace") == proc.argv[0]


def stop(proc: Process, timeout_s: float = 15.0) -> None:
    """SIGTERM, then SIGKILL after timeout_s; no-op if it is gone or no longer ours."""
    if not alive(proc):
        _reap(proc.pid)
        return
    os.kill(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive(proc):
            _reap(proc.pid)
            return
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    _reap(proc.pid)


def reap_exited() -> None:
    """Collect children that exited while another process managed them (e.g. a
    `localcluster up` run that replaced them)."""
    for pid, child in list(_children.items()):
        if child.poll() is not None:
            del _children[pid]


def _reap(pid: int) -> None:
    child = _children.pop(pid, None)
    if child is not None:
        child.wait(5)
